"""Check `upstream_auth` (family `auth`): believe a trusted upstream's Authentication-Results.

Behind Microsoft 365, Gmail, Coremail or any MTA that verified SPF, DKIM and DMARC before
the gateway, our own SPF sees the upstream's address instead of the sender's, and our DMARC
is built on that. The upstream wrote its verdict in an `Authentication-Results` field
(RFC 8601). This check reads it for the authserv-ids listed in `[auth]
trusted_authserv_ids`, and only those, as SpamAssassin's `authres_trusted_authserv` does:

- Only the topmost field carrying a trusted authserv-id counts. The upstream adds its field
  on top of what it received, so any field below it, one with the same authserv-id
  included, may have been written by the sender.
- A field of any other authserv-id is never believed (`UPSTREAM_UNTRUSTED_AUTHRES`, weight
  0), and delivery removes it (`mailmoat.policy.headers.rewrite_for_delivery`).
- Fields are read from the raw header block with the delivery rewrite's own splitter and
  authserv-id reading, so what the scan believes is exactly what delivery keeps; decoded
  header values (RFC 2047) could make the two disagree.
- A field the `authres` library cannot parse is ignored with a reason
  (`UPSTREAM_AUTHRES_UNUSABLE`), never raised on.

It needs no network, so it also runs in the offline `mailmoat scan`. Its verdict becomes
`result.facts.auth` (source `upstream:<authserv-id>`), the same record the `auth` check
writes, without `clauses`: the gateway verified nothing, so it adds no field of its own. When a trusted upstream's results are present, the `auth` check does not verify the message
itself (see `AuthCheck.run`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import authres

from mailmoat.domains import org_domain
from mailmoat.message.model import Direction, Envelope, ParsedMessage, domain_of
from mailmoat.policy.headers import authserv_id, split_header_block
from mailmoat.scan.base import Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts

__all__ = ["Reading", "UpstreamAuthCheck", "UpstreamResults", "read_authentication_results",
           "upstream_facts"]

_G = "auth"

SYMBOLS: dict[str, SymbolSpec] = {
    "UPSTREAM_DMARC_PASS": SymbolSpec(
        -1.0, "A trusted upstream's Authentication-Results say DMARC passed for the From "
        "domain.", Category.CLEAN, _G),
    "UPSTREAM_DMARC_FAIL": SymbolSpec(
        6.0, "A trusted upstream's Authentication-Results say DMARC failed, and that the "
        "From domain asks receivers to quarantine or reject such mail.", Category.PHISHING,
        _G),
    "UPSTREAM_DMARC_FAIL_UNENFORCED": SymbolSpec(
        1.5, "A trusted upstream's Authentication-Results say DMARC failed, without showing "
        "a quarantine or reject policy (p=none, or the policy is not stated).",
        Category.PHISHING, _G),
    "UPSTREAM_AUTH_PASS": SymbolSpec(
        -0.5, "A trusted upstream's Authentication-Results show a DKIM or SPF pass aligned "
        "with the From domain, without a DMARC result.", Category.CLEAN, _G),
    "UPSTREAM_SPF_FAIL": SymbolSpec(
        3.0, "A trusted upstream's Authentication-Results say the sender domain's SPF "
        "record forbids the address the mail came from.", Category.PHISHING, _G),
    "UPSTREAM_DKIM_FAIL": SymbolSpec(
        2.0, "A trusted upstream's Authentication-Results say a DKIM signature did not "
        "verify, and none did.", Category.PHISHING, _G),
    "UPSTREAM_UNTRUSTED_AUTHRES": SymbolSpec(
        0.0, "The message carries Authentication-Results of authserv-ids nobody trusts; "
        "they were ignored and are removed on delivery.", Category.POLICY, _G),
    "UPSTREAM_AUTHRES_UNUSABLE": SymbolSpec(
        0.0, "A trusted upstream's Authentication-Results could not be used (unreadable, or "
        "about another From domain); the gateway judged the message without them.",
        Category.POLICY, _G),
}

# authres re-scans the remaining text for every token: a hostile field of a few hundred
# kilobytes would cost seconds. Real ones (Gmail, Microsoft 365) are under 2 KB.
_MAX_FIELD = 4096
_SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror",
                          "permerror"})
# authres drops comments and unknown properties, where Gmail ("dmarc=fail (p=REJECT
# sp=REJECT dis=REJECT)") and Microsoft 365 ("dmarc=fail action=oreject") state the policy;
# RFC 7489 registers policy.published-domain-policy for it. Read from the raw clause.
_DMARC_FAIL = re.compile(r"(?:^|;)\s*dmarc\s*=\s*fail\b([^;]*)", re.I)
_POLICY = re.compile(r"policy\.published-domain-policy\s*=\s*\"?(reject|quarantine|none)\b"
                     r"|\(\s*p\s*=\s*(reject|quarantine|none)\b"
                     r"|\baction\s*=\s*\"?(?:o\.?|pct\.)?(reject|quarantine|none)\b", re.I)


@dataclass(frozen=True)
class Clause:
    """One resinfo of an Authentication-Results field: `dkim=pass header.d=example.com`."""

    method: str  # lower-cased
    result: str  # lower-cased
    props: Mapping[str, str]  # "header.d" -> "example.com"; keys lower-cased


@dataclass(frozen=True)
class UpstreamResults:
    """The topmost trusted Authentication-Results field, parsed."""

    authserv_id: str
    clauses: tuple[Clause, ...]
    dmarc_policy: str  # of a dmarc=fail: "reject" | "quarantine" | "none" | "" (not stated)

    def first(self, method: str) -> Clause | None:
        return next((c for c in self.clauses if c.method == method), None)

    def all(self, method: str) -> list[Clause]:
        return [c for c in self.clauses if c.method == method]


@dataclass(frozen=True)
class Reading:
    """What a message's Authentication-Results fields say, for a set of trusted ids."""

    upstream: UpstreamResults | None = None
    unusable: str = ""  # why the topmost trusted field was ignored; "" if it was not
    untrusted: tuple[str, ...] = ()  # authserv-ids of the fields nobody trusts


