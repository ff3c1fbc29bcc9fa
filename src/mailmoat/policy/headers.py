"""The headers delivered mail carries: our id, the verdict, the symbols, an auth summary.

Runs after `policy.decide()` on mail we deliver (accepted or tagged). It works on the raw
header block as bytes and never re-serialises the message: the body, 8-bit headers and odd
folding a signature may cover all stay byte for byte as received. Only whole header fields
are removed, and ours are prepended at the top, where trace fields belong.

What senders must not be able to forge is stripped first:

- every incoming `X-Mailmoat-*` field, whatever its case or spacing before the colon, so a
  downstream filter or user can trust `X-Mailmoat-ID` and the verdict;
- every incoming `Authentication-Results` field whose authserv-id is not one the
  administrator trusts (`[auth] trusted_authserv_ids`: the upstream that verified the mail
  before us), and always those claiming our own hostname (RFC 8601 section 5: a border MTA
  removes results that claim to be its own). Anyone can write such a field; downstream
  filters and mail programs must not believe one we did not vouch for.

Header parsing follows Python's email parser: the header block ends at the first empty line
or at the first line that is neither a field nor a continuation; everything after is body.
Two deliberate differences, both towards stripping more: blanks before the colon
(`X-Mailmoat-ID : x`, obsolete RFC 822 syntax some readers still accept) make a field, and
a misplaced `From ` line inside the headers does not end them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailmoat.message.parse import decode_header_value
from mailmoat.policy.decide import Verdict
from mailmoat.policy.types import Action, Category

if TYPE_CHECKING:  # what the checks produce; headers only read it
    from mailmoat.scan.base import ScanResult, Symbol

__all__ = [
    "authserv_id",
    "kept_authserv_ids",
    "rewrite_for_delivery",
    "split_header_block",
    "symbols_header_value",
]

OUR_PREFIX = b"x-mailmoat-"
FOLD_WIDTH = 78

# A field name is printable US-ASCII except ":"; some senders put blanks before the colon.
_FIELD_RE = re.compile(rb"^([\x21-\x39\x3b-\x7e]*)[ \t]*:")
# Python's parser ends a line at CRLF, LF or a bare CR; so do we, or a field hidden behind a
# bare CR would escape stripping yet be read as a header downstream.
_EOL_RE = re.compile(rb"\r\n|\r|\n")
_SAFE_ID_RE = re.compile(r"^[A-Za-z0-9._@+=-]{1,128}$")


@dataclass
class _Field:
    name: bytes  # as written, without the colon; b"" for a stray leading continuation
    lines: list[bytes]  # the raw physical lines, each with its line ending

    @property
    def lname(self) -> bytes:
        return self.name.strip().lower()

    @property
    def value(self) -> bytes:
        """Unfolded raw value (after the colon), without line endings."""
        raw = b"".join(self.lines)
        raw = raw.split(b":", 1)[1] if b":" in raw else raw
        return re.sub(rb"(?:\r\n|\r|\n)(?=[ \t])", b"", raw).rstrip(b"\r\n")


def split_header_block(raw: bytes) -> tuple[bytes, list[_Field], bytes]:
    """Split a message into (mbox "From " line, header fields, rest).

    `rest` starts with the empty separator line when there is one, so joining the three
    parts back gives the input unchanged.
    """
    prefix = b""
    pos = 0
    n = len(raw)
    if raw.startswith(b"From "):  # an mbox envelope line is not a header: keep it first
        m_eol = _EOL_RE.search(raw)
        pos = n if m_eol is None else m_eol.end()
        prefix = raw[:pos]
    fields: list[_Field] = []
    while pos < n:
        m_eol = _EOL_RE.search(raw, pos)
        line_end = n if m_eol is None else m_eol.end()
        line = raw[pos:line_end]
        if line in (b"\n", b"\r\n", b"\r"):
            break  # the separator: it belongs to the rest
        if line.startswith(b"From ") and fields:
            # A misplaced mbox line among the headers: Python's parser skips it and goes on
            # reading headers, and so must we, or a forged field below it would survive.
            fields.append(_Field(b"", [line]))
        elif line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1].lines.append(line)
            else:
                fields.append(_Field(b"", [line]))
        else:
            m = _FIELD_RE.match(line)
            if m is None:
                break  # not a header: the body starts here (no separator)
            fields.append(_Field(m.group(1), [line]))
        pos = line_end
    return prefix, fields, raw[pos:]


def _eol_of(fields: list[_Field], prefix: bytes, rest: bytes) -> bytes:
    """The message's own line ending (CRLF when it has none yet)."""
    if fields:
        sample = fields[0].lines[0]
    elif prefix:
        sample = prefix
    else:
        end = rest.find(b"\n")
        sample = rest[: end + 1] if end >= 0 else b""
    return b"\n" if sample.endswith(b"\n") and not sample.endswith(b"\r\n") else b"\r\n"


