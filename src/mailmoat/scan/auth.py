"""Check family `auth`: sender authentication with SPF, DKIM, DMARC and ARC.

Where it sits: stage 0 of the pipeline, for inbound mail only. Mail our own users send
(direction outbound/internal, or any SMTP-AUTH session) is skipped: the gateway itself
accepted it from an authenticated or trusted client, and our DKIM signature is added
later, on the way out (`mailmoat.dkimsign`).

How it works: SPF, DKIM and ARC run concurrently over the shared async resolver
(`mailmoat.dns`, cached, with timeouts); DMARC then combines the SPF and DKIM results
with the From domain's policy. The libraries that do the cryptography and the SPF grammar
(dkimpy, pyspf) are synchronous and bring their own DNS: we answer their DNS questions
from our resolver instead, so every look-up is cached, time-limited and can point at a
test server. DKIM and ARC keys are fetched asynchronously first and handed to dkimpy from
a dict; pyspf runs in a worker thread whose look-ups are sent back to the event loop.

Results become symbols (weights are config; p=reject is a high phishing weight, not a hard
reject) and `result.facts.auth` (source "gateway"), an `AuthFacts` that later checks read
and whose `clauses` are those of the Authentication-Results header the gateway writes.
A DNS failure is a `*_TEMPERROR` symbol, never an exception.

Behind an upstream the administrator trusts (`trusted_authserv_ids`), the `upstream_auth`
check (`mailmoat.scan.authres`) reads that upstream's verdict and this check stands aside.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import dkim
import dkim.util
import spf
from pydantic import Field

import mailmoat.dkimfast  # noqa: F401  (faster identical DKIM canonicalization)
from mailmoat.config import Section
from mailmoat.dns import DnsTempError, Resolver
from mailmoat.domains import org_domain
from mailmoat.message.model import Direction, Envelope, ParsedMessage
from mailmoat.policy.headers import kept_authserv_ids
from mailmoat.scan.authres import UpstreamAuthCheck, read_authentication_results
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts

log = logging.getLogger(__name__)

_G = "auth"
_C = Category.CLEAN  # negative weights: the category is never counted


class AuthSettings(Section):
    enabled: bool = Field(True, description="run sender authentication on inbound mail")
    spf: bool = Field(True, description="evaluate SPF for the MAIL FROM (or HELO) identity")
    dkim_verify: bool = Field(True, description="verify DKIM signatures")
    dmarc: bool = Field(True, description="apply the From domain's DMARC policy")
    arc: bool = Field(True, description="verify ARC chains")
    trusted_arc_sealers: list[str] = Field(
        default_factory=list,
        description="domains (and their subdomains) whose ARC-Authentication-Results we "
        "believe when their seal verifies, e.g. the company's own cloud mail",
    )
    trusted_authserv_ids: list[str] = Field(
        default_factory=list,
        description="authserv-ids (e.g. mx.google.com) of the upstream servers whose "
        "Authentication-Results we believe, topmost field only; the gateway then does not "
        "verify SPF/DKIM/DMARC itself, and removes every other incoming "
        "Authentication-Results on delivery",
    )
    timeout: float = Field(10.0, description="seconds the whole auth check may take")
    spf_timeout: float = Field(
        6.0, description="seconds for one SPF evaluation, all its DNS look-ups included")
    dkim_max_signatures: int = Field(
        5, description="DKIM signatures verified per message; more are ignored")
    dkim_min_key_bits: int = Field(1024, description="RSA keys shorter than this are permerror")
    skip_authenticated: bool = Field(
        True, description="skip mail from SMTP-AUTH users and outbound/internal mail")


SYMBOLS: dict[str, SymbolSpec] = {
    "SPF_PASS": SymbolSpec(-0.5, "The client IP is authorised by the sender domain's SPF record.",
                           _C, _G),
    "SPF_FAIL": SymbolSpec(3.0, "The sender domain's SPF record says this client IP may not "
                           "send its mail.", Category.PHISHING, _G),
    "SPF_SOFTFAIL": SymbolSpec(1.0, "The sender domain's SPF record says this client IP is "
                               "probably not authorised (~all).", Category.SPAM, _G),
    "SPF_NEUTRAL": SymbolSpec(0.2, "The sender domain's SPF record makes no statement about "
                              "this client IP (?all).", Category.SPAM, _G),
    "SPF_NONE": SymbolSpec(0.5, "The sender domain publishes no SPF record.", Category.SPAM, _G),
    "SPF_TEMPERROR": SymbolSpec(0.0, "SPF could not be evaluated because of a temporary DNS "
                                "failure.", Category.POLICY, _G),
    "SPF_PERMERROR": SymbolSpec(0.5, "The sender domain's SPF record is broken (syntax error, "
                                "two records, too many look-ups).", Category.SPAM, _G),
    "DKIM_PASS": SymbolSpec(-0.5, "A DKIM signature verified; the signing domain vouches for "
                            "the message.", _C, _G),
    "DKIM_FAIL": SymbolSpec(2.0, "A DKIM signature did not verify: the message was altered "
                            "or the signature forged.", Category.PHISHING, _G),
    "DKIM_NONE": SymbolSpec(0.2, "The message carries no DKIM signature.", Category.SPAM, _G),
    "DKIM_TEMPERROR": SymbolSpec(0.0, "A DKIM key could not be fetched because of a "
                                 "temporary DNS failure.", Category.POLICY, _G),
    "DKIM_PERMERROR": SymbolSpec(0.5, "A DKIM signature cannot be checked: malformed "
                                 "signature, missing or unusable key.", Category.SPAM, _G),
    "DMARC_PASS": SymbolSpec(-1.0, "The From domain is authenticated by an aligned SPF or "
                             "DKIM pass (DMARC).", _C, _G),
    "DMARC_POLICY_REJECT": SymbolSpec(9.0, "DMARC fails and the From domain asks receivers "
                                      "to reject such mail (p=reject).", Category.PHISHING, _G),
    "DMARC_POLICY_QUARANTINE": SymbolSpec(6.0, "DMARC fails and the From domain asks "
                                          "receivers to quarantine such mail (p=quarantine).",
                                          Category.PHISHING, _G),
    "DMARC_POLICY_NONE": SymbolSpec(1.0, "DMARC fails; the From domain only monitors "
                                    "(p=none).", Category.PHISHING, _G),
    "DMARC_NA": SymbolSpec(0.0, "The From domain publishes no DMARC policy, or DMARC could "
                           "not be applied.", Category.POLICY, _G),
    "DMARC_TEMPERROR": SymbolSpec(0.0, "DMARC could not be evaluated because of a temporary "
                                  "DNS failure.", Category.POLICY, _G),
    "DMARC_PERMERROR": SymbolSpec(0.5, "The From domain's DMARC record is broken.",
                                  Category.SPAM, _G),
    "ARC_PASS": SymbolSpec(-0.2, "The message's ARC chain of custody verifies.", _C, _G),
    "ARC_FAIL": SymbolSpec(1.0, "The message's ARC chain is broken or forged.",
                           Category.SPAM, _G),
    "ARC_NA": SymbolSpec(0.0, "The message carries no ARC headers.", Category.POLICY, _G),
    "ARC_TEMPERROR": SymbolSpec(0.0, "An ARC key could not be fetched because of a temporary "
                                "DNS failure.", Category.POLICY, _G),
    "ARC_TRUSTED_OVERRIDE": SymbolSpec(
        -1.0, "A trusted ARC sealer saw the message pass authentication before forwarding "
        "broke it; offsets the local SPF/DKIM/DMARC failure (weight -1 = all of it).", _C, _G),
}


# Organisational domains (RFC 7489 3.2) live in mailmoat.domains, shared with the
# checks that compare sender, link and brand domains.


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return org_domain(a) == org_domain(b)


# --- SPF through pyspf, its DNS answered by our resolver -------------------------------------

_spf_local = threading.local()
_spf_original_lookup = spf.DNSLookup


def _spf_dispatch(name: str, qtype: str, strict: Any = True, timeout: float = 30) -> Any:
    fn = getattr(_spf_local, "lookup", None)
    if fn is None:
        return _spf_original_lookup(name, qtype, strict, timeout)
    return fn(name, qtype, timeout)


# pyspf calls the module-level DNSLookup for every question. We replace it once with a
# dispatcher: threads that set `_spf_local.lookup` (ours, below) get our resolver; any other
# pyspf user in the process keeps the original behaviour.
spf.DNSLookup = _spf_dispatch


_SPF_TERM = re.compile(r"^[+\-~?]?(include|a|mx|exists|redirect)(?:[:=]([^/\s]+))?"
                       r"(?:/[0-9/]*)?$", re.IGNORECASE)
# RFC 7208 allows 10 DNS-querying terms per evaluation; prefetch no more than twice that.
_MAX_PREFETCH = 10
_PREFETCH_BUDGET = 20


def spf_prefetch_targets(domain: str, txt: list[list[bytes]], addr_type: str) -> list[
        tuple[str, str]]:
    """The look-ups an SPF record will lead to: (name, type) of its include/redirect (TXT),
    a (A or AAAA), mx (MX) and exists (A) terms, in record order; terms with macros and
    ptr are left to the evaluation."""
    record = next((b"".join(parts).decode("ascii", "replace") for parts in txt
                   if b"".join(parts).lower().startswith(b"v=spf1")), None)
    if record is None:
        return []
    out: list[tuple[str, str]] = []
    for term in record.split()[1:]:
        m = _SPF_TERM.match(term)
        if m is None:
            continue
        kind, target = m.group(1).lower(), (m.group(2) or "")
        if "%" in target or (kind in ("include", "exists", "redirect") and not target):
            continue
        name = (target or domain).rstrip(".").lower()
        qtype = {"include": "TXT", "redirect": "TXT", "mx": "MX", "exists": "A"}.get(
            kind, addr_type)
        out.append((name, qtype))
        if len(out) >= _MAX_PREFETCH:
            break
    return out


@dataclass
class _Prefetch:
    """One SPF evaluation's speculative look-ups: kept referenced while in flight, and
    limited in number."""

    addr_type: str  # "A" or "AAAA", the client's address family
    left: int = _PREFETCH_BUDGET
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)

    def forget(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        # A failed prefetch is asked again (and reported) by the evaluation itself; reading
        # the exception here keeps asyncio from warning that nobody did.
        if not task.cancelled():
            task.exception()


async def _query_prefetching(resolver: Resolver, name: str, qtype: str, pf: _Prefetch) -> Any:
    """`resolver.query`, and start the look-ups the answer will lead to.

    pyspf evaluates a record term by term, one DNS round trip after another (a record with
    `mx` and an `include:` is three in a row); starting them all when the record arrives
    lets the later questions find their answers in the resolver's cache or in flight."""
    ans = await resolver.query(name, qtype)
    follow: list[tuple[str, str]] = []
    if qtype in ("TXT", "SPF"):
        follow = spf_prefetch_targets(name, [list(r.strings) for r in ans.records],
                                      pf.addr_type)
    elif qtype == "MX":
        follow = [(r.exchange.to_text(True).rstrip(".").lower(), pf.addr_type)
                  for r in ans.records][:_MAX_PREFETCH]
    for target in follow[:max(0, pf.left)]:
        pf.left -= 1
        task = asyncio.ensure_future(_query_prefetching(resolver, *target, pf))
        pf.tasks.add(task)
        task.add_done_callback(pf.forget)
    return ans