def read_authentication_results(raw: bytes, trusted: frozenset[str]) -> Reading:
    """Find the topmost Authentication-Results field of a trusted authserv-id and parse it;
    list the authserv-ids of the untrusted ones. Never raises.

    `trusted` comes from `mailmoat.policy.headers.kept_authserv_ids`: the ids delivery
    keeps, so nothing is believed that delivery would remove."""
    top: tuple[str, bytes] | None = None
    untrusted: list[str] = []
    for f in split_header_block(raw)[1]:
        if f.lname != b"authentication-results":
            continue
        aid = authserv_id(f.value)
        if aid not in trusted:
            untrusted.append(aid or "(none)")
        elif top is None:
            top = (aid, f.value)
    others = tuple(dict.fromkeys(untrusted))
    if top is None:
        return Reading(untrusted=others)
    aid, value = top
    text = value.decode("utf-8", "replace").strip()
    if len(text) > _MAX_FIELD:
        return Reading(unusable=f"the field of {aid} is {len(text)} characters long",
                       untrusted=others)
    try:
        clauses = _parse(text)
    except Exception as exc:  # authres on hostile input (nesting: RecursionError): ignored
        return Reading(unusable=f"the field of {aid} does not parse: {exc}"[:200],
                       untrusted=others)
    m = _DMARC_FAIL.search(text)
    hint = _POLICY.search(m.group(1)) if m else None
    policy = next((g for g in hint.groups() if g), "").lower() if hint else ""
    return Reading(upstream=UpstreamResults(aid, clauses, policy), untrusted=others)


@lru_cache(maxsize=256)
def _parse(text: str) -> tuple[Clause, ...]:
    # Cached: the auth check asks too, before and after the parse, for the same field.
    header = authres.AuthenticationResultsHeader.parse_value(text)
    return tuple(
        Clause(r.method.lower(), str(r.result).lower(),
               {f"{p.type}.{p.name}".lower(): str(p.value) for p in r.properties})
        for r in header.results)


def _domain(value: str) -> str:
    """A property value as a domain: `user@example.com`, `@example.com`, `example.com`."""
    value = value.strip().strip('"')
    return (domain_of(value) if "@" in value else value).lower().rstrip(".")


def _dkim_domain(c: Clause) -> str:
    return _domain(c.props.get("header.d") or c.props.get("header.i", ""))


def _spf_result(c: Clause | None) -> str:
    if c is None:
        return "none"
    if c.result == "hardfail":  # what some older servers write for fail
        return "fail"
    return c.result if c.result in _SPF_RESULTS else "none"  # unknown: says nothing


def _spf_identity(c: Clause | None) -> tuple[str, str]:
    """("mailfrom" | "helo", domain) the SPF clause spoke for."""
    if c is None:
        return "mailfrom", ""
    if c.props.get("smtp.mailfrom"):
        return "mailfrom", _domain(c.props["smtp.mailfrom"])
    return "helo", _domain(c.props.get("smtp.helo", ""))


def _dmarc_applies(c: Clause, from_domain: str) -> bool:
    """Does the DMARC clause speak for this message's From domain? A header.from naming
    another one means the upstream read another From than we do."""
    named = _domain(c.props.get("header.from", ""))
    return bool(from_domain) and named in ("", from_domain)


