"""Check family `reputation`: DNS blocklists for the client IP and for URL domains, and the
local memory of who has written to whom.

* `dnsbl` (network, stage 0): the client IP reversed under each `[reputation] dnsbl` zone
  (IPv4 octets, IPv6 nibbles), and the registrable domain of each URL under each `uribl`
  zone (deduplicated, capped). A listing is `DNSBL_LISTED` / `URIBL_LISTED` with the zone
  and the meaning of its return code in the reason; the zone's configured weight is the
  factor, so one symbol name serves every list. Answers outside 127.0.0.0/8 are ignored
  (wildcarding resolvers); 127.255.255.x is a list refusing our resolver, reported as
  `DNSBL_TEMPERROR` like any DNS failure.
* `sender_memory` (local, stage 0, needs the database): one look-up (usually answered by
  the memory's in-process cache, 60 s TTL, so no query); first contact and bad
  history, and `result.facts.sender_memory` (who the sender corresponded with, first
  contact or not) for later stages (the BEC check).
* `sender_trust` (local, stage 1): known correspondent and reply to our mail. It runs after
  the auth family so it can refuse to trust a "known" sender whose authentication failed
  (a forged From of a regular correspondent).
  The gateway feeds the memory: `SenderMemory.observe_message()` after each verdict.

Inbound mail only; our own users' mail (outbound/internal, SMTP AUTH) is not looked up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailmoat.config import Section
from mailmoat.dns import DnsTempError, Resolver
from mailmoat.message.model import Direction, Envelope, ParsedMessage
from mailmoat.reputation_memory import Correspondence, SenderMemory
from mailmoat.scan.auth import aligned, org_domain, shared_resolver
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import SenderMemoryFacts

log = logging.getLogger(__name__)

_G = "reputation"


class ListZone(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone: str = Field(description="DNS zone of the list, e.g. zen.spamhaus.org")
    name: str = Field("", description="label used in reasons; defaults to the zone")
    codes: dict[str, str] = Field(
        default_factory=dict, description="return address -> meaning, e.g. "
        '{"127.0.0.2" = "listed spam source"}; other 127.x answers read "listed"')
    weight: float = Field(3.0, description="score of a listing (the symbol's factor)")
    bitmask: bool = Field(
        False, description="the last octet is a bit field (SURBL/URIBL style): each set bit "
        "is looked up in codes as 127.0.0.<bit>")

    @field_validator("codes")
    @classmethod
    def _codes_are_loopback(cls, codes: dict[str, str]) -> dict[str, str]:
        for code in codes:
            try:
                ok = ipaddress.IPv4Address(code) in ipaddress.IPv4Network("127.0.0.0/8")
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"return code {code!r} is not an address in 127.0.0.0/8")
        return codes

    @property
    def label(self) -> str:
        return self.name or self.zone


class ReputationSettings(Section):
    enabled: bool = Field(True, description="run the reputation family")
    dnsbl: list[ListZone] = Field(default_factory=list, description="IP blocklists")
    uribl: list[ListZone] = Field(default_factory=list, description="URL-domain blocklists")
    uribl_max_lookups: int = Field(
        20, description="registrable domains looked up per message (per zone)")
    uribl_skip_domains: list[str] = Field(
        default_factory=list, description="domains never looked up (besides our own)")
    skip_private_ips: bool = Field(
        True, description="do not look up loopback, RFC 1918, link-local and ULA client IPs")
    timeout: float = Field(5.0, description="seconds the blocklist look-ups may take")
    memory: bool = Field(True, description="use the local sender memory (needs the database)")
    known_min_clean: int = Field(
        2, description="clean messages from a sender before they count as a known correspondent")
    bad_min: int = Field(1, description="bad verdicts before REP_BAD_HISTORY can fire")
    require_auth_for_trust: bool = Field(
        True, description="give the negative memory symbols only when the sender "
        "authenticated (DMARC pass, or an SPF/DKIM pass aligned with the From domain)")


SYMBOLS: dict[str, SymbolSpec] = {
    "DNSBL_LISTED": SymbolSpec(1.0, "The client IP is listed on a DNS blocklist; the score is "
                               "the zone's configured weight.", Category.SPAM, _G),
    "URIBL_LISTED": SymbolSpec(1.0, "A domain linked from the message is listed on a URI "
                               "blocklist; the score is the zone's configured weight.",
                               Category.SPAM, _G),
    "DNSBL_TEMPERROR": SymbolSpec(0.0, "A blocklist could not be queried (DNS failure or the "
                                  "list refused our resolver).", Category.POLICY, _G),
    "REP_FIRST_CONTACT": SymbolSpec(0.5, "The sender has never written to these recipients "
                                    "and they never wrote to the sender.", Category.SPAM, _G),
    "REP_KNOWN_CORRESPONDENT": SymbolSpec(-1.5, "The sender has written to these recipients "
                                          "before and that mail was clean.", Category.CLEAN, _G),
    "REP_REPLY_TO_OUR_MAIL": SymbolSpec(-2.0, "The message answers mail we sent, or comes "
                                        "from someone our users wrote to.", Category.CLEAN, _G),
    "REP_BAD_HISTORY": SymbolSpec(2.0, "Earlier mail from this sender to these recipients was "
                                  "mostly judged spam, phishing, malware or BEC.",
                                  Category.SPAM, _G),
}


def reverse_ip(ip: str) -> str:
    """192.0.2.10 → 10.2.0.192; 2001:db8::1 → nibbles, least significant first."""
    addr = ipaddress.ip_address(ip)
    return addr.reverse_pointer.rsplit(".", 2)[0]


def _private(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast:
        return True
    if isinstance(addr, ipaddress.IPv4Address):
        return any(addr in ipaddress.ip_network(n)
                   for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
    return addr in ipaddress.ip_network("fc00::/7")


def meanings(zone: ListZone, answers: list[str]) -> tuple[list[str], list[str]]:
    """(meanings of the listing codes, refusal codes) for a zone's A answers."""
    listed: list[str] = []
    refused: list[str] = []
    for a in answers:
        try:
            addr = ipaddress.IPv4Address(a)
        except ValueError:
            continue
        if addr not in ipaddress.IPv4Network("127.0.0.0/8"):
            continue  # a wildcarding resolver or a hijacked NXDOMAIN, not a listing
        if addr in ipaddress.IPv4Network("127.255.255.0/24"):
            refused.append(a)
            continue
        if zone.bitmask:
            last = int(a.rsplit(".", 1)[1])
            bits = [1 << i for i in range(8) if last & (1 << i)]
            listed += [zone.codes.get(f"127.0.0.{b}", f"listed ({a})") for b in bits] or \
                [f"listed ({a})"]
        else:
            listed.append(zone.codes.get(a, f"listed ({a})"))
    return list(dict.fromkeys(listed)), refused


