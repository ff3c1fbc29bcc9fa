"""Legitimate bulk and automated mail: newsletters, notifications, bounces, invitations.

Bulk is a category of its own, not spam. This family recognises it from what holds in
deployment (the headers bulk senders must write, the structure of reports, the traces of the
email service provider's platform) and records it as `ScanResult.facts.bulk` plus symbols of
weight 0 that explain it. The evidence gate and policy act on the facts; the only symbol that
counts is `BULK_BACKSCATTER`.

The facts only say "bulk-shaped": phishers send through the same platforms and copy the same
headers, which is why nothing here lowers a score. Nothing is verified over the network: a
DKIM-Signature is a claim ("DKIM-Signature claims d=mcsv.net") unless the auth family of
stage 0 verified it (`facts.auth.dkim_pass`: "signed by mcsv.net (verified)"); a signature
auth saw fail is no evidence at all.

Signs, and how much each proves:

* decisive on its own: RFC 8058 one-click unsubscribe (`List-Unsubscribe-Post:
  List-Unsubscribe=One-Click` with an https `List-Unsubscribe`: Gmail and Yahoo require it of
  bulk senders, and it takes a working unsubscribe endpoint); a delivery status
  notification; a calendar invitation, reply or cancellation.
* primary: `List-Unsubscribe` (mailto/http), `List-Id` (RFC 2919), `Feedback-ID`,
  `Auto-Submitted` other than "no" (RFC 3834), the infrastructure of a known ESP
  (`data/esp.toml`: DKIM d=, Return-Path, Received hosts, its own header names).
* supporting: `Precedence: bulk|list|junk`, `X-Auto-Response-Suppress`, a noreply sender, a
  DKIM-Signature (of a domain that is not the ESP evidence already counted), a second
  independent trace of the same ESP, a generic bulk-mailer header (X-CSA-Complaints,
  X-Campaign).

A message is bulk when it shows a decisive sign, or at least two signs of which one is
primary. A lone weak sign (just `Precedence: bulk`, just a noreply address, just a DKIM
signature, or both of the latter) never suffices: spam copies them freely and personal mail
has them too.

Kind, strongest first: "dsn" (an RFC 3464 report, an RFC 8098 read receipt, or a qmail /
Exim bounce with its copy of the message), "calendar", "newsletter" (one-click, List-
Unsubscribe, List-Id, `Precedence: list`, a marketing ESP, a generic campaign header),
"notification" (everything else that qualified: Auto-Submitted, Feedback-ID, a transactional
ESP such as Postmark, SES or SendGrid). `Precedence: bulk|junk` reads as neither: monitoring,
ticket systems and auto-responders set it as often as list servers do.

Read receipts (`report-type=disposition-notification`) count as kind "dsn": like a bounce
they are machine reports about a message our user sent, arrive from the null sender, and
can be checked against the message log the same way; a marker tells them apart.

`own_dsn` is set only when a report returns mail our users sent, checked, not assumed: a null
envelope sender, a returned original (or Original-Message-ID) whose From or Return-Path is
one of `internal_domains`, and its Message-ID in the message log as outbound or internal
mail. A report that claims to return our mail but whose Message-ID the log does not know is
backscatter (`BULK_BACKSCATTER`). Without a database (offline scans) neither is decided and a
marker says the log could not be checked.
"""

from __future__ import annotations

import asyncio
import functools
import re
import tomllib
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import getaddresses
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from mailmoat.config import Section
from mailmoat.errors import ConfigError
from mailmoat.message.model import ParsedMessage, domain_of
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts, BulkFacts

_G = "bulk"