def authserv_id(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value (comments ignored), lower-cased.

    Deliberately lenient (the first word before ";"), so that a field too broken to parse
    is still attributed: the delivery rewrite and `mailmoat.scan.authres` both identify
    fields with it, so what the scan believes is exactly what delivery keeps."""
    text = value.decode("ascii", "replace")
    while True:  # drop (comments), innermost first
        stripped = re.sub(r"\([^()]*\)", " ", text)
        if stripped == text:
            break
        text = stripped
    first = text.split(";", 1)[0].strip()
    return first.split()[0].strip('"').lower().rstrip(".") if first.split() else ""


def kept_authserv_ids(trusted: Iterable[str], hostname: str) -> frozenset[str]:
    """The authserv-ids whose incoming Authentication-Results survive delivery, and that
    `mailmoat.scan.authres` believes: the trusted ones, less our own hostname, which only
    the results we write ourselves may claim. An empty id matches no field."""
    own = hostname.strip().lower().rstrip(".")
    return frozenset(i.strip().lower().rstrip(".") for i in trusted) - {own, ""}


def _ascii_clean(text: str) -> str:
    """A header value safe to emit: one line, printable ASCII."""
    text = text.replace("\r", " ").replace("\n", " ").replace("\x00", "")
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).strip()


def _num(x: float) -> str:
    return format(round(x, 3), "g")


def _fold(name: str, items: Iterable[str], sep: str, eol: bytes) -> bytes:
    """`name: a<sep>b…`, folded before an item when a line would pass FOLD_WIDTH."""
    out = f"{name}:"
    line_len = len(out)
    items = list(items)
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if line_len + 1 + len(piece) > FOLD_WIDTH and line_len > len(name) + 1:
            out += eol.decode() + "\t" + piece
            line_len = 1 + len(piece)
        else:
            out += " " + piece
            line_len += 1 + len(piece)
    return out.encode("ascii") + eol


def symbols_header_value(symbols: Iterable[Symbol]) -> list[str]:
    """`NAME(score)` items, strongest first; the order is stable for equal scores."""
    ordered = sorted(symbols, key=lambda s: (-abs(s.score), s.name))
    return [f"{_ascii_clean(s.name)}({_num(s.score)})" for s in ordered]


def _encode_prefix(prefix: str) -> bytes:
    if prefix.isascii():
        return prefix.encode("ascii")
    from email.header import Header

    return Header(prefix, "utf-8").encode().encode("ascii")


def _subject_field(fields: list[_Field], prefix: str, eol: bytes) -> None:
    """Prefix the first Subject, unless it already starts with the prefix."""
    for f in fields:
        if f.lname != b"subject":
            continue
        current = decode_header_value(f.value.decode("ascii", "surrogateescape")).strip()
        if current.startswith(prefix.strip()):
            return
        first = f.lines[0]
        m = re.match(rb"^[^:]*:[ \t]*", first)
        assert m is not None  # every named field has a colon
        head, tail = first[: m.end()], first[m.end() :]
        if not head.endswith((b" ", b"\t")):
            head += b" "
        gap = b" " if tail.strip(b"\r\n") else b""
        f.lines[0] = head + _encode_prefix(prefix.strip()) + gap + tail
        return
    fields.append(_Field(b"Subject", [b"Subject: " + _encode_prefix(prefix) + eol]))


def _bulk_header(verdict: Verdict, result: ScanResult | None) -> str:
    """`X-Mailmoat-Bulk: level=8; kind=newsletter; bulk=yes` — what a client or Sieve rule
    files by. `bulk=yes` when the level reached the recipient's bulk threshold (the verdict
    category is then bulk too); the kind is the bulk family's reading."""
    bulk = result.facts.bulk if result is not None else None
    kind = re.sub(r"[^a-z]", "", bulk.kind) if bulk is not None else ""
    value = f"X-Mailmoat-Bulk: level={verdict.bulk_level}"
    if kind:
        value += f"; kind={kind}"
    return value + f"; bulk={'yes' if verdict.category is Category.BULK else 'no'}"