class DnsblCheck(Check):
    name = "dnsbl"
    family = "reputation"
    symbols = {k: SYMBOLS[k] for k in ("DNSBL_LISTED", "URIBL_LISTED", "DNSBL_TEMPERROR")}
    stage = 0
    needs_network = True

    def __init__(self, settings: ReputationSettings, resolver: Resolver,
                 own_domains: list[str]) -> None:
        self.settings = settings
        self.resolver = resolver
        self.timeout = settings.timeout
        self.skip = {d.lower() for d in [*own_domains, *settings.uribl_skip_domains]}

    def _ip_lookups(self, env: Envelope) -> asyncio.Future[list[Any]] | None:
        """The client IP's look-ups in every DNSBL zone (answers or DnsTempError each)."""
        ip = env.client_ip
        if (env.direction is not Direction.INBOUND or env.auth_user or not ip
                or not self.settings.dnsbl):
            return None
        try:
            if self.settings.skip_private_ips and _private(ip):
                return None
            rev = reverse_ip(ip)
        except ValueError:
            return None
        return asyncio.gather(*(self.resolver.addresses(f"{rev}.{zone.zone}")
                                for zone in self.settings.dnsbl), return_exceptions=True)

    def start_early(self, raw: bytes, envelope: Envelope) -> asyncio.Future[Any] | None:
        return self._ip_lookups(envelope)  # the client IP is known before the parse

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        env = msg.envelope
        if env.direction is not Direction.INBOUND or env.auth_user:
            return  # (nothing was started early either)
        ip_lookups = result.early.pop(self.name, None) or self._ip_lookups(env)
        domains = self.url_domains(msg)
        uri_jobs = [self._uri(zone, domains, result) for zone in self.settings.uribl] \
            if domains else []
        ip_answers: list[Any] = []
        if ip_lookups is not None:
            ip_answers, *_ = await asyncio.gather(ip_lookups, *uri_jobs)
        else:
            await asyncio.gather(*uri_jobs)
        for zone, answers in zip(self.settings.dnsbl, ip_answers):
            self._emit_ip(zone, env.client_ip or "", answers, result)

    def url_domains(self, msg: ParsedMessage) -> list[str]:
        """Registrable domains of the message's URLs, ours and skipped ones left out."""
        out: dict[str, None] = {}
        for url in msg.urls:
            host = (url.raw_host or url.host).lower().rstrip(".")
            if not host or url.scheme not in ("http", "https", ""):
                continue
            try:
                ipaddress.ip_address(host.strip("[]"))
                continue  # IP hosts: URIBLs list names
            except ValueError:
                pass
            dom = org_domain(host)
            if not dom or any(aligned(dom, s, "r") for s in self.skip):
                continue
            out[dom] = None
            if len(out) >= self.settings.uribl_max_lookups:
                break
        return list(out)

    def _emit_ip(self, zone: ListZone, ip: str, answers: list[str] | BaseException,
                 result: ScanResult) -> None:
        if isinstance(answers, DnsTempError):
            result.add("DNSBL_TEMPERROR", reason=f"{zone.label} could not be queried for "
                       f"{ip}: {answers}"[:300], options=(zone.zone,))
            return
        if isinstance(answers, BaseException):
            raise answers
        listed, refused = meanings(zone, answers)
        if refused and not listed:
            result.add("DNSBL_TEMPERROR", reason=f"{zone.label} refused our query for {ip} "
                       f"(answered {', '.join(refused)})", options=(zone.zone,))
        if listed:
            result.add("DNSBL_LISTED", factor=zone.weight,
                       reason=f"client IP {ip} is on {zone.label}: {'; '.join(listed)}",
                       options=(zone.zone, ip))

    async def _uri(self, zone: ListZone, domains: list[str], result: ScanResult) -> None:
        async def one(dom: str) -> tuple[str, list[str] | None]:
            try:
                return dom, await self.resolver.addresses(f"{dom}.{zone.zone}")
            except DnsTempError:
                return dom, None

        hits: list[str] = []
        failed: list[str] = []
        for dom, answers in await asyncio.gather(*(one(d) for d in domains)):
            if answers is None:
                failed.append(dom)
                continue
            listed, _refused = meanings(zone, answers)
            if listed:
                hits.append(f"{dom} ({'; '.join(listed)})")
        if hits:
            result.add("URIBL_LISTED", factor=zone.weight,
                       reason=f"linked domain {', '.join(hits)} on {zone.label}"[:300],
                       options=(zone.zone, *[h.split(" ", 1)[0] for h in hits]))
        if failed:
            result.add("DNSBL_TEMPERROR", reason=f"{zone.label} could not be queried for "
                       f"{', '.join(failed[:5])}", options=(zone.zone,))


