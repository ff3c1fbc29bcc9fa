"""Who sent it: the account behind an internal or outbound message, and from where.

The account is, in order of trust:

1. `smtp_auth` — the SMTP AUTH login of the session with mailmoat itself;
2. `header` — the authenticated sender a trusted upstream mail server wrote into the
   message (`[internal] identity_header`), believed only when the client is in
   `[smtp] trusted_networks`; the intake removes the field from every other client's mail
   (`strip_header`), so a forged one never reaches a check or a mailbox;
3. `envelope` — the MAIL FROM, when it is in one of our domains: unauthenticated, but the
   client is one of ours (a trusted network).

Mail from anyone else, or with none of these (a bounce, a foreign MAIL FROM relayed by a
trusted server with no header), has no account and is not judged as an account's.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from mailmoat.message.model import Envelope, domain_of

log = logging.getLogger(__name__)

Source = Literal["smtp_auth", "header", "envelope"]
RECEIVED = "received"
MAX_ACCOUNT = 254

_ADDR = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9]")
_LOGIN = re.compile(r"[A-Za-z0-9._%+=~!$&'*/?^`{|}-]{1,128}")
# Postfix, smtpd_sasl_authenticated_header = yes: "... (Authenticated sender: alice) by ..."
_POSTFIX_AUTH = re.compile(r"\(Authenticated sender:\s*([^\s()]+)\s*\)", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_VERSIONISH = re.compile(r"^[vV]?[\d._-]+[a-z]?$")
# The "from" clause of a Received field: "from HELO (rdns [192.0.2.7])" (Postfix, Exim,
# Sendmail) or "from HOST (192.0.2.7)" (Exchange): the address its writer was talking to.
_RECEIVED_FROM = re.compile(r"^\s*from\s+\S+\s+\(([^()]*)\)", re.I)
_BRACKETED = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]|^\s*([0-9A-Fa-f:.]+)\s*$")


@dataclass(frozen=True)
class SenderIdentity:
    account: str  # lower-cased address (or login name, as the upstream wrote it)
    source: Source
    client_ip: str = ""
    network: str = ""  # the client's /24 (IPv4) or /48 (IPv6)
    helo: str = ""
    agent: str = ""  # the mail program, versions dropped: "microsoft outlook"

    @property
    def authenticated(self) -> bool:
        return self.source != "envelope"


class IdentityProblem(ValueError):
    """An identity header that is there but says nothing usable."""


def parse_identity_value(value: str) -> str:
    """The account an identity header names: its address, or a bare login name
    (`alice`); raises IdentityProblem for anything else."""
    text = value.strip()
    if not text:
        raise IdentityProblem("empty")
    if len(text) > 998 or _CONTROL.search(text):
        raise IdentityProblem("too long or has control characters")
    m = _ADDR.search(text)
    if m is not None:
        account = m.group().lower()
    elif _LOGIN.fullmatch(text.strip("<>")):
        account = text.strip("<>").lower()
    else:
        raise IdentityProblem("no address or login name in it")
    if len(account) > MAX_ACCOUNT:
        raise IdentityProblem("address longer than 254 characters")
    return account


def auth_account(login: str) -> str:
    """The account of an SMTP AUTH login: its address, else the login as written."""
    try:
        return parse_identity_value(login)
    except IdentityProblem:  # a login we accepted is a login: keep it as written
        return login.strip().lower()[:MAX_ACCOUNT]


def identity_from_received(value: str) -> str:
    """The SASL login Postfix writes into its Received field, or IdentityProblem."""
    m = _POSTFIX_AUTH.search(value)
    if m is None:
        raise IdentityProblem("no (Authenticated sender: …) in the topmost Received field")
    return parse_identity_value(m.group(1))


def client_network(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def agent_family(value: str | None) -> str:
    """`Microsoft Outlook 16.0.17328.20124` → `microsoft outlook`: a program, not a build,
    so an update is not a new agent."""
    if not value:
        return ""
    text = _PARENS.sub(" ", value[:300])
    words = []
    for token in text.split():
        name = token.split("/", 1)[0].strip(",;").lower()
        if name and not _VERSIONISH.match(name):
            words.append(name)
    return " ".join(words[:3])[:80]


def resolve_identity(envelope: Envelope, header: Callable[[str], str | None], *,
                     identity_header: str, trusted: bool,
                     internal_domains: frozenset[str] | set[str]) -> SenderIdentity | None:
    """The sending account of a message, or None when it has none (see the module doc).
    `header(name)` gives the first field of that name (decoded), or None. A malformed
    identity header is logged and the next source is used."""
    account, source = "", ""
    if envelope.auth_user:
        account, source = auth_account(envelope.auth_user), "smtp_auth"
    if not source and identity_header and trusted:
        value = header(identity_header)
        if value is not None:
            try:
                if identity_header.lower() == RECEIVED:
                    account = identity_from_received(value)
                else:
                    account = parse_identity_value(value)
                source = "header"
            except IdentityProblem as exc:
                log.warning("identity header %s from %s ignored (%s): %r; using the envelope "
                            "sender", identity_header, envelope.client_ip or "-", exc,
                            value[:120])
    if not source:
        sender = envelope.mail_from.strip().strip("<>").lower()
        if not trusted or not sender or domain_of(sender) not in internal_domains:
            return None
        account, source = sender[:MAX_ACCOUNT], "envelope"
    ip = envelope.client_ip or ""
    if source == "header":
        # Mail relayed by our own mail server comes from its address; the device the person
        # sent from is in the Received field that server added on top (believed, like the
        # identity header, only because the server is trusted).
        ip = received_client_ip(header(RECEIVED)) or ip
    agent = agent_family(header("User-Agent") or header("X-Mailer"))
    return SenderIdentity(account=account, source=cast(Source, source), client_ip=ip,
                          network=client_network(ip), helo=(envelope.helo or "")[:255],
                          agent=agent)


def received_client_ip(value: str | None) -> str:
    """The client address in the "from" clause of a Received field, or ""."""
    if not value:
        return ""
    m = _RECEIVED_FROM.match(value[:1000])
    if m is None:
        return ""
    for part in m.group(1).split():
        got = _BRACKETED.search(part)
        if got is None:
            continue
        text = got.group(1) or got.group(2)
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return ""


# -- the raw header block, before the message is parsed ------------------------------------

def _header_end(raw: bytes) -> int:
    """Offset just past the header block's last line (its line end included), where the
    blank line before the body starts; len(raw) when there is no body."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + k for i, k in ((raw.find(b"\r\n\r\n"), 2), (raw.find(b"\n\n"), 1)) if i >= 0]
    return min(ends) if ends else len(raw)