def rewrite_for_delivery(
    raw: bytes,
    *,
    mailmoat_id: str,
    verdict: Verdict | None,
    result: ScanResult | None,
    hostname: str,
    received: str = "",
    trusted_authserv_ids: Iterable[str] = (),
) -> bytes:
    """The message as it is delivered: forgeable headers removed, ours added, body untouched.

    `received` is a ready Received value; it goes first, above our other headers, as trace
    fields do. `verdict` and `result` may be None (mail passed on without a scan, such as a
    bounce we generate): then only the id, and the trace field, are written. Incoming
    Authentication-Results fields are kept only for `trusted_authserv_ids` (never for our
    own hostname).
    """
    if not _SAFE_ID_RE.match(mailmoat_id):
        raise ValueError(f"not a valid mailmoat id: {mailmoat_id!r}")
    host = _ascii_clean(hostname).lower().rstrip(".")
    if not host or " " in host or ";" in host:
        raise ValueError(f"not a valid hostname: {hostname!r}")
    trusted = kept_authserv_ids(trusted_authserv_ids, host)
    prefix, fields, rest = split_header_block(raw)
    eol = _eol_of(fields, prefix, rest)
    if fields and not fields[-1].lines[-1].endswith((b"\n", b"\r")):
        fields[-1].lines[-1] += eol  # header block without any line ending: close it

    # A continuation line before the first field belongs to no header (Python's parser drops
    # it as a defect). Kept, it would fold into our last header when we prepend ours: a way
    # to append forged text to X-Mailmoat-Symbols. So it goes.
    kept = [
        f
        for f in fields
        if not (f.name == b"" and f.lines[0][:1] in (b" ", b"\t"))
        and not f.lname.startswith(OUR_PREFIX)
        and not (f.lname == b"authentication-results" and authserv_id(f.value) not in trusted)
    ]

    for f in kept:
        # A header line ending in a bare CR could merge with the LF of whatever follows once
        # a field between them is gone; give it the message's own line ending.
        f.lines = [ln[:-1] + eol if ln.endswith(b"\r") else ln for ln in f.lines]

    if verdict is not None and verdict.action is Action.TAG and verdict.subject_prefix.strip():
        _subject_field(kept, verdict.subject_prefix, eol)

    ours: list[bytes] = []
    if received.strip():
        ours.append(_fold("Received", _ascii_clean(received).split(), "", eol))
    facts = result.facts.auth if result is not None else None
    auth = facts.clauses if facts is not None else None
    if auth is not None:
        clauses = [c for c in (_ascii_clean(str(c)).rstrip(";") for c in auth) if c] or ["none"]
        ours.append(
            _fold(
                "Authentication-Results",
                [host + ";", *[c + ";" for c in clauses[:-1]], clauses[-1]],
                "",
                eol,
            )
        )
    ours.append(f"X-Mailmoat-ID: {mailmoat_id}".encode("ascii") + eol)
    if verdict is not None:
        ours.append(
            f"X-Mailmoat-Verdict: action={verdict.action.value}; score={_num(verdict.score)}; "
            f"category={verdict.category.value}".encode("ascii")
            + eol
        )
        if verdict.bulk_level is not None:
            ours.append(_bulk_header(verdict, result).encode("ascii") + eol)
    symbols = symbols_header_value(result.symbols) if result is not None else []
    if symbols:
        ours.append(_fold("X-Mailmoat-Symbols", symbols, ",", eol))

    if not fields and not rest.startswith((b"\n", b"\r")):
        # No header block at all: the separator must come before the body we keep.
        rest = eol + rest
    return prefix + b"".join(ours) + b"".join(b"".join(f.lines) for f in kept) + rest
