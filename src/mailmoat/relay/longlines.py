"""Keep relayed mail within RFC 5322's line limit (998 bytes plus CRLF, section 2.1.1).

Senders do write longer lines (HTML on one line, unwrapped base64, generated JSON), and we
accept them (`[smtp] max_line_length`), but strict next hops bounce them. Before a message
is relayed, `fit_line_length` rewrites only what is over the limit:

- a MIME leaf part (text, attachment) with an over-long body line is re-encoded: text as
  quoted-printable, other content (and text that is mostly 8-bit) as base64. The decoded
  content is the same; its Content-Transfer-Encoding field says the new encoding, and a
  message (top level or attached) that had none gets `MIME-Version: 1.0`;
- multipart bodies are walked part by part (and message/rfc822 parts message by message), so
  the parts within the limit, the boundaries and the other headers stay byte for byte;
- an over-long header line is folded at whitespace (the unfolded value is unchanged); a run
  of more than 998 bytes without whitespace is broken by a fold anyway, which adds one space
  where the value is unfolded (harmless in base64 and tag lists such as DKIM-Signature, a
  visible change elsewhere; such a field was never going to arrive intact);
- what no reader shows (multipart preamble and epilogue) and structure that cannot be
  re-encoded (a multipart without a usable boundary, nesting deeper than MAX_DEPTH) have their
  long lines broken into several.

A message whose lines are all within the limit comes back as the same object, untouched, so
DKIM signatures and every byte of ordinary mail are kept. A re-encoded part breaks a sender's
DKIM body hash; that mail would have bounced otherwise. Our own DKIM signature is made after
this (relay/deliver.py), over the bytes we send.
"""

from __future__ import annotations

import re
from email import policy
from email.base64mime import body_encode as base64_body
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.quoprimime import body_encode as qp_body
from typing import Any

from mailmoat.policy.headers import split_header_block

__all__ = ["MAX_DEPTH", "RFC5322_LIMIT", "fit_line_length", "has_long_line"]

RFC5322_LIMIT = 998
MAX_DEPTH = 50  # MIME nesting we walk; deeper structure gets its long lines broken
ENCODED_WIDTH = 76  # RFC 2045 line length of quoted-printable and base64
_NON_TEXT_SHARE = 0.25  # text with more 8-bit/control bytes than this goes base64 (smaller)
_EOL_RE = re.compile(rb"\r\n|\n")
# Bytes that make text expensive in quoted-printable: 8-bit and controls other than TAB, LF, CR.
_SPECIAL = bytes(range(0x80, 0x100)) + bytes(b for b in range(0x20) if b not in (9, 10, 13))


def fit_line_length(raw: bytes, limit: int = RFC5322_LIMIT) -> bytes:
    """`raw` with no line longer than `limit` bytes (line ending not counted), re-encoding
    only the MIME leaf parts and header fields that need it; `raw` itself when none does."""
    if not has_long_line(raw, limit):
        return raw
    out = _fit_entity(raw, limit, 0, is_message=True)
    # Whatever the walk could not place (it should be nothing) is broken, never sent raw.
    return _break_lines(out, limit) if has_long_line(out, limit) else out


def has_long_line(data: bytes, limit: int = RFC5322_LIMIT) -> bool:
    """Whether a line of `data` is longer than `limit` bytes, not counting CRLF or LF."""
    lines = data.split(b"\n")
    if max(map(len, lines)) <= limit:  # the common case, at C speed
        return False
    return any(len(ln) - ln.endswith(b"\r") > limit for ln in lines)


def _eol_of(data: bytes) -> bytes:
    m = _EOL_RE.search(data)
    return m.group() if m is not None else b"\r\n"


def _split_eol(line: bytes) -> tuple[bytes, bytes]:
    """(content, line ending) of one physical line."""
    if line.endswith(b"\r\n"):
        return line[:-2], b"\r\n"
    if line.endswith((b"\n", b"\r")):
        return line[:-1], line[-1:]
    return line, b""


def _break_lines(data: bytes, limit: int) -> bytes:
    """Break every line over `limit` into pieces of `limit` bytes (last resort: for text no
    reader shows, or structure we cannot re-encode)."""
    eol = _eol_of(data)
    out = []
    for line in data.splitlines(keepends=True):
        content, end = _split_eol(line)
        pieces = [content[i:i + limit] for i in range(0, len(content), limit)] or [b""]
        out.append(eol.join(pieces) + end)
    return b"".join(out)


def _fold_field(lines: list[bytes], limit: int, eol: bytes) -> list[bytes]:
    """One header field's physical lines, refolded so none passes `limit`: unfolded, then
    folded before the last blank that fits (so the unfolded value stays the same), or, in a
    word longer than the limit, at the limit (which adds a blank to the unfolded value)."""
    logical = b"".join(_split_eol(ln)[0] for ln in lines)  # unfolding keeps the blanks
    end = _split_eol(lines[-1])[1]
    out = []
    while len(logical) > limit:
        cut = max(logical.rfind(b" ", 1, limit + 1), logical.rfind(b"\t", 1, limit + 1))
        if cut < 1:
            out.append(logical[:limit])
            logical = b" " + logical[limit:]
        else:
            out.append(logical[:cut])
            logical = logical[cut:]
    out.append(logical)
    return [ln + eol for ln in out[:-1]] + [out[-1] + end]