SYMBOLS: dict[str, SymbolSpec] = {
    "BULK_NEWSLETTER": SymbolSpec(
        0.0, "Newsletter or list mail: it carries unsubscribe or mailing-list machinery.",
        Category.BULK, _G),
    "BULK_NOTIFICATION": SymbolSpec(
        0.0, "Automated mail from a service (receipt, shipping or account notice) without "
        "unsubscribe machinery.", Category.BULK, _G),
    "BULK_DSN": SymbolSpec(
        0.0, "A delivery status notification (bounce) or read receipt.", Category.BULK, _G),
    "BULK_OWN_DSN": SymbolSpec(
        0.0, "A bounce returning a message our own user sent: its Message-ID is in the "
        "message log as mail we relayed out.", Category.BULK, _G),
    "BULK_CALENDAR": SymbolSpec(
        0.0, "A calendar invitation, reply or cancellation.", Category.BULK, _G),
    "BULK_ESP": SymbolSpec(
        0.0, "The message was sent through a known email service provider's platform.",
        Category.BULK, _G),
    "BULK_BACKSCATTER": SymbolSpec(
        3.0, "A bounce claims to return mail from our own domains, but the message log has "
        "no such message: a bounce of mail forged in our name (backscatter).",
        Category.SPAM, _G),
}

# Built-in ESP table; packaged with the code (package-data includes data/**/*).
_ESP_FILE = "esp.toml"
# A report's returned original is read from at most this much of the message: its headers
# come before its body, and a bounce carrying a 20 MB attachment must not cost a 20 MB parse.
_REPORT_SCAN_BYTES = 1024 * 1024
_CALENDAR_SCAN_BYTES = 64 * 1024

_DKIM_D = re.compile(r"(?:^|;)\s*d\s*=\s*([A-Za-z0-9._-]+)")
_URI = re.compile(r"<([^>]*)>")
_HOST = re.compile(r"(?<![@\w.-])((?:[a-z0-9-]+\.)+[a-z]{2,})(?![\w-])")
_NOREPLY = re.compile(r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply)(?:[-+._].*)?$")
_REPORT_TYPE = re.compile(r"""report-type\s*=\s*"?([A-Za-z-]+)""", re.I)
_CAL_METHOD = re.compile(rb"(?im)^METHOD:\s*(REQUEST|REPLY|CANCEL)\b")
_BOUNCE_SENDERS = ("mailer-daemon", "postmaster")
# Non-MIME bounces whose copy of the message follows a fixed line: qmail (and Yahoo, built on
# it) and Exim. Only these: a free-text bounce of another MTA is not robustly recognisable.
_COPY_MARKERS = (
    ("qmail", "--- Below this line is a copy of the message."),
    ("Exim", "------ This is a copy of the message, including all the headers. ------"),
)
_RETURNED_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/global",
                             "message/global-headers"})


class BulkSettings(Section):
    enabled: bool = Field(True, description="recognise legitimate bulk and automated mail")
    esp_file: str = Field("", description="extra ESP table in the format of the built-in "
                          "data/esp.toml, read after it")


@dataclass(frozen=True)
class Esp:
    name: str
    transactional: bool
    dkim: tuple[str, ...] = ()
    return_path: tuple[str, ...] = ()
    return_local: tuple[str, ...] = ()
    received: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()  # lower-case; a trailing "*" is a prefix
    feedback_ids: tuple[str, ...] = ()  # lower-case
    links: tuple[str, ...] = ()  # click-tracking and hosting domains: never a trace


@dataclass(frozen=True)
class EspTable:
    esps: tuple[Esp, ...]
    generic_headers: tuple[str, ...] = ()  # lower-case

    @functools.cached_property
    def index(self) -> dict[tuple[str, str], Esp]:
        """(kind, domain or exact header name or feedback id) → provider, first entry wins:
        one dictionary look-up per host suffix instead of a scan of the table."""
        out: dict[tuple[str, str], Esp] = {}
        for esp in self.esps:
            for kind in ("dkim", "return_path", "received", "feedback_ids", "headers"):
                for value in getattr(esp, kind):
                    if not value.endswith("*"):
                        out.setdefault((kind, value), esp)
        return out

    @functools.cached_property
    def header_prefixes(self) -> tuple[tuple[str, Esp], ...]:
        return tuple((h[:-1], esp) for esp in self.esps for h in esp.headers if h.endswith("*"))

    @functools.cached_property
    def return_locals(self) -> tuple[tuple[str, Esp], ...]:
        return tuple((p, esp) for esp in self.esps for p in esp.return_local)

    def lookup(self, kind: str, host: str) -> tuple[str, Esp] | None:
        """(the table's domain, provider) for `host` or the nearest domain above it."""
        labels = host.split(".")
        for i in range(len(labels) - 1):
            esp = self.index.get((kind, ".".join(labels[i:])))
            if esp is not None:
                return ".".join(labels[i:]), esp
        return None

    def header_esp(self, name: str) -> Esp | None:
        """The provider whose platform writes the (lower-case) header `name`."""
        esp = self.index.get(("headers", name))
        if esp is not None:
            return esp
        return next((e for prefix, e in self.header_prefixes if name.startswith(prefix)), None)


