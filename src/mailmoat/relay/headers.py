"""Headers the gateway writes on mail it passes on: ours, and only ours.

Incoming `X-Mailmoat-*` headers are removed first, so a sender cannot forge a verdict or an
id that the downstream (or a user's filter rule) would trust. Work is done on the raw header
block: the body bytes are never re-encoded, so DKIM signatures over the body stay valid.

(`mailmoat.policy.headers.rewrite_for_delivery` is the policy family's version of the same
job; the integrator unifies the two. This one stays small on purpose.)
"""

from __future__ import annotations

import email.utils
import re

from mailmoat.policy.decide import Verdict
from mailmoat.scan.base import ScanResult

_OUR_PREFIX = b"x-mailmoat-"
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def split_message(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, line ending, body): whichever blank line comes first ends the headers."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return raw[:crlf + 2], b"\r\n", raw[crlf + 4:]
    if lf != -1:
        return raw[:lf + 1], b"\n", raw[lf + 2:]
    eol = b"\r\n" if b"\r\n" in raw else b"\n"
    return (raw if raw.endswith(b"\n") or not raw else raw + eol), eol, b""


def _header_lines(block: bytes) -> list[bytes]:
    """The header block as whole fields (continuation lines joined to their field)."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _fold(name: str, items: list[str], eol: bytes, sep: str = ",", width: int = 76) -> bytes:
    """`name: a, b, c` folded between items so no line grows past the RFC 5322 limit."""
    lines, line = [], f"{name}:"
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > width and line != f"{name}:":
            lines.append(line)
            line = "\t" + piece
        else:
            line += " " + piece
    lines.append(line)
    return eol.join(x.encode("utf-8", "replace") for x in lines) + eol


def _clean(value: str) -> str:
    """No CR/LF can reach a header value we write (header injection)."""
    return " ".join(value.split())


def add_gateway_headers(raw: bytes, *, mailmoat_id: str, verdict: Verdict | None,
                        result: ScanResult | None, hostname: str, received: str = "") -> bytes:
    """Return the bytes to deliver: incoming X-Mailmoat-* removed, ours prepended, and the
    configured subject prefix added for tagged mail. `received` is a ready Received value."""
    head, eol, body = split_message(raw)
    fields = [f for f in _header_lines(head)
              if not f[:len(_OUR_PREFIX)].lower() == _OUR_PREFIX]
    if verdict is not None and verdict.subject_prefix:
        prefix = _clean(verdict.subject_prefix).encode("utf-8")
        for i, f in enumerate(fields):
            m = _HEADER_NAME.match(f)
            if m and m.group(1).lower() == b"subject":
                value = f[m.end():].lstrip(b" \t")
                if not value.startswith(prefix):
                    fields[i] = b"Subject: " + prefix + b" " + value
                break
        else:
            fields.append(b"Subject: " + prefix + eol)
    new: list[bytes] = []
    if received:
        new.append(_fold("Received", [_clean(received)], eol))
    new.append(f"X-Mailmoat-ID: {mailmoat_id}".encode() + eol)
    if verdict is not None:
        new.append(f"X-Mailmoat-Verdict: action={verdict.action.value}; score={verdict.score:g};"
                   f" category={verdict.category.value}".encode() + eol)
    if result is not None:
        syms = sorted(result.symbols, key=lambda s: (-abs(s.score), s.name))
        if syms:
            new.append(_fold("X-Mailmoat-Symbols", [f"{s.name}({s.score:g})" for s in syms], eol))
        clauses = result.annotations.get("auth_results")
        if clauses:
            new.append(_fold("Authentication-Results",
                             [_clean(hostname)] + [_clean(str(c)) for c in clauses], eol, sep=";"))
    return b"".join(new) + b"".join(fields) + eol + body


def received_value(*, helo: str, client_ip: str, hostname: str, mailmoat_id: str,
                   tls: bool, recipient: str | None = None) -> str:
    proto = "ESMTPS" if tls else "ESMTP"
    frm = f"from {helo or 'unknown'} ([{client_ip or 'unknown'}])"
    rcpt = f" for <{recipient}>" if recipient else ""
    return (f"{frm} by {hostname} (mailmoat) with {proto} id {mailmoat_id}{rcpt}; "
            f"{email.utils.formatdate(localtime=False)}")