def _fit_entity(entity: bytes, limit: int, depth: int, is_message: bool) -> bytes:
    """One message (top level or message/rfc822) or MIME part (headers, separator, body)
    with its long lines fixed."""
    prefix, fields, rest = split_header_block(entity)
    eol = _eol_of(entity)
    blocks = []
    for f in fields:
        if any(len(_split_eol(ln)[0]) > limit for ln in f.lines):
            f.lines = _fold_field(f.lines, limit, eol)
        blocks.append(b"".join(f.lines))
    if prefix and has_long_line(prefix, limit):  # an mbox "From " line: not a header
        prefix = _break_lines(prefix, limit)
    sep = rest[:2] if rest.startswith(b"\r\n") else rest[:1] if rest.startswith((b"\n", b"\r")) else b""
    body = rest[len(sep):]
    if not has_long_line(body, limit):
        return prefix + b"".join(blocks) + sep + body
    head = BytesHeaderParser(policy=policy.compat32).parsebytes(b"".join(blocks) + eol)
    if depth >= MAX_DEPTH:
        return prefix + b"".join(blocks) + sep + _break_lines(body, limit)
    if head.get_content_maintype() == "multipart":
        boundary = head.get_boundary()
        fitted = _fit_multipart(body, boundary, limit, depth) if boundary else _break_lines(body, limit)
        return prefix + b"".join(blocks) + sep + fitted
    if head.get_content_type() in ("message/rfc822", "message/global"):
        return prefix + b"".join(blocks) + sep + _fit_entity(body, limit, depth + 1, True)
    return prefix + _reencode_leaf(fields, body, eol, is_message)


def _fit_multipart(body: bytes, boundary: str, limit: int, depth: int) -> bytes:
    """A multipart body with each part fitted; delimiter lines and the line ending before
    each (which belongs to the delimiter, RFC 2046 section 5.1.1) are kept as they are."""
    delim = re.compile(rb"^--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*\r?$",
                       re.MULTILINE)
    marks = list(delim.finditer(body))
    if not marks:
        return _break_lines(body, limit)
    out = [_break_lines(body[:marks[0].start()], limit)]  # the preamble: nobody reads it
    for i, m in enumerate(marks):
        line_end = body.find(b"\n", m.end())
        line_end = len(body) if line_end == -1 else line_end + 1
        out.append(body[m.start():line_end])
        if m.group(1):  # the close delimiter: the rest is epilogue
            out.append(_break_lines(body[line_end:], limit))
            break
        stop = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        part = body[line_end:stop]
        tail = b""
        if i + 1 < len(marks):  # the CRLF before the next delimiter is the delimiter's
            tail = b"\r\n" if part.endswith(b"\r\n") else b"\n" if part.endswith(b"\n") else b""
            part = part[:len(part) - len(tail)]
        out.append(_fit_entity(part, limit, depth + 1, False) + tail)
    return b"".join(out)


def _reencode_leaf(fields: list[Any], body: bytes, eol: bytes, is_message: bool) -> bytes:
    """Headers and body of a leaf part, its content re-encoded (quoted-printable or base64)."""
    head_bytes = b"".join(b"".join(f.lines) for f in fields)
    part: Message = BytesParser(policy=policy.compat32).parsebytes(head_bytes + eol + body)
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = body
    cte, text = _encode(data, part.get_content_maintype() == "text", eol)
    if body.endswith((b"\n", b"\r")) != text.endswith(eol):  # keep how the part ended
        text = text + eol if body.endswith((b"\n", b"\r")) else text[:-len(eol)]
    kept = [b"".join(f.lines) for f in fields if f.lname != b"content-transfer-encoding"]
    if kept and not kept[-1].endswith((b"\n", b"\r")):
        kept[-1] += eol
    if is_message and not any(f.lname == b"mime-version" for f in fields):
        # A Content-Transfer-Encoding means nothing without MIME-Version on the message.
        kept.append(b"MIME-Version: 1.0" + eol)
    kept.append(b"Content-Transfer-Encoding: " + cte + eol)
    return b"".join(kept) + eol + text


def _encode(data: bytes, is_text: bool, eol: bytes) -> tuple[bytes, bytes]:
    """(encoding name, encoded body): quoted-printable keeps mostly-ASCII text readable;
    base64 is smaller for everything else."""
    special = len(data) - len(data.translate(None, _SPECIAL))
    if is_text and special <= len(data) * _NON_TEXT_SHARE:
        enc = qp_body(data.decode("latin-1"), ENCODED_WIDTH, eol.decode()).encode("ascii")
        # A soft-broken line might start with "--boundary" of an enclosing multipart; a
        # leading "-" written as =2D decodes the same and cannot end the part early.
        enc = re.sub(rb"(?m)^--", b"=2D-", enc)
        return b"quoted-printable", enc
    if is_text:
        # Text in base64 must be in canonical form: CRLF line endings (RFC 2045 6.8).
        data = re.sub(rb"\r?\n", b"\r\n", data)
    return b"base64", base64_body(data, ENCODED_WIDTH, eol.decode()).encode("ascii")