def upstream_facts(up: UpstreamResults, from_domain: str) -> AuthFacts:
    spf = up.first("spf")
    spf_identity, spf_domain = _spf_identity(spf)
    dkim = up.all("dkim")
    dmarc = up.first("dmarc")
    dmarc_result = "none"
    if dmarc is not None and dmarc.result in ("pass", "fail") \
            and _dmarc_applies(dmarc, from_domain):
        dmarc_result = dmarc.result
    return AuthFacts(
        source=f"upstream:{up.authserv_id}",
        spf=_spf_result(spf),
        spf_domain=spf_domain,
        spf_identity=spf_identity,
        dkim_pass=tuple(dict.fromkeys(d for c in dkim if c.result == "pass"
                                      if (d := _dkim_domain(c)))),
        # Only an outright fail: Gmail's "neutral" (body hash did not verify) and errors are
        # no evidence of forgery, as in the gateway's own facts.
        dkim_fail=tuple(dict.fromkeys(d for c in dkim if c.result == "fail"
                                      if (d := _dkim_domain(c)))),
        dmarc=dmarc_result,
        from_domain=from_domain,
    )


class UpstreamAuthCheck(Check):
    """Stage 0 like the `auth` check: both decide from the same pure reading of the headers
    (`read_authentication_results`), so neither waits for the other; the `auth` check stands
    aside when this one has a trusted upstream's results (its SPF would judge the upstream's
    address). Overriding the gateway's symbols from a later stage instead would mean taking
    symbols back."""

    name = "upstream_auth"
    family = "auth"
    symbols = SYMBOLS
    stage = 0
    needs_network = False
    timeout = 2.0

    def __init__(self, trusted: frozenset[str], skip_authenticated: bool = True) -> None:
        self.trusted = trusted
        self.skip_authenticated = skip_authenticated

    def _skipped(self, env: Envelope) -> bool:
        # The same rule as the auth check: mail of our own users is not authenticated.
        return self.skip_authenticated and (
            env.direction is not Direction.INBOUND or bool(env.auth_user))

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        if self._skipped(msg.envelope):
            return
        reading = read_authentication_results(msg.raw, self.trusted)
        if reading.untrusted:
            ids = ", ".join(reading.untrusted[:5])
            result.add("UPSTREAM_UNTRUSTED_AUTHRES",
                       reason=f"Authentication-Results of {ids} (not a trusted upstream) "
                       "ignored"[:300], options=reading.untrusted[:5])
        if reading.unusable:
            result.add("UPSTREAM_AUTHRES_UNUSABLE", reason=f"trusted upstream's "
                       f"Authentication-Results ignored: {reading.unusable}"[:300])
        if reading.upstream is None:
            return
        up = reading.upstream
        facts = upstream_facts(up, msg.from_domain)
        result.facts.auth = facts
        self._emit(up, facts, result)

    @staticmethod
    def _emit(up: UpstreamResults, facts: AuthFacts, result: ScanResult) -> None:
        who = f"Authentication-Results of {up.authserv_id} (trusted upstream)"
        frm = facts.from_domain or "no From domain"
        dmarc = up.first("dmarc")
        if dmarc is not None and dmarc.result in ("pass", "fail") and facts.dmarc == "none":
            result.add("UPSTREAM_AUTHRES_UNUSABLE", reason=f"{who}: dmarc={dmarc.result} for "
                       f"{dmarc.props.get('header.from', '')} does not apply to this message's "
                       f"From domain ({frm})"[:300])
        if facts.dmarc == "pass":
            result.add("UPSTREAM_DMARC_PASS", reason=f"{who}: dmarc=pass for {frm}",
                       options=(up.authserv_id, frm))
        elif facts.dmarc == "fail":
            enforced = up.dmarc_policy in ("quarantine", "reject")
            policy = f"policy {up.dmarc_policy}" if up.dmarc_policy else "policy not stated"
            result.add("UPSTREAM_DMARC_FAIL" if enforced else "UPSTREAM_DMARC_FAIL_UNENFORCED",
                       reason=f"{who}: dmarc=fail for {frm} ({policy})",
                       options=(up.authserv_id, frm))
        elif facts.aligned():
            target = org_domain(facts.from_domain)
            via = ", ".join(f"dkim=pass by {d}" for d in facts.dkim_pass
                            if org_domain(d) == target) or f"spf=pass for {facts.spf_domain}"
            result.add("UPSTREAM_AUTH_PASS", reason=f"{who}: {via}, aligned with {frm}"[:300],
                       options=(up.authserv_id, frm))
        if facts.spf == "fail":
            result.add("UPSTREAM_SPF_FAIL", reason=f"{who}: spf=fail for "
                       f"{facts.spf_domain or 'no domain'}", options=(up.authserv_id,))
        if facts.dkim_fail and not facts.dkim_pass:
            result.add("UPSTREAM_DKIM_FAIL", reason=f"{who}: dkim=fail for "
                       f"{', '.join(facts.dkim_fail)}"[:300], options=(up.authserv_id,))