def _spf_lookup_via(resolver: Resolver, loop: asyncio.AbstractEventLoop,
                    wait: float, addr_type: str = "A") -> Callable[[str, str, float], list[Any]]:
    pf = _Prefetch(addr_type)

    def lookup(name: str, qtype: str, timeout: float) -> list[Any]:
        fut = asyncio.run_coroutine_threadsafe(
            _query_prefetching(resolver, name, qtype, pf), loop)
        try:
            ans = fut.result(timeout=wait)
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        except concurrent.futures.TimeoutError as exc:
            fut.cancel()
            raise spf.TempError(f"DNS look-up {name}/{qtype} timed out") from exc
        out: list[Any] = []
        for r in ans.records:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), r.address))
            elif qtype == "MX":
                out.append(((name, qtype), (r.preference, r.exchange.to_text(True))))
            elif qtype == "PTR":
                out.append(((name, qtype), r.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), list(r.strings)))
        return out

    return lookup


@lru_cache(maxsize=1)
def _spf_pool() -> concurrent.futures.ThreadPoolExecutor:
    # SPF threads spend their life waiting for DNS answers from the event loop; a pool of
    # their own keeps them from starving the default executor (DKIM hashing, database).
    return concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="spf")


@dataclass
class SpfOutcome:
    result: str  # pass fail softfail neutral none temperror permerror
    identity: str  # "mailfrom" or "helo"
    domain: str
    explanation: str
    ip: str = ""


