"""The delivery index: what of each logged message an indicator can match.

The message log (store/log.py) writes, beside every message row, one `message_observables`
row per fact an indicator may name: the URLs in it, the hosts they point to and every parent
domain down to the organisational domain, attachment SHA-256s, sender and Reply-To
addresses, the client IP, the subject and the Message-ID. Values are normalised here, and
the threat-intelligence side normalises indicator values with the same `normalise`, so a
match is an equality look-up on the (kind, value, received_at) index: 10,000 indicators
against a million messages is 10,000 index probes, not a scan of a million JSON documents.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailmoat.domains import org_domain
from mailmoat.store.models import MessageRow, ObservableRow, RecipientRow

__all__ = [
    "OBSERVABLE_KINDS",
    "Delivery",
    "ObservableKind",
    "deliveries",
    "find_messages",
    "normalise",
    "observables",
]

ObservableKind = Literal["url", "domain", "ip", "email", "sha256", "subject", "message_id"]
OBSERVABLE_KINDS: Final[tuple[ObservableKind, ...]] = (
    "url", "domain", "ip", "email", "sha256", "subject", "message_id")
MAX_VALUE = 1000
# Bound rows per message: a message with thousands of links must not write thousands of rows
# on the log writer's one thread (the message row keeps the first 200 URLs anyway).
MAX_OBSERVABLES = 400
# IN lists are cut to this many values: SQLite's and PostgreSQL's parameter limits are far
# above, but long lists make the planner's job slower than several short queries.
CHUNK = 500

_WS = re.compile(r"\s+")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def _ip(text: str) -> str | None:
    text = text.strip("[]")
    # An IPv4 address ends in a digit and an IPv6 one has a ':'; a host name (ending in its
    # TLD) is neither, and is not worth ip_address's exception: most of observables' cost.
    if not text or (":" not in text and not text[-1].isdigit()):
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _url(value: str) -> str:
    """Scheme and host in lower case, default port and fragment dropped, an empty path as
    "/": the differences that do not change where a link goes. Path and query are kept as
    they are (they are case-sensitive on most servers)."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return value[:MAX_VALUE]
    if not parts.scheme or not parts.hostname:
        return value[:MAX_VALUE]
    scheme = parts.scheme.lower()
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal: brackets back
        host = f"[{host}]"
    # Built from the host alone: credentials in a link (https://bank.com@evil/) are part
    # of a lure's disguise, never of where it goes.
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))[:MAX_VALUE]


def normalise(kind: str, value: str) -> str:
    """The form a value of `kind` is stored and matched in ("" when it is not one)."""
    value = value.strip()
    if kind == "url":
        return _url(value)
    if kind == "domain":
        return value.lower().rstrip(".")[:MAX_VALUE]
    if kind == "ip":
        return _ip(value) or ""
    if kind in ("email", "sha256"):
        return value.lower()[:MAX_VALUE]
    if kind == "subject":
        return _WS.sub(" ", value).casefold()[:MAX_VALUE]
    if kind == "message_id":
        return value.strip("<> \t")[:MAX_VALUE]
    raise ValueError(f"unknown observable kind {kind!r}")


def _domains(host: str) -> Iterator[str]:
    """`host` and each parent down to its organisational domain (a.b.evil.com, b.evil.com,
    evil.com): a domain indicator matches links to any name under it."""
    host = normalise("domain", host)
    if not host or _ip(host):
        return
    floor = org_domain(host) or host
    labels = host.split(".")
    for i in range(len(labels)):
        name = ".".join(labels[i:])
        yield name
        if name == floor or "." not in name:
            return


def observables(data: dict[str, Any]) -> list[tuple[ObservableKind, str]]:
    """The (kind, value) facts of one message, from the message log's data
    (store.log.message_log_data), normalised and without repeats."""
    out: dict[tuple[ObservableKind, str], None] = {}

    def add(kind: ObservableKind, value: str) -> None:
        if value:
            value = normalise(kind, value)
            if value:
                out[(kind, value)] = None

    for url in data.get("urls") or ():
        add("url", url)
        try:
            host = urlsplit(url.strip()).hostname or ""
        except ValueError:
            host = ""
        if _ip(host):
            add("ip", host)
        for name in _domains(host):
            add("domain", name)
    for host in data.get("url_domains") or ():
        for name in _domains(host):
            add("domain", name)
    headers = data.get("headers") or {}
    senders = [data.get("mail_from") or "", data.get("from_header") or ""]
    senders += [a for _, a in getaddresses([str(headers.get("Reply-To") or "")]) if a]
    for address in senders:
        if "@" in address:
            add("email", address)
            for name in _domains(address.rpartition("@")[2]):
                add("domain", name)
    add("ip", data.get("client_ip") or "")
    for att in data.get("attachments") or ():
        add("sha256", str(att.get("sha256") or ""))
    add("subject", data.get("subject") or "")
    add("message_id", data.get("message_id") or "")
    return list(out)[:MAX_OBSERVABLES]


def observable_rows(data: dict[str, Any], received_at: datetime) -> list[dict[str, Any]]:
    """Rows for `message_observables` (what the log writer inserts with the message)."""
    return [{"message_id": data["id"], "kind": k, "value": v, "received_at": received_at}
            for k, v in observables(data)]


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def find_messages(s: Session, kind: str, values: Iterable[str],
                  since: datetime | None = None) -> list[tuple[str, str]]:
    """(message id, matched value) of every logged message with an observable of `kind`
    equal to one of `values` (normalised here), received at or after `since`."""
    wanted = sorted({v for v in (normalise(kind, x) for x in values) if v})
    found: list[tuple[str, str]] = []
    for chunk in _chunks(wanted):
        q = select(ObservableRow.message_id, ObservableRow.value).where(
            ObservableRow.kind == kind, ObservableRow.value.in_(chunk))
        if since is not None:
            q = q.where(ObservableRow.received_at >= since)
        found.extend((m, v) for m, v in s.execute(q))
    return found


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered copy: what a recall has to find in a mailbox."""

    mailmoat_id: str
    message_id: str  # the Message-ID header
    recipient: str
    delivered_at: datetime | None
    subject: str
    mail_from: str


def deliveries(s: Session, mailmoat_ids: Iterable[str]) -> list[Delivery]:
    """Every recipient copy of these messages that was delivered downstream (directly or
    after release from quarantine), in message then recipient order."""
    ids = sorted(set(mailmoat_ids))
    out: list[Delivery] = []
    for chunk in _chunks(ids):
        q = (select(MessageRow.id, MessageRow.message_id, RecipientRow.address,
                    RecipientRow.delivered_at, MessageRow.subject, MessageRow.mail_from)
             .join(RecipientRow, RecipientRow.message_id == MessageRow.id)
             .where(MessageRow.id.in_(chunk), RecipientRow.delivered_at.is_not(None))
             .order_by(MessageRow.id, RecipientRow.id))
        out.extend(Delivery(*row) for row in s.execute(q))
    return out