def _strings(entry: dict[str, Any], key: str) -> tuple[str, ...]:
    values = entry.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"ESP table: {key} of {entry.get('name')!r} must be a list of strings")
    return tuple(v.lower() for v in values)


def parse_esp_table(text: str, where: str) -> EspTable:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    esps = []
    for entry in data.get("esp", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: every [[esp]] entry needs a name")
        esps.append(Esp(
            name=entry["name"], transactional=bool(entry.get("transactional", False)),
            dkim=_strings(entry, "dkim"), return_path=_strings(entry, "return_path"),
            return_local=_strings(entry, "return_local"), received=_strings(entry, "received"),
            headers=_strings(entry, "headers"), feedback_ids=_strings(entry, "feedback_ids"),
            links=_strings(entry, "links")))
    generic = data.get("generic", {})
    return EspTable(tuple(esps), _strings(generic, "headers") if isinstance(generic, dict) else ())


def load_esp_table(extra_file: Path | None = None) -> EspTable:
    """The built-in table, extended by an administrator's file in the same format."""
    builtin = (resources.files("mailmoat") / "data" / _ESP_FILE).read_text(encoding="utf-8")
    table = parse_esp_table(builtin, _ESP_FILE)
    if extra_file is None:
        return table
    try:
        text = extra_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[bulk] esp_file: cannot read {extra_file}: {exc}") from exc
    extra = parse_esp_table(text, str(extra_file))
    return EspTable(table.esps + extra.esps, table.generic_headers + extra.generic_headers)


@functools.cache
def _builtin_table() -> EspTable:
    return load_esp_table()


def esp_domains(name: str) -> tuple[str, ...]:
    """Every domain of the provider called `name` in the built-in table (its signing,
    bounce, relay and link domains): the links the evidence gate accepts in mail it sent."""
    for esp in _builtin_table().esps:
        if esp.name == name:
            return tuple(dict.fromkeys((*esp.dkim, *esp.return_path, *esp.received, *esp.links)))
    return ()


def _in_domain(host: str, domains: tuple[str, ...]) -> str:
    """The entry of `domains` that `host` is or lies under, else ""."""
    return next((d for d in domains if host == d or host.endswith("." + d)), "")


def _header_named(msg: ParsedMessage, patterns: tuple[str, ...]) -> str:
    """The first header name (as written) that one of the lower-case `patterns` matches;
    a pattern ending in "*" matches every name that starts with the rest."""
    for name, _ in msg.headers:
        low = name.lower()
        if any(low.startswith(p[:-1]) if p.endswith("*") else low == p for p in patterns):
            return name
    return ""


# --- signs ----------------------------------------------------------------------------------

DECISIVE, PRIMARY, SUPPORTING = 3, 2, 1


@dataclass(frozen=True)
class Sign:
    marker: str  # plain-language phrase for the reason and BulkFacts.markers
    strength: int  # DECISIVE, PRIMARY or SUPPORTING
    newsletter: bool = False  # reads as list or marketing mail


@dataclass
class EspHit:
    esp: Esp
    evidence: list[str] = field(default_factory=list)  # plain-language traces
    feedback_id: str = ""  # the Feedback-ID SenderId that names it: no trace of its own
    sources: set[str] = field(default_factory=set)  # independent kinds: dkim, return-path, …
    dkim_domains: set[str] = field(default_factory=set)


def dkim_domains(msg: ParsedMessage) -> list[str]:
    """The d= domains the message's DKIM-Signature fields claim (lower case, once each,
    in order); claims only: verification is the auth family's."""
    out: list[str] = []
    for value in msg.header_all("dkim-signature"):
        m = _DKIM_D.search(value)
        if m and m.group(1).lower().rstrip(".") not in out:
            out.append(m.group(1).lower().rstrip("."))
    return out


def _dkim_phrase(domain: str, auth: AuthFacts | None) -> str | None:
    """How much a DKIM d= is worth: verified, a claim, or (failed) nothing."""
    if auth is not None and domain in {d.lower() for d in auth.dkim_pass}:
        return f"signed by {domain} (verified)"
    if auth is not None and domain in {d.lower() for d in auth.dkim_fail}:
        return None
    return f"DKIM-Signature claims d={domain}"


def _return_paths(msg: ParsedMessage) -> list[str]:
    """Envelope MAIL FROM and Return-Path addresses, lower-case, without <>."""
    found = [msg.envelope.mail_from.strip().strip("<>").lower()]
    found += [v.strip().strip("<>").lower() for v in msg.header_all("return-path")]
    return list(dict.fromkeys(a for a in found if "@" in a))


def _received_hosts(msg: ParsedMessage) -> list[str]:
    hosts: list[str] = []
    for value in msg.header_all("received"):
        hosts += _HOST.findall(value.lower())
    return list(dict.fromkeys(hosts))


def find_esp(msg: ParsedMessage, table: EspTable, auth: AuthFacts | None,
             dkim: list[str]) -> EspHit | None:
    """The provider with the most independent traces in the message, if any."""
    hits: dict[str, EspHit] = {}

    def note(esp: Esp, source: str, evidence: str) -> EspHit:
        hit = hits.setdefault(esp.name, EspHit(esp))
        if source not in hit.sources:  # one piece of evidence per kind of trace
            hit.sources.add(source)
            hit.evidence.append(evidence)
        return hit

    for d in dkim:
        found = table.lookup("dkim", d)
        phrase = _dkim_phrase(d, auth)
        if found and phrase:
            note(found[1], "dkim", phrase).dkim_domains.add(d)
    for addr in _return_paths(msg):
        # The domain only: a bounce address carries the recipient's address in it.
        found = table.lookup("return_path", domain_of(addr))
        if found:
            note(found[1], "return-path", f"Return-Path in {found[0]}")
        for prefix, esp in table.return_locals:
            if addr.startswith(prefix):
                note(esp, "return-path", f"Return-Path {addr.split('@', 1)[0]}@…")
    for host in _received_hosts(msg):
        found = table.lookup("received", host)
        if found:
            note(found[1], "received", f"Received from {host}")
    for name, _ in msg.headers:
        writer = table.header_esp(name.lower())
        if writer is not None:
            note(writer, "header", f"{name} header")
    fid = (msg.header("feedback-id") or "").strip().rsplit(":", 1)[-1].strip()
    named = table.index.get(("feedback_ids", fid.lower())) if fid else None
    if named is not None:
        # Names the provider, but is the Feedback-ID sign already counted: no new source.
        hits.setdefault(named.name, EspHit(named)).feedback_id = fid
    if not hits:
        return None
    return max(hits.values(), key=lambda h: (len(h.sources), len(h.evidence)))


def esp_reason(hit: EspHit) -> str:
    named = hit.evidence + ([f"Feedback-ID sender {hit.feedback_id}"] if hit.feedback_id else [])
    return f"sent through {hit.esp.name}: {', '.join(named)}"


def header_signs(msg: ParsedMessage, table: EspTable) -> list[Sign]:
    """Signs written into the header by list servers, bulk mailers and automated systems."""
    signs: list[Sign] = []
    unsub = msg.header("list-unsubscribe") or ""
    uris = [u.strip().lower() for u in _URI.findall(unsub)]
    https = any(u.startswith("https://") for u in uris)
    post = re.sub(r"\s+", "", msg.header("list-unsubscribe-post") or "").lower()
    if https and post == "list-unsubscribe=one-click":
        signs.append(Sign("one-click unsubscribe (RFC 8058)", DECISIVE, True))
    elif any(u.startswith(("mailto:", "https://", "http://")) for u in uris):
        kinds = sorted({u.split(":", 1)[0] for u in uris if u.startswith(("mailto:", "http"))})
        signs.append(Sign(f"List-Unsubscribe ({', '.join(kinds)})", PRIMARY, True))
    list_id = (msg.header("list-id") or "").strip()
    if list_id:
        m = _URI.search(list_id)
        signs.append(Sign(f"List-Id <{m.group(1) if m else list_id[:80]}>", PRIMARY, True))
    fid = (msg.header("feedback-id") or "").strip()
    if fid:
        parts = fid.split(":")
        detail = f" (sender id {parts[-1].strip()[:40]})" if len(parts) >= 2 else ""
        signs.append(Sign(f"Feedback-ID{detail}", PRIMARY))
    auto = (msg.header("auto-submitted") or "").strip().lower().split(";", 1)[0].strip()
    if auto and auto != "no":
        signs.append(Sign(f"Auto-Submitted: {auto[:40]} (RFC 3834)", PRIMARY))
    precedence = (msg.header("precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        signs.append(Sign(f"Precedence: {precedence}", SUPPORTING, precedence == "list"))
    if msg.header("x-auto-response-suppress") is not None:
        signs.append(Sign("X-Auto-Response-Suppress", SUPPORTING))
    sender = msg.from_addr
    if sender is not None and _NOREPLY.match(sender.local_part):
        signs.append(Sign(f"noreply sender {sender.address}", SUPPORTING))
    generic = _header_named(msg, table.generic_headers)
    if generic:
        signs.append(Sign(f"bulk-mailer header {generic}", SUPPORTING, True))
    return signs


# RFC 7489 section 7.2.1.1 fixes the subject of DMARC aggregate reports.
_DMARC_SUBJECT = re.compile(r"^\s*report\s+domain:\s*\S+.*\bsubmitter:\s*\S+.*\breport-id:",
                            re.I | re.S)
_REPORT_FILE = re.compile(r"\.(?:xml|json)(?:\.gz)?$|\.zip$|\.gz$", re.I)


def aggregate_report(msg: ParsedMessage) -> str:
    """A machine-written authentication report, or "": a DMARC aggregate report (RFC 7489:
    the fixed subject and a compressed XML file) or an SMTP TLS report (RFC 8460: its two
    required header fields and its media type). Mail administrators receive them daily, and
    their bare subjects and attachments read like nothing else the content models know."""
    if msg.header("tls-report-domain") is not None and \
            msg.header("tls-report-submitter") is not None:
        return "SMTP TLS report (RFC 8460)"
    if _DMARC_SUBJECT.search(msg.subject) and any(
            _REPORT_FILE.search(a.filename) for a in msg.attachments):
        return "DMARC aggregate report (RFC 7489)"
    return ""


_REPORT_DOMAIN = re.compile(r"^\s*report\s+domain:\s*([^\s;]+)", re.I)


def report_domain(msg: ParsedMessage) -> str:
    """The domain an aggregate report is about (its receiver's own), lower-cased, or ""."""
    tls = msg.header("tls-report-domain")
    if tls:
        return str(tls).strip().lower()
    m = _REPORT_DOMAIN.search(msg.subject)
    return m.group(1).strip(".").lower() if m else ""


def esp_signs(hit: EspHit | None, dkim: list[str], auth: AuthFacts | None) -> list[Sign]:
    """The ESP as a primary sign, a second independent trace of it as a supporting one, and
    a DKIM signature of another domain (the sender's own) as a supporting one."""
    signs: list[Sign] = []
    if hit is not None and hit.sources:
        marketing = not hit.esp.transactional
        signs.append(Sign(f"sent through {hit.esp.name}", PRIMARY, marketing))
        if len(hit.sources) >= 2:
            signs.append(Sign(f"{len(hit.sources)} independent traces of {hit.esp.name}",
                              SUPPORTING, marketing))
    counted = hit.dkim_domains if hit is not None else set()
    own = [p for d in dkim if d not in counted and (p := _dkim_phrase(d, auth))]
    if own:
        signs.append(Sign(own[0], SUPPORTING))
    return signs


def is_bulk(signs: list[Sign]) -> bool:
    if any(s.strength == DECISIVE for s in signs):
        return True
    return len(signs) >= 2 and any(s.strength == PRIMARY for s in signs)


# --- calendar -------------------------------------------------------------------------------

def calendar_method(msg: ParsedMessage) -> str:
    """METHOD of a text/calendar part or .ics attachment: REQUEST, REPLY, CANCEL or ""."""
    for att in msg.attachments:
        if att.declared_type in ("text/calendar", "application/ics") or att.extension == "ics":
            m = _CAL_METHOD.search(att.content[:_CALENDAR_SCAN_BYTES])
            if m:
                return m.group(1).decode().upper()
    return ""


# --- delivery reports -----------------------------------------------------------------------

@dataclass
class Report:
    """A delivery report (or read receipt) and what it says it returns."""

    shape: str  # plain language: "delivery status notification (RFC 3464)", …
    status: str = ""  # "failed 5.1.1", from the first per-recipient block
    original: Message | None = None  # headers of the returned message
    original_id: str = ""  # its Message-ID (or an MDN's Original-Message-ID)


def _part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _returned_headers(part: Message) -> Message | None:
    """Headers of a returned original: message/* parts come parsed; text/rfc822-headers (or
    an encoded message/global) are parsed from their decoded bytes."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    data = _part_bytes(part)
    return BytesHeaderParser(policy=compat32).parsebytes(data) if data.strip() else None


def _report_fields(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status (or disposition-notification) part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def mime_report(msg: ParsedMessage) -> Report | None:
    """An RFC 3464 DSN or RFC 8098 MDN: multipart/report with its machine-readable part."""
    if msg.content_type != "multipart/report":
        return None
    m = _REPORT_TYPE.search(msg.header("content-type") or "")
    kind = m.group(1).lower() if m else ""
    if kind not in ("delivery-status", "disposition-notification"):
        return None
    mdn = kind == "disposition-notification"
    wanted = ("message/disposition-notification",) if mdn else (
        "message/delivery-status", "message/global-delivery-status")
    parsed = BytesParser(policy=compat32).parsebytes(msg.raw[:_REPORT_SCAN_BYTES])
    report: Report | None = None
    for part in parsed.walk():
        ctype = part.get_content_type().lower()
        if ctype in wanted and report is None:
            report = Report("read receipt (MDN, RFC 8098)" if mdn
                            else "delivery status notification (RFC 3464)")
            blocks = _report_fields(part)
            if mdn and blocks:
                report.original_id = str(blocks[0].get("Original-Message-ID") or "").strip()
            for block in blocks[1:] if not mdn else ():
                action = str(block.get("Action") or "").strip().lower()
                if action:
                    report.status = f"{action} {str(block.get('Status') or '').strip()}".strip()
                    break
        elif ctype in _RETURNED_TYPES and report is not None and report.original is None:
            report.original = _returned_headers(part)
    if report is not None and report.original is not None:
        report.original_id = (str(report.original.get("Message-ID") or "").strip()
                              or report.original_id)
    return report


def inline_bounce(msg: ParsedMessage) -> Report | None:
    """A qmail or Exim bounce: plain text from the null sender or MAILER-DAEMON, with its copy
    of the message after a fixed line."""
    sender = msg.from_addr.local_part if msg.from_addr else ""
    if msg.envelope.mail_from and sender not in _BOUNCE_SENDERS:
        return None
    for mta, line in _COPY_MARKERS:
        at = msg.text.find(line)
        if at >= 0:
            copy = msg.text[at + len(line):].lstrip("\r\n").encode("utf-8", "surrogateescape")
            original = BytesHeaderParser(policy=compat32).parsebytes(copy)
            report = Report(f"{mta} bounce with a copy of the message")
            if original.keys():
                report.original = original
                report.original_id = str(original.get("Message-ID") or "").strip()
            return report
    return None


def original_sender_domains(original: Message | None) -> list[str]:
    if original is None:
        return []
    addrs = [str(original.get("From") or ""), str(original.get("Return-Path") or "")]
    return list(dict.fromkeys(domain_of(a) for _, a in getaddresses(addrs) if "@" in a))


def sent_by_us(database: Any, message_id: str) -> bool:
    """Whether the message log holds this Message-ID as mail our users sent through us."""
    from sqlalchemy import select

    from mailmoat.store.models import MessageRow

    bare = message_id.strip().strip("<>")
    with database.session() as s:
        row = s.scalar(select(MessageRow.id).where(
            MessageRow.message_id.in_((f"<{bare}>", bare)),
            MessageRow.direction.in_(("outbound", "internal"))).limit(1))
    return row is not None


# --- the check ------------------------------------------------------------------------------

class BulkCheck(Check):
    name = "bulk"
    family = "bulk"
    symbols = SYMBOLS
    stage = 1  # after auth (stage 0), whose facts.auth tells verified DKIM from claimed
    needs_network = False

    def __init__(self, table: EspTable, internal_domains: tuple[str, ...],
                 database: Any = None) -> None:
        self.table = table
        self.internal_domains = internal_domains
        self.database = database

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        auth = result.facts.auth
        dkim = dkim_domains(msg)
        hit = find_esp(msg, self.table, auth, dkim)
        machine = aggregate_report(msg)
        signs = header_signs(msg, self.table) + esp_signs(hit, dkim, auth) + (
            [Sign(machine, DECISIVE)] if machine else [])
        report = mime_report(msg) or inline_bounce(msg)
        method = calendar_method(msg)
        if report is None and not method and not is_bulk(signs):
            return
        markers: list[str] = []
        own = False
        if report is not None:
            kind = "dsn"
            markers.append(report.shape + (f", {report.status}" if report.status else ""))
            own, dsn_markers = await self._own_report(msg, report, result)
            markers += dsn_markers
        elif method:
            kind = "calendar"
        elif any(s.newsletter for s in signs):
            kind = "newsletter"
        else:
            kind = "notification"
        if method:
            markers.append(f"calendar {method.lower()} (text/calendar METHOD:{method})")
        markers += [s.marker for s in signs]
        if hit is not None:
            markers += hit.evidence
        esp = hit.esp.name if hit is not None else ""
        result.facts.bulk = BulkFacts(kind=kind, markers=tuple(markers), esp=esp, own_dsn=own,
                                      report=machine)
        symbol = {"dsn": "BULK_DSN", "calendar": "BULK_CALENDAR",
                  "newsletter": "BULK_NEWSLETTER", "notification": "BULK_NOTIFICATION"}[kind]
        result.add(symbol, reason=f"{kind}: {'; '.join(markers)}")
        if hit is not None:
            result.add("BULK_ESP", reason=esp_reason(hit), options=(esp,))

    async def _own_report(self, msg: ParsedMessage, report: Report,
                          result: ScanResult) -> tuple[bool, list[str]]:
        """Does the report return mail our users sent? (own_dsn, markers); adds the
        BULK_OWN_DSN or BULK_BACKSCATTER symbol when the log decides it."""
        ours = [d for d in original_sender_domains(report.original)
                if _in_domain(d, self.internal_domains)]
        if not ours:
            return False, []
        claim = f"returns mail from our domain {ours[0]}"
        if not report.original_id:
            return False, [f"{claim}, but without a Message-ID to look up"]
        if self.database is None:
            return False, [f"{claim}; message log not available: could not check we sent "
                           f"{report.original_id}"]
        if not await asyncio.to_thread(sent_by_us, self.database, report.original_id):
            marker = f"{claim}, but our log never sent {report.original_id}: backscatter"
            result.add("BULK_BACKSCATTER", reason=marker)
            return False, [marker]
        if msg.envelope.mail_from:
            return False, [f"{claim} ({report.original_id} is in our log), but the envelope "
                           f"sender is {msg.envelope.mail_from}, not the null sender"]
        marker = f"{claim}: {report.original_id} is in our log as sent by us"
        result.add("BULK_OWN_DSN", reason=marker)
        return True, [marker]


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("bulk", BulkSettings)
    if not settings.enabled:
        return []
    extra = ctx.config.resolve_path(settings.esp_file) if settings.esp_file else None
    table = load_esp_table(extra)
    return [BulkCheck(table, tuple(ctx.config.internal_domains), ctx.database)]