def _run_spf(ip: str, sender: str, helo: str, lookup: Callable[..., Any],
             querytime: float) -> tuple[str, str]:
    _spf_local.lookup = lookup
    try:
        q = spf.query(i=ip, s=sender, h=helo, strict=True, querytime=querytime)
        res, _code, exp = q.check()
        return res, exp
    finally:
        _spf_local.lookup = None


# --- DKIM and ARC keys: fetched async, then served to dkimpy from a dict ----------------------

def _tags(value: bytes) -> dict[bytes, bytes]:
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", value)
    try:
        return dkim.util.parse_tag_value(unfolded)
    except Exception:
        return {}


@dataclass
class KeyFetch:
    """TXT records of `selector._domainkey.domain`, or why there are none."""

    records: list[bytes] = field(default_factory=list)
    temperror: str = ""


async def _fetch_keys(resolver: Resolver, names: set[str]) -> dict[str, KeyFetch]:
    async def one(name: str) -> tuple[str, KeyFetch]:
        try:
            return name, KeyFetch(records=await resolver.txt(name))
        except DnsTempError as exc:
            return name, KeyFetch(temperror=str(exc))

    return dict(await asyncio.gather(*(one(n) for n in names)))


def _dnsfunc(keys: dict[str, KeyFetch]) -> Callable[..., bytes | None]:
    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        fetched = keys.get(key)
        if fetched is None:
            return None
        if fetched.temperror:
            raise dkim.DnsTimeoutError(fetched.temperror)
        return fetched.records[0] if fetched.records else None

    return dnsfunc


def _key_name(tags: dict[bytes, bytes]) -> str:
    try:
        return (tags[b"s"] + b"._domainkey." + tags[b"d"]).decode("ascii").lower()
    except (KeyError, UnicodeDecodeError):
        return ""


@dataclass
class DkimOutcome:
    domain: str
    selector: str
    result: str  # pass fail temperror permerror
    reason: str
    algorithm: str = ""