def _fields(block: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, name) of each field of a header block, continuation lines included."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    n = len(block)
    while pos < n:
        nl = block.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        line = block[pos:end]
        if line[:1] in (b" ", b"\t") and out:
            s, _, name = out[-1]
            out[-1] = (s, end, name)
        else:
            name = line.split(b":", 1)[0].strip().lower() if b":" in line else b""
            out.append((pos, end, name))
        pos = end
    return out


def header_value(raw: bytes, name: str) -> str | None:
    """The first field `name` of the raw message, unfolded, or None; for the intake, which
    needs the identity before the message is parsed."""
    end = _header_end(raw)
    block = raw[:end]
    want = name.lower().encode("ascii")
    for start, stop, fname in _fields(block):
        if fname == want:
            value = block[start:stop].split(b":", 1)[1]
            return " ".join(value.decode("utf-8", "replace").split())
    return None


def strip_header(raw: bytes, name: str) -> tuple[bytes, int]:
    """`raw` without any field `name` (continuation lines included), and how many there
    were. The body is left byte for byte."""
    end = _header_end(raw)
    block = raw[:end]
    want = name.lower().encode("ascii")
    fields = _fields(block)
    drop = [(s, e) for s, e, fname in fields if fname == want]
    if not drop:
        return raw, 0
    kept = bytearray()
    pos = 0
    for s, e in drop:
        kept += block[pos:s]
        pos = e
    kept += block[pos:]
    return bytes(kept) + raw[end:], len(drop)
