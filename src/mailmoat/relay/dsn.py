"""Delivery status notifications (RFC 3464): the bounce we owe a sender whose mail we took.

A DSN goes to the envelope sender, never to the null sender (that is how bounce loops are
avoided), and is itself sent with the null sender. It carries the human explanation, the
machine-readable `message/delivery-status`, and the original headers (not the body: the
sender has it, and echoing it would make us a reflector).

Nor does a DSN go to a sender the scan found forged (`dsn_refusal`): a bounce to an
address whose domain's SPF failed, or whose mail failed DMARC without an SPF pass for the
envelope domain, reaches an innocent third party (backscatter). Delivery never sees the
scan result, so the intake records that one fact in the spool entry
(`Handover.sender_auth_failed`).
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import TYPE_CHECKING

from mailmoat.relay.headers import split_message

if TYPE_CHECKING:
    from mailmoat.scan.base import ScanResult
    from mailmoat.spool.queue import Handover

# What the message log's symbols say when a spool entry predates `sender_auth_failed`.
_SPF_FAIL_SYMBOLS = frozenset({"SPF_FAIL"})
_DMARC_FAIL_SYMBOLS = frozenset({"DMARC_POLICY_REJECT", "DMARC_POLICY_QUARANTINE",
                                 "DMARC_POLICY_NONE"})

_STATUS = re.compile(r"(?:^|\s)([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CODE = re.compile(r"(?:^|\s)([245])\d\d\b")


def status_code(response: str, default: str = "5.0.0") -> str:
    """The enhanced status code in an SMTP reply, or one derived from its basic code."""
    m = _STATUS.search(response)
    if m:
        return m.group(2)
    m = _CODE.search(response)
    if m:
        return f"{m.group(1)}.0.0"
    return default


def sender_auth_failed(result: ScanResult | None) -> bool:
    """Is the envelope sender likely forged, by a `ScanResult`'s authentication facts?

    SPF fail means the sender's own domain disowns the client. A DMARC fail (or, with
    nothing passing, a DKIM fail) counts unless SPF passed, since the bounce goes to the
    envelope sender: a mailing list's own, SPF-authenticated bounce address still gets it.
    """
    auth = result.facts.auth if result is not None else None
    if auth is None:
        return False
    return auth.spf == "fail" or (auth.failed and auth.spf != "pass")


def dsn_refusal(mail_from: str, handover: Handover) -> str | None:
    """Why no DSN may be sent to `mail_from` for a spooled message, or None."""
    if not mail_from:
        return "null sender"
    if handover.dsn:
        return "itself a DSN"
    failed = handover.sender_auth_failed
    if failed is None:  # spooled before the fact was recorded: the logged symbols say it
        log_data = handover.log
        symbols = log_data.get("symbols", []) if isinstance(log_data, dict) else []
        names = {str(x.get("name")) for x in symbols if isinstance(x, dict)}
        failed = bool(names & _SPF_FAIL_SYMBOLS) or \
            (bool(names & _DMARC_FAIL_SYMBOLS) and "SPF_PASS" not in names)
    if failed:
        return "the sender failed SPF/DMARC, so a bounce would likely be backscatter"
    return None


def build_dsn(*, reporting_mta: str, original_id: str, mail_from: str, received_at: float,
              failures: list[tuple[str, str, str]], original: bytes) -> bytes:
    """failures: (recipient, status code, diagnostic text). Returns the DSN's bytes."""
    boundary = f"mailmoat-dsn-{original_id}"
    date = email.utils.formatdate(localtime=False)
    lines = [f"This is the mail system at host {reporting_mta}.", "",
             "Your message could not be delivered to one or more recipients.",
             "It is attached below (headers only).", ""]
    for rcpt, status, diag in failures:
        lines.append(f"<{rcpt}>: {_one_line(diag)} (status {status})")
    human = "\r\n".join(lines) + "\r\n"
    per_message = (f"Reporting-MTA: dns; {reporting_mta}\r\n"
                   f"X-Mailmoat-Original-ID: {original_id}\r\n"
                   f"Arrival-Date: {email.utils.formatdate(received_at, localtime=False)}\r\n")
    per_rcpt = []
    for rcpt, status, diag in failures:
        per_rcpt.append(f"Final-Recipient: rfc822; {rcpt}\r\n"
                        f"Action: failed\r\n"
                        f"Status: {status}\r\n"
                        f"Diagnostic-Code: smtp; {_one_line(diag)}\r\n"
                        f"Last-Attempt-Date: {date}\r\n")
    head, _eol, _body = split_message(original)
    head = head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    out = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{mail_from}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{original_id}.{int(time.time())}.dsn@{reporting_mta}>\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f"\tboundary=\"{boundary}\"\r\n"
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n"
        f"Content-Description: Notification\r\n\r\n"
        f"{human}\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/delivery-status\r\n"
        f"Content-Description: Delivery report\r\n\r\n"
        f"{per_message}\r\n" + "\r\n".join(per_rcpt) + "\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/rfc822-headers\r\n"
        f"Content-Description: Undelivered Message Headers\r\n\r\n"
    ).encode("utf-8", "replace") + head + f"\r\n--{boundary}--\r\n".encode()
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:900]