def _verify_dkim_sync(raw: bytes, count: int, keys: dict[str, KeyFetch],
                      minkey: int) -> list[DkimOutcome]:
    out: list[DkimOutcome] = []
    try:
        d = dkim.DKIM(raw, minkey=minkey)
    except Exception as exc:  # dkimpy cannot even split the headers
        return [DkimOutcome("", "", "permerror", f"message unreadable for DKIM: {exc}")]
    sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"][:count]
    dnsfunc = _dnsfunc(keys)
    for idx, value in enumerate(sigs):
        tags = _tags(value)
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        algo = tags.get(b"a", b"").decode("ascii", "replace")
        name = _key_name(tags)
        fetched = keys.get(name)
        if not name or not domain:
            out.append(DkimOutcome(domain, selector, "permerror",
                                   "signature lacks d= or s=", algo))
            continue
        if fetched is not None and fetched.temperror:
            out.append(DkimOutcome(domain, selector, "temperror", fetched.temperror, algo))
            continue
        if fetched is None or not fetched.records:
            out.append(DkimOutcome(domain, selector, "permerror",
                                   f"no key published at {name}", algo))
            continue
        try:
            dkim.evaluate_pk(name, fetched.records[0])
        except dkim.DKIMException as exc:
            out.append(DkimOutcome(domain, selector, "permerror",
                                   f"unusable key at {name}: {exc}", algo))
            continue
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DnsTimeoutError as exc:
            out.append(DkimOutcome(domain, selector, "temperror", str(exc), algo))
            continue
        except dkim.ValidationError as exc:  # body hash mismatch and the like: a real fail
            why = ("the body was changed after signing (body hash mismatch)"
                   if "body hash mismatch" in str(exc) else str(exc))
            out.append(DkimOutcome(domain, selector, "fail", why, algo))
            continue
        except dkim.DKIMException as exc:
            out.append(DkimOutcome(domain, selector, "permerror", str(exc), algo))
            continue
        except Exception as exc:  # dkimpy on hostile input; judged, not crashed on
            out.append(DkimOutcome(domain, selector, "permerror",
                                   f"{type(exc).__name__}: {exc}", algo))
            continue
        if ok:
            out.append(DkimOutcome(domain, selector, "pass", "signature verified", algo))
        else:
            out.append(DkimOutcome(domain, selector, "fail",
                                   "signature or body hash does not match", algo))
    return out


@dataclass
class ArcOutcome:
    result: str  # pass fail none temperror
    reason: str
    sealer: str = ""  # d= of the most recent ARC-Seal
    instances: int = 0
    aar: str = ""  # ARC-Authentication-Results of the most recent instance


def _verify_arc_sync(raw: bytes, keys: dict[str, KeyFetch], minkey: int) -> ArcOutcome:
    try:
        cv, results, reason = dkim.arc_verify(raw, dnsfunc=_dnsfunc(keys), minkey=minkey)
    except Exception as exc:  # dkimpy on a message it cannot parse
        return ArcOutcome("fail", f"message unreadable for ARC: {exc}")
    sealer = ""
    aar = ""
    if results:
        sealer = results[0].get("as-domain", b"").decode("ascii", "replace").lower()
        aar = results[0].get("aar-value", b"").decode("utf-8", "replace")
    if cv == dkim.CV_Pass:
        return ArcOutcome("pass", "chain verified", sealer, len(results), aar)
    if cv == dkim.CV_None:
        return ArcOutcome("none", "no ARC headers")
    if any(k.temperror for k in keys.values()):
        return ArcOutcome("temperror", "; ".join(k.temperror for k in keys.values()
                                                 if k.temperror), sealer, len(results))
    return ArcOutcome("fail", str(reason), sealer, len(results))


def _aar_clauses(aar: str) -> list[tuple[str, str, dict[str, str]]]:
    """ARC-Authentication-Results → [(method, result, {ptype.property: value})]."""
    out = []
    for clause in aar.split(";"):
        clause = re.sub(r"\([^)]*\)", " ", clause).strip()
        m = re.match(r"([a-z0-9_-]+)\s*=\s*([a-z]+)(.*)$", clause, re.I | re.S)
        if not m or m.group(1).lower() == "i":
            continue
        props = dict((k.lower(), v.strip('"').lower()) for k, v in
                     re.findall(r"([a-z]+\.[a-z0-9_-]+)\s*=\s*(\S+)", m.group(3), re.I))
        out.append((m.group(1).lower(), m.group(2).lower(), props))
    return out


# --- DMARC (RFC 7489) ------------------------------------------------------------------------

@dataclass
class DmarcRecord:
    domain: str  # where it was found
    p: str
    sp: str
    adkim: str
    aspf: str
    pct: int


class DmarcRecordError(Exception):
    pass