def sender_authenticated(result: ScanResult, from_domain: str) -> bool | None:
    """Did the sender authenticate? None when the gateway's auth check did not verify the
    message to the end (not run, out of time, or standing aside for a trusted upstream)."""
    auth = result.facts.auth
    if auth is None or not auth.verified_here:
        return None
    if auth.dmarc == "pass":
        return True
    if auth.spf == "pass" and aligned(auth.spf_domain, from_domain, "r"):
        return True
    return any(aligned(d, from_domain, "r") for d in auth.dkim_pass)


class SenderMemoryCheck(Check):
    """Stage 0: one database look-up; first contact and bad history need no authentication,
    so later stages (the BEC check) can read `result.facts.sender_memory` already."""

    name = "sender_memory"
    family = "reputation"
    symbols = {k: SYMBOLS[k] for k in ("REP_FIRST_CONTACT", "REP_BAD_HISTORY")}
    stage = 0
    needs_network = False

    def __init__(self, settings: ReputationSettings, memory: SenderMemory) -> None:
        self.settings = settings
        self.memory = memory
        self.timeout = settings.timeout

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        env = msg.envelope
        if env.direction is not Direction.INBOUND or env.auth_user or not env.rcpt_tos:
            return
        # Usually answered by the memory's cache (no query, no thread); see reputation_memory.
        facts: Correspondence | None = self.memory.recall_cached(msg)
        if facts is None:
            facts = await asyncio.to_thread(self.memory.recall_message, msg)
        if not facts.sender:
            return
        who = facts.sender
        # Copied: the memory's cache may hand the same Correspondence to other messages.
        result.facts.sender_memory = SenderMemoryFacts(
            sender=who, history=dict(facts.history),
            wrote_to_sender=tuple(facts.wrote_to_sender), replied_ids=tuple(facts.replied_ids))
        if facts.first_contact:
            rcpts = ", ".join(env.rcpt_tos[:3]) + (" …" if len(env.rcpt_tos) > 3 else "")
            result.add("REP_FIRST_CONTACT", reason=f"first message from {who} to {rcpts}; "
                       "nobody here has corresponded with them", options=(who,))
            return
        bad = [(r, row) for r, row in facts.history.items()
               if row.bad >= self.settings.bad_min and row.bad > row.clean]
        if bad:
            r, row = bad[0]
            result.add("REP_BAD_HISTORY", reason=f"{row.bad} of {row.messages} earlier "
                       f"messages from {who} to {r} were judged bad", options=(who,))


