"""Headers the gateway writes on mail it passes on: ours, and only ours.

Incoming `X-Mailmoat-*` headers are removed first, so a sender cannot forge a verdict or an
id that the downstream (or a user's filter rule) would trust. Work is done on the raw header
block: the body bytes are never re-encoded, so DKIM signatures over the body stay valid.

The header writing itself lives in `mailmoat.policy.headers`; this module keeps the relay's
helpers (splitting a message, the Received value) and the name the relay calls.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable

from mailmoat.policy.decide import Verdict
from mailmoat.policy.headers import rewrite_for_delivery
from mailmoat.scan.base import ScanResult



def split_message(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, line ending, body): whichever blank line comes first ends the headers."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return raw[:crlf + 2], b"\r\n", raw[crlf + 4:]
    if lf != -1:
        return raw[:lf + 1], b"\n", raw[lf + 2:]
    eol = b"\r\n" if b"\r\n" in raw else b"\n"
    return (raw if raw.endswith(b"\n") or not raw else raw + eol), eol, b""


def add_gateway_headers(raw: bytes, *, mailmoat_id: str, verdict: Verdict | None,
                        result: ScanResult | None, hostname: str, received: str = "",
                        trusted_authserv_ids: Iterable[str] = ()) -> bytes:
    """Return the bytes to deliver (see `mailmoat.policy.headers.rewrite_for_delivery`, which
    does the work: one header writer for every path, so forgery defences exist once)."""
    return rewrite_for_delivery(raw, mailmoat_id=mailmoat_id, verdict=verdict, result=result,
                                hostname=hostname, received=received,
                                trusted_authserv_ids=trusted_authserv_ids)


def received_value(*, helo: str, client_ip: str, hostname: str, mailmoat_id: str,
                   tls: bool, recipient: str | None = None) -> str:
    proto = "ESMTPS" if tls else "ESMTP"
    frm = f"from {helo or 'unknown'} ([{client_ip or 'unknown'}])"
    rcpt = f" for <{recipient}>" if recipient else ""
    return (f"{frm} by {hostname} (mailmoat) with {proto} id {mailmoat_id}{rcpt}; "
            f"{email.utils.formatdate(localtime=False)}")