def parse_dmarc(text: str, domain: str) -> DmarcRecord:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k.strip().lower()] = v.strip()
    if tags.get("v") != "DMARC1":
        raise DmarcRecordError(f"first tag of the record at _dmarc.{domain} is not v=DMARC1")
    p = tags.get("p", "").lower()
    if p not in ("none", "quarantine", "reject"):
        raise DmarcRecordError(f"the record at _dmarc.{domain} has no valid p= "
                               f"(found {tags.get('p', 'nothing')!r})")
    sp = tags.get("sp", p).lower()
    if sp not in ("none", "quarantine", "reject"):
        sp = p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(domain, p, sp, adkim if adkim in ("r", "s") else "r",
                       aspf if aspf in ("r", "s") else "r", pct)


async def discover_dmarc(resolver: Resolver, from_domain: str) -> DmarcRecord | None:
    """The policy at _dmarc.<from-domain>, else at _dmarc.<organisational domain>.

    Raises DnsTempError, or DmarcRecordError for a broken or duplicated record."""
    org = org_domain(from_domain)
    for domain in dict.fromkeys([from_domain, org]):
        txts = [t.decode("utf-8", "replace").strip() for t in await resolver.txt(f"_dmarc.{domain}")]
        # RFC 7489 6.6.3: only records starting exactly with v=DMARC1 count; others are ignored
        records = [t for t in txts if re.match(r"v\s*=\s*DMARC1\s*(;|$)", t)]
        if len(records) > 1:
            raise DmarcRecordError(f"_dmarc.{domain} publishes {len(records)} DMARC records")
        if records:
            return parse_dmarc(records[0], domain)
    return None


@dataclass
class DmarcLookup:
    """The From domains of a message and, for exactly one, its DMARC record or the error."""

    from_domains: set[str]
    record: DmarcRecord | None = None
    error: DnsTempError | DmarcRecordError | None = None


_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}


# --- The check -------------------------------------------------------------------------------