class SenderTrustCheck(Check):
    """Stage 1, after auth: the negative memory symbols, only for a sender who
    authenticated, so a forged From of a regular correspondent earns no trust."""

    name = "sender_trust"
    family = "reputation"
    symbols = {k: SYMBOLS[k] for k in ("REP_KNOWN_CORRESPONDENT", "REP_REPLY_TO_OUR_MAIL")}
    stage = 1
    needs_network = False

    def __init__(self, settings: ReputationSettings) -> None:
        self.settings = settings
        self.timeout = settings.timeout

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        mem = result.facts.sender_memory
        if mem is None or mem.first_contact or result.has("REP_BAD_HISTORY"):
            return
        s = self.settings
        who = mem.sender
        if s.require_auth_for_trust and sender_authenticated(result, msg.from_domain) is False:
            return  # a known sender's address, unauthenticated: maybe a forged From
        if mem.replied_ids or mem.wrote_to_sender:
            why = (f"it answers our message <{mem.replied_ids[0]}>" if mem.replied_ids
                   else f"{mem.wrote_to_sender[0]} wrote to {who} before")
            result.add("REP_REPLY_TO_OUR_MAIL", reason=f"{who}: {why}", options=(who,))
            return
        known = [(r, h) for r, h in mem.history.items()
                 if h.clean >= s.known_min_clean and h.bad == 0]
        if known:
            r, h = known[0]
            result.add("REP_KNOWN_CORRESPONDENT", reason=f"{who} has sent {h.clean} clean "
                       f"messages to {r} since {h.first_seen:%Y-%m-%d}", options=(who,))


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("reputation", ReputationSettings)
    if not settings.enabled:
        return []
    checks: list[Check] = []
    if settings.dnsbl or settings.uribl:
        checks.append(DnsblCheck(settings, shared_resolver(ctx), ctx.config.internal_domains))
    if settings.memory and ctx.database is not None:
        checks += [SenderMemoryCheck(settings, SenderMemory(ctx.database)),
                   SenderTrustCheck(settings)]
    return checks
