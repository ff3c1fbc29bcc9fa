"""Internal policy rules: `[[internal.rules]]`, conditions on our own senders' mail and an
action, checked for every internal and outbound message after the behaviour signals.

    [internal]
    groups = { finance = ["*@finance.example.test", "cfo@example.test"] }

    [[internal.rules]]
    name = "no-cards-outside"
    recipients = "external"
    detectors = { card = 1 }
    action = "hold"

Every condition a rule sets must hold (an empty one is no condition); a list condition
holds when any of its entries does. A matching rule adds the symbol INTERNAL_RULE with a
reason that names the rule and what matched ("rule 'no-cards-outside': 3 payment card
numbers (Luhn-valid) to 2 external recipients"), scored `score` like any other symbol,
and its action applies: tag (the symbol only), copy (delivered, and a copy to `[internal]
review_copy_to`), alert (an incident and the alerts too),
hold (the message is quarantined), reject (refused with 550), throttle or suspend (the
account is restricted as by `[internal] action`, with an incident and the alerts).

The same rules are editable in the console (a policy version, `web.policy_store`): they
replace the file's rules while that version is in force.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailmoat.internal.dlp import DETECTORS

RuleAction = Literal["tag", "copy", "alert", "hold", "reject", "throttle", "suspend"]
Recipients = Literal["any", "internal", "external"]
CategoryName = Literal["clean", "bulk", "spam", "phishing", "malware", "bec", "policy"]
MAX_RULES = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}")
_SYMBOL = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
# Strength of an action, to pick one when several rules match.
SEVERITY = {"tag": 0, "copy": 1, "alert": 2, "hold": 3, "throttle": 4, "suspend": 5,
            "reject": 6}


def address_patterns(values: list[str], what: str) -> list[str]:
    out = []
    for v in values:
        v = v.strip().lower()
        if not v:
            continue
        if " " in v or "@" not in v.lstrip("@") and not v.startswith("@") and "*" not in v:
            raise ValueError(f"{what} entry {v!r} is not an address, @domain or pattern "
                             "(e.g. *@finance.example.test)")
        out.append(v)
    return out


def pattern_matches(pattern: str, address: str) -> bool:
    """`a@x` exactly, `@x` any address at x or below it, or a shell pattern (`*@x`)."""
    if pattern.startswith("@"):
        domain = address.rpartition("@")[2]
        return domain == pattern[1:] or domain.endswith("." + pattern[1:])
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(address, pattern)
    return address == pattern


class InternalRule(BaseModel):
    """One `[[internal.rules]]` table (a plain model, not a Section: it lives inside one)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="unique; the symbol's reason names it")
    description: str = Field("", max_length=500, description="what the rule is for")
    enabled: bool = True
    accounts: list[str] = Field(
        default_factory=list, description="sending accounts: addresses, @domains or "
        "patterns (*@finance.example.test)")
    except_accounts: list[str] = Field(
        default_factory=list, description="accounts the rule never applies to")
    senders: list[str] = Field(
        default_factory=list, description="From header addresses, as for accounts")
    groups: list[str] = Field(
        default_factory=list, description="groups of [internal] groups or groups_file the "
        "account is in (any)")
    direction: list[Literal["internal", "outbound"]] = Field(
        default_factory=list, description="internal (all recipients ours) or outbound "
        "(some outside); empty: both")
    recipients: Recipients = Field(
        "any", description="which recipients count: any, internal (ours) or external")
    recipient_domains: list[str] = Field(
        default_factory=list, description="only recipients in these domains (or below) count")
    min_recipients: int = Field(
        1, ge=1, le=1_000_000, description="at least this many recipients that count")
    signals: list[str] = Field(
        default_factory=list, description="symbols of which one must be on the message "
        "(INTERNAL_BURST, PHISH_…, any check's)")
    categories: list[CategoryName] = Field(
        default_factory=list, description="the other checks' verdict on the content")
    min_score: float | None = Field(
        None, description="the message's score from the other checks at least this")
    attachment_types: list[str] = Field(
        default_factory=list, description="attachment extensions (pdf, xlsx, zip), any")
    detectors: dict[str, int] = Field(
        default_factory=dict, description="data-loss detectors and the distinct numbers "
        "each must find: card, iban, cn_id, ssn (any one reaching its count)")
    action: RuleAction = Field("tag", description="tag | copy | alert | hold | reject | "
                               "throttle | suspend")
    score: float = Field(5.0, ge=-100, le=100, description="the INTERNAL_RULE symbol's score")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not _NAME.fullmatch(v):
            raise ValueError(f"rule name {v!r}: 1-64 letters, digits, spaces, _ . : -")
        return v

    @field_validator("accounts", "except_accounts", "senders")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        return address_patterns(v, "an account or sender")

    @field_validator("recipient_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            d = d.strip().lower().lstrip("@")
            if d and ("." not in d or any(c in d for c in " @/*")):
                raise ValueError(f"not a domain: {d!r}")
            if d:
                out.append(d)
        return out

    @field_validator("signals")
    @classmethod
    def _signals(cls, v: list[str]) -> list[str]:
        for s in v:
            if not _SYMBOL.fullmatch(s):
                raise ValueError(f"not a symbol name: {s!r} (e.g. INTERNAL_BURST)")
        return v

    @field_validator("attachment_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        return [t.strip().lower().lstrip(".") for t in v if t.strip()]

    @field_validator("detectors")
    @classmethod
    def _counts(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in DETECTORS:
                import difflib

                near = difflib.get_close_matches(k, DETECTORS, n=1, cutoff=0.5)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"no detector {k!r}{hint}: card, iban, cn_id or ssn")
            if not 1 <= n <= 1_000_000:
                raise ValueError(f"detector {k} needs a count from 1, not {n}")
        return v

    @model_validator(mode="after")
    def _some_condition(self) -> InternalRule:
        if not (self.accounts or self.senders or self.groups or self.direction
                or self.recipients != "any" or self.recipient_domains
                or self.min_recipients > 1 or self.signals or self.categories
                or self.min_score is not None or self.attachment_types or self.detectors):
            raise ValueError(f"rule {self.name!r} has no condition: it would match all mail")
        return self


def check_rules(rules: list[InternalRule], groups: Mapping[str, list[str]] | None) -> None:
    """Across rules: names unique; groups named (when the groups are all known here: not
    with a groups file, read when the check starts); signals declared by some check."""
    seen: set[str] = set()
    for r in rules:
        if r.name.lower() in seen:
            raise ValueError(f"two rules are named {r.name!r}")
        seen.add(r.name.lower())
        if groups is not None:
            for g in r.groups:
                if g not in groups:
                    from mailmoat.config import _closest

                    near = _closest(g, list(groups))
                    hint = f" (did you mean {near!r}?)" if near else ""
                    raise ValueError(f"rule {r.name!r}: no group {g!r} in [internal] "
                                     f"groups{hint}")
    wanted = {s for r in rules for s in r.signals}
    if wanted:
        from mailmoat.config import _closest, known_symbols

        known = sorted(known_symbols())
        for r in rules:
            for s in r.signals:
                if s not in known:
                    near = _closest(s, known) or _closest(s, known, cutoff=0.3)
                    hint = f" (did you mean {near}?)" if near else ""
                    raise ValueError(f"rule {r.name!r}: no check declares the symbol "
                                     f"{s}{hint}")


def read_groups_file(path: Path) -> dict[str, list[str]]:
    """`group: member, member …` lines (members: addresses, @domains, patterns); `#`
    comments. A group on several lines has all their members."""
    groups: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, members = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"{path} line {n}: expected `group: member, member`")
        groups.setdefault(name.strip(), []).extend(
            address_patterns(re.split(r"[,\s]+", members), f"group {name.strip()!r}"))
    return groups


def groups_of(account: str, groups: Mapping[str, Iterable[str]]) -> list[str]:
    return [g for g, members in groups.items()
            if any(pattern_matches(p, account) for p in members)]


@dataclass(frozen=True)
class Subject:
    """What a rule's conditions are checked against, for one message."""

    account: str
    sender: str  # From header address
    groups: tuple[str, ...]
    direction: str  # internal | outbound
    recipients: tuple[str, ...]  # envelope, lower-case
    internal_domains: frozenset[str]
    symbols: frozenset[str]
    category: str
    score: float
    attachment_types: frozenset[str]


@dataclass(frozen=True)
class Match:
    rule: InternalRule
    reason: str


def _internal(rcpt: str, internal_domains: frozenset[str]) -> bool:
    return rcpt.rpartition("@")[2] in internal_domains


def counted_recipients(rule: InternalRule, s: Subject) -> list[str]:
    out = []
    for r in s.recipients:
        inside = _internal(r, s.internal_domains)
        if rule.recipients == "internal" and not inside:
            continue
        if rule.recipients == "external" and inside:
            continue
        if rule.recipient_domains and not any(
                pattern_matches("@" + d, r) for d in rule.recipient_domains):
            continue
        out.append(r)
    return out


def matches_before_content(rule: InternalRule, s: Subject) -> list[str] | None:
    """The recipients that count when every condition but the detectors holds, else None."""
    if not rule.enabled:
        return None
    if rule.accounts and not any(pattern_matches(p, s.account) for p in rule.accounts):
        return None
    if any(pattern_matches(p, s.account) for p in rule.except_accounts):
        return None
    if rule.senders and not any(pattern_matches(p, s.sender) for p in rule.senders):
        return None
    if rule.groups and not set(rule.groups) & set(s.groups):
        return None
    if rule.direction and s.direction not in rule.direction:
        return None
    if rule.signals and not set(rule.signals) & s.symbols:
        return None
    if rule.categories and s.category not in rule.categories:
        return None
    if rule.min_score is not None and s.score < rule.min_score:
        return None
    if rule.attachment_types and not set(rule.attachment_types) & s.attachment_types:
        return None
    rcpts = counted_recipients(rule, s)
    if len(rcpts) < rule.min_recipients:
        return None
    return rcpts


def describe_match(rule: InternalRule, s: Subject, rcpts: list[str],
                   found: Mapping[str, object]) -> str:
    """"rule 'no-cards-outside': 3 payment card numbers (Luhn-valid) to 2 external
    recipients" — what matched, never the numbers themselves."""
    what: list[str] = []
    for d in rule.detectors:
        f = found.get(d)
        if f is not None and getattr(f, "count", 0) >= rule.detectors[d]:
            what.append(f.describe())  # type: ignore[attr-defined]
    if rule.signals:
        what.append("with " + ", ".join(sorted(set(rule.signals) & s.symbols)))
    if rule.categories:
        what.append(f"judged {s.category}")
    if rule.min_score is not None:
        what.append(f"score {s.score:g}")
    if rule.attachment_types:
        what.append("." + ", .".join(sorted(set(rule.attachment_types) & s.attachment_types))
                    + " attachments")
    head = " and ".join(what[:1]) + "".join(f", {w}" for w in what[1:]) if what else "mail"
    kind = {"any": "", "internal": "internal ", "external": "external "}[rule.recipients]
    n = len(rcpts)
    to = f"to {n} {kind}recipient{'s' if n != 1 else ''}"
    if rule.recipient_domains:
        domains = sorted({r.rpartition("@")[2] for r in rcpts})
        to += f" at {', '.join(domains[:3])}" + ("…" if len(domains) > 3 else "")
    who = []
    if rule.groups:
        who.append(f"group {', '.join(sorted(set(rule.groups) & set(s.groups)))}")
    if rule.accounts or rule.senders:
        who.append(f"from {s.account}")
    by = f" ({'; '.join(who)})" if who else ""
    return f"rule {rule.name!r}: {head} {to}{by}"