class AuthCheck(Check):
    name = "auth"
    family = "auth"
    symbols = SYMBOLS
    stage = 0
    needs_network = True

    def __init__(self, settings: AuthSettings, resolver: Resolver,
                 upstream_ids: frozenset[str] = frozenset()) -> None:
        self.settings = settings
        self.resolver = resolver
        self.timeout = settings.timeout
        # authserv-ids whose results the upstream_auth check believes (empty: none, or that
        # check is disabled, so this one always verifies).
        self.upstream_ids = upstream_ids

    def _skipped(self, env: Envelope) -> bool:
        return self.settings.skip_authenticated and (
            env.direction is not Direction.INBOUND or bool(env.auth_user))

    def _upstream(self, raw: bytes) -> str:
        """The trusted upstream whose results stand for ours, or "". Behind it our SPF
        would judge the upstream's address, and DMARC would be built on that."""
        if not self.upstream_ids:
            return ""
        up = read_authentication_results(raw, self.upstream_ids).upstream
        return up.authserv_id if up is not None else ""

    def start_early(self, raw: bytes, envelope: Envelope) -> asyncio.Future[Any] | None:
        # SPF needs only the envelope: its chain of look-ups (record, include, mx, the MX
        # host's address) runs while the message is parsed.
        if not self.settings.spf or not envelope.client_ip or self._skipped(envelope) \
                or self._upstream(raw):
            return None
        return asyncio.ensure_future(self._spf(envelope, asyncio.get_running_loop()))

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        env = msg.envelope
        s = self.settings
        early_spf = result.early.pop(self.name, None)
        if self._skipped(env):
            return  # our own user's mail: nothing to verify
        if self._upstream(msg.raw):
            # The trusted upstream's verdict stands for ours (the upstream_auth check).
            if early_spf is not None:
                early_spf.cancel()
            return
        loop = asyncio.get_running_loop()
        # The From domain's DMARC policy needs none of the other results: it is looked up
        # alongside SPF, DKIM and ARC, so the scan waits one DNS round trip less.
        policy = asyncio.ensure_future(self._dmarc_policy(msg)) if s.dmarc else None
        spf_task = early_spf or (self._spf(env, loop) if s.spf else _none())
        dkim_task = self._dkim(msg) if s.dkim_verify else _none()
        arc_task = self._arc(msg) if s.arc else _none()
        try:
            spf_out, dkim_out, arc_out = await asyncio.gather(spf_task, dkim_task, arc_task)
        except BaseException:
            if policy is not None:
                policy.cancel()
            raise
        clauses: list[str] = []
        auth_fail_score = 0.0
        if spf_out is not None:
            auth_fail_score += self._emit_spf(spf_out, result, clauses)
        if dkim_out is not None:
            auth_fail_score += self._emit_dkim(dkim_out, result, clauses)
        facts = AuthFacts(
            source="gateway",
            spf=spf_out.result if spf_out is not None else "none",
            spf_domain=spf_out.domain if spf_out is not None else "",
            spf_identity=spf_out.identity if spf_out is not None else "",
            dkim_pass=tuple(dict.fromkeys(o.domain for o in dkim_out or []
                                          if o.result == "pass")),
            # Only an outright fail: a DNS error or a missing key is no evidence of forgery.
            dkim_fail=tuple(dict.fromkeys(o.domain for o in dkim_out or []
                                          if o.result == "fail")),
            from_domain=msg.from_domain,
        )
        # SPF and DKIM are known now: should the check run out of time waiting for the
        # DMARC policy, later checks (an allow list) still see that SPF failed.
        result.facts.auth = facts
        dmarc_score, dmarc = 0.0, "none"
        if policy is not None:
            dmarc_score, dmarc = await self._dmarc(msg, await policy, spf_out, dkim_out,
                                                   result, clauses)
        if arc_out is not None and self._emit_arc(msg, arc_out, result, clauses,
                                                  auth_fail_score + dmarc_score):
            dmarc = "pass"  # a trusted sealer vouches for the From domain
        result.facts.auth = replace(facts, dmarc=dmarc, clauses=tuple(clauses))

    # SPF ------------------------------------------------------------------------------------

    async def _spf(self, env: Envelope,
                   loop: asyncio.AbstractEventLoop) -> SpfOutcome | None:
        if not env.client_ip:
            return None  # offline scan of a file: no client to authorise
        helo = (env.helo or "").strip().lower()
        sender = env.mail_from.strip().strip("<>")
        identity, domain = ("mailfrom", env.mail_from_domain) if sender else ("helo", helo)
        if not domain:
            return SpfOutcome("none", identity, domain, "no domain to check")
        wait = self.resolver.settings.lifetime + 1.0
        lookup = _spf_lookup_via(self.resolver, loop, wait,
                                 "AAAA" if ":" in env.client_ip else "A")
        budget = self.settings.spf_timeout
        try:
            res, exp = await asyncio.wait_for(
                loop.run_in_executor(_spf_pool(), _run_spf, env.client_ip, sender, helo,
                                     lookup, budget),
                timeout=budget + 1.0)
        except asyncio.TimeoutError:
            return SpfOutcome("temperror", identity, domain,
                              f"SPF evaluation took longer than {budget:g}s", env.client_ip)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # pyspf on input it did not expect: judged, not crashed on
            return SpfOutcome("permerror", identity, domain,
                              f"{type(exc).__name__}: {exc}", env.client_ip)
        return SpfOutcome(res, identity, domain, exp, env.client_ip)

    def _emit_spf(self, out: SpfOutcome, result: ScanResult, clauses: list[str]) -> float:
        who = f"{out.domain}" + (" (HELO)" if out.identity == "helo" else "")
        reasons = {
            "pass": f"{who} authorises {out.ip} by SPF",
            "fail": f"{who} SPF forbids {out.ip}: {out.explanation}",
            "softfail": f"{who} SPF says {out.ip} is probably not authorised (~all)",
            "neutral": f"{who} SPF makes no statement about {out.ip} (?all)",
            "none": f"{who} publishes no SPF record",
            "temperror": f"SPF for {who} could not be checked: {out.explanation}",
            "permerror": f"SPF record of {who} is broken: {out.explanation}",
        }
        name = f"SPF_{out.result.upper()}"
        if name not in SYMBOLS:
            name, out.result = "SPF_PERMERROR", "permerror"
        sym = result.add(name, reason=reasons[out.result][:300], options=(out.domain,))
        prop = "smtp.helo" if out.identity == "helo" else "smtp.mailfrom"
        clauses.append(f"spf={out.result} {prop}={out.domain}")
        return max(sym.score, 0.0)

    # DKIM -----------------------------------------------------------------------------------

    async def _dkim(self, msg: ParsedMessage) -> list[DkimOutcome]:
        sigs = msg.header_all("dkim-signature")[: self.settings.dkim_max_signatures]
        if not sigs:
            return []
        names = {_key_name(_tags(v.encode("utf-8", "replace"))) for v in sigs} - {""}
        keys = await _fetch_keys(self.resolver, names)
        return await asyncio.to_thread(_verify_dkim_sync, msg.raw,
                                       self.settings.dkim_max_signatures, keys,
                                       self.settings.dkim_min_key_bits)

    def _emit_dkim(self, outs: list[DkimOutcome], result: ScanResult,
                   clauses: list[str]) -> float:
        if not outs:
            result.add("DKIM_NONE", reason="the message carries no DKIM signature")
            clauses.append("dkim=none")
            return 0.0
        for o in outs:
            clauses.append(f"dkim={o.result} header.d={o.domain} header.s={o.selector}")
        passed = [o for o in outs if o.result == "pass"]
        if passed:
            doms = ", ".join(dict.fromkeys(o.domain for o in passed))
            result.add("DKIM_PASS", reason=f"valid DKIM signature by {doms}",
                       options=tuple(o.domain for o in passed))
            return 0.0
        score = 0.0
        for kind, symbol, text in (("fail", "DKIM_FAIL", "DKIM signature by {d} does not "
                                    "verify: {r}"),
                                   ("temperror", "DKIM_TEMPERROR", "DKIM key of {d} could "
                                    "not be fetched: {r}"),
                                   ("permerror", "DKIM_PERMERROR", "DKIM signature by {d} "
                                    "cannot be checked: {r}")):
            group = [o for o in outs if o.result == kind]
            if group:
                doms = ", ".join(dict.fromkeys(o.domain for o in group))
                sym = result.add(symbol, reason=text.format(d=doms, r=group[0].reason)[:300],
                                 options=tuple(o.domain for o in group))
                score += max(sym.score, 0.0)
        return score

    # ARC ------------------------------------------------------------------------------------

    async def _arc(self, msg: ParsedMessage) -> ArcOutcome:
        values = msg.header_all("arc-seal") + msg.header_all("arc-message-signature")
        if not values:
            return ArcOutcome("none", "no ARC headers")
        names = {_key_name(_tags(v.encode("utf-8", "replace"))) for v in values} - {""}
        keys = await _fetch_keys(self.resolver, names)
        return await asyncio.to_thread(_verify_arc_sync, msg.raw, keys,
                                       self.settings.dkim_min_key_bits)

    def _trusted(self, sealer: str) -> bool:
        return any(sealer == t.lower() or sealer.endswith("." + t.lower())
                   for t in self.settings.trusted_arc_sealers)

    def _emit_arc(self, msg: ParsedMessage, out: ArcOutcome, result: ScanResult,
                  clauses: list[str], failure_score: float) -> bool:
        """Emits the ARC symbols; True when a trusted sealer's pass offsets a local failure
        (DMARC then counts as passed)."""
        if out.result == "none":
            result.add("ARC_NA", reason="the message carries no ARC headers")
            clauses.append("arc=none")
            return False
        if out.result == "temperror":
            result.add("ARC_TEMPERROR", reason=f"ARC keys could not be fetched: {out.reason}"[:300])
            clauses.append("arc=temperror")
            return False
        if out.result == "fail":
            result.add("ARC_FAIL", reason=f"ARC chain ({out.instances} sets, last sealed by "
                       f"{out.sealer or 'unknown'}) does not verify: {out.reason}"[:300])
            clauses.append("arc=fail")
            return False
        result.add("ARC_PASS", reason=f"ARC chain of {out.instances} set(s) verifies, last "
                   f"sealed by {out.sealer}", options=(out.sealer,))
        clauses.append("arc=pass")
        if failure_score <= 0 or not self._trusted(out.sealer):
            return False
        saw = self._sealer_saw_pass(out.aar, msg.from_domain)
        if not saw:
            return False
        result.add("ARC_TRUSTED_OVERRIDE", factor=failure_score,
                   reason=f"trusted ARC sealer {out.sealer} saw {saw} before the message "
                   f"was forwarded; the local authentication failure is offset",
                   options=(out.sealer,))
        return True

    @staticmethod
    def _sealer_saw_pass(aar: str, from_domain: str) -> str:
        """What in the sealer's results vouches for the From domain, or "".

        A dmarc=pass is the best evidence; an aligned dkim or spf pass is DMARC's own test."""
        found: dict[str, str] = {}
        for method, res, props in _aar_clauses(aar):
            if res != "pass" or method in found:
                continue
            if method == "dmarc" and aligned(props.get("header.from", from_domain),
                                             from_domain, "r"):
                found[method] = f"dmarc=pass for {from_domain}"
            elif method == "dkim" and aligned(props.get("header.d", ""), from_domain, "r"):
                found[method] = f"an aligned dkim=pass by {props['header.d']}"
            elif method == "spf" and aligned(
                    props.get("smtp.mailfrom", "").rsplit("@", 1)[-1], from_domain, "r"):
                found[method] = f"an aligned spf=pass for {props['smtp.mailfrom']}"
        return next((found[m] for m in ("dmarc", "dkim", "spf") if m in found), "")

    # DMARC ----------------------------------------------------------------------------------

    async def _dmarc_policy(self, msg: ParsedMessage) -> DmarcLookup:
        from_domains = {a.domain for a in msg.from_ if a.domain}
        if len(from_domains) != 1:
            return DmarcLookup(from_domains)
        try:
            return DmarcLookup(from_domains, await discover_dmarc(self.resolver, *from_domains))
        except (DnsTempError, DmarcRecordError) as exc:
            return DmarcLookup(from_domains, error=exc)

    async def _dmarc(self, msg: ParsedMessage, lookup: DmarcLookup, spf_out: SpfOutcome | None,
                     dkim_out: list[DkimOutcome] | None, result: ScanResult,
                     clauses: list[str]) -> tuple[float, str]:
        """Emits the DMARC symbol; (its failure score, the result: pass | fail | none)."""
        from_domains = set(lookup.from_domains)
        if len(from_domains) != 1:
            why = "no From domain" if not from_domains else \
                f"several From domains ({', '.join(sorted(from_domains))})"
            result.add("DMARC_NA", reason=f"DMARC not applied: {why}")
            return 0.0, "none"
        from_domain = from_domains.pop()
        rec, exc = lookup.record, lookup.error
        if isinstance(exc, DnsTempError):
            result.add("DMARC_TEMPERROR", reason=f"DMARC policy of {from_domain} could not be "
                       f"fetched: {exc}"[:300])
            clauses.append(f"dmarc=temperror header.from={from_domain}")
            return 0.0, "none"
        if exc is not None:
            result.add("DMARC_PERMERROR", reason=str(exc)[:300])
            clauses.append(f"dmarc=permerror header.from={from_domain}")
            return 0.0, "none"
        if rec is None:
            result.add("DMARC_NA", reason=f"{from_domain} publishes no DMARC policy")
            clauses.append(f"dmarc=none header.from={from_domain}")
            return 0.0, "none"
        dkim_aligned = [o.domain for o in dkim_out or []
                        if o.result == "pass" and aligned(o.domain, from_domain, rec.adkim)]
        spf_aligned = (spf_out is not None and spf_out.result == "pass"
                       and aligned(spf_out.domain, from_domain, rec.aspf))
        if dkim_aligned or spf_aligned:
            via = f"DKIM d={dkim_aligned[0]}" if dkim_aligned else f"SPF for {spf_out.domain}"  # type: ignore[union-attr]
            result.add("DMARC_PASS", reason=f"{from_domain} is authenticated by an aligned "
                       f"{via}", options=(from_domain,))
            clauses.append(f"dmarc=pass header.from={from_domain}")
            return 0.0, "pass"
        temp = (spf_out is not None and spf_out.result == "temperror") or any(
            o.result == "temperror" for o in dkim_out or [])
        if temp:
            result.add("DMARC_TEMPERROR", reason=f"DMARC for {from_domain} is undecided: SPF "
                       "or DKIM hit a temporary DNS failure")
            clauses.append(f"dmarc=temperror header.from={from_domain}")
            return 0.0, "none"
        if spf_out is None and not dkim_aligned and self.settings.spf:
            # No client IP (offline scan of a file): SPF might have passed, so "fail" would
            # be a guess.
            result.add("DMARC_NA", reason=f"DMARC for {from_domain} not decided: no client "
                       "IP for SPF and no aligned DKIM signature")
            return 0.0, "none"
        policy = rec.sp if rec.domain != from_domain else rec.p
        applied = policy
        if rec.pct < 100 and not _sampled(msg, rec.pct):
            applied = _DOWNGRADE[policy]
        why = _dmarc_fail_reason(from_domain, spf_out, dkim_out or [])
        note = "" if applied == policy else f" (pct={rec.pct}: applied as p={applied})"
        sym = result.add(f"DMARC_POLICY_{applied.upper()}",
                         reason=f"DMARC fails for {from_domain}: {why}; its policy is "
                         f"p={policy}{note}"[:300], options=(from_domain, policy))
        clauses.append(f"dmarc=fail (p={policy}) header.from={from_domain}")
        return max(sym.score, 0.0), "fail"

    async def close(self) -> None:
        return None


def _sampled(msg: ParsedMessage, pct: int) -> bool:
    # Deterministic per message, so a re-scan gives the same verdict.
    seed = (msg.message_id or msg.raw[:2048].decode("latin-1")).encode("utf-8", "replace")
    return int(hashlib.sha256(seed).hexdigest()[:8], 16) % 100 < pct


def _dmarc_fail_reason(from_domain: str, spf_out: SpfOutcome | None,
                       dkim_out: list[DkimOutcome]) -> str:
    parts = []
    if spf_out is not None:
        parts.append(f"SPF {spf_out.result} for {spf_out.domain or 'no domain'}")
    if dkim_out:
        parts.append("DKIM " + ", ".join(f"{o.result} by {o.domain}" for o in dkim_out))
    else:
        parts.append("no DKIM signature")
    return "no aligned pass (" + "; ".join(parts) + ")"


async def _none() -> None:
    return None


def authentication_results_header(authserv_id: str, auth: AuthFacts | None) -> str | None:
    """The Authentication-Results value the gateway adds to delivered mail (RFC 8601), or
    None when the auth check did not verify the message (`result.facts.auth`). The gateway
    should first remove any Authentication-Results claiming our authserv_id that arrived
    with the message."""
    clauses = auth.clauses if auth is not None else None
    if not clauses:
        return None
    return f"{authserv_id}; " + ";\r\n\t".join(clauses)


def shared_resolver(ctx: BuildContext) -> Resolver:
    """One cached resolver per pipeline, shared by the auth and reputation families."""
    res = ctx.extras.get("dns_resolver")
    if res is None:
        res = Resolver.from_config(ctx.config)
        ctx.extras["dns_resolver"] = res
    return res


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("auth", AuthSettings)
    if not settings.enabled:
        return []
    upstream = kept_authserv_ids(settings.trusted_authserv_ids, ctx.config.smtp.hostname)
    if not upstream:
        return [AuthCheck(settings, shared_resolver(ctx))]
    # Built here rather than as a family of its own: it shares [auth] and AUTH_FAIL, and
    # the auth check must know whether it runs (disabled, the auth check verifies again).
    check = UpstreamAuthCheck(upstream, settings.skip_authenticated)
    defer_to = frozenset() if ctx.disabled(check.name) else upstream
    return [AuthCheck(settings, shared_resolver(ctx), defer_to), check]
