"""Check family `lists`: the administrator's allow and block lists.

Lists come from `[policy]` (`allow_senders`, `block_senders`, `allow_ips`, `block_ips`) and
may be overridden for a recipient domain (`[policy.domains."example.test"]`) or a recipient
(`[policy.recipients."ceo@example.test"]`) with the same keys. For each recipient the most
specific layer with a match decides (recipient, then domain, then global), and inside a
layer a block beats an allow. So a user can allowlist a sender blocked company-wide.

Sender entries: `user@domain` (exact address), `@domain` or `domain` (that domain only),
`*.domain` (the domain and every subdomain). IP entries: addresses or CIDRs, v4 or v6.

Senders are matched against the envelope sender and the From header. A block matches on
either. An allow must not let a forged From walk past every other check, so a From address
counts for an allow only when DMARC passed (`result.facts.auth.dmarc == "pass"`, set by
the auth family) or when the envelope sender's domain equals the From domain (and neither
DMARC nor SPF failed); an envelope sender counts only when SPF did not fail
(`result.facts.auth.spf` not "fail"/"softfail"). Without the auth family these facts are
absent and an allow trusts the envelope sender as claimed: run the auth checks.

A block forces `block_action` (reject by default, or quarantine) rather than adding score, so
no negative symbol can outvote it; an allow adds a large negative weight, so a virus or GTUBE
(forced actions) still wins. This check runs in stage 1, after the auth checks of stage 0.
When recipients' lists disagree, the symbols are scoped to the recipients they concern
(option `rcpt=<address>`) and blocks are recorded per recipient
(`ScanResult.force_for`, read back from `ScanResult.forced_for`); policy reads both per
recipient.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailmoat.errors import ConfigError
from mailmoat.message.model import ParsedMessage, domain_of
from mailmoat.scan.base import Action, BuildContext, Category, Check, ScanResult, SymbolSpec

__all__ = ["Lists", "ListsCheck", "SenderPattern", "build"]

_G = "lists"
LIST_KEYS = ("allow_senders", "block_senders", "allow_ips", "block_ips")
BLOCK_ACTIONS = {"reject": Action.REJECT, "quarantine": Action.QUARANTINE}

SYMBOLS: dict[str, SymbolSpec] = {
    "POLICY_ALLOW_SENDER": SymbolSpec(
        -20.0,
        "The sender is on an allow list (and the match is authenticated).",
        Category.CLEAN,
        _G,
    ),
    "POLICY_ALLOW_IP": SymbolSpec(
        -20.0, "The connecting client IP is on an allow list.", Category.CLEAN, _G
    ),
    "POLICY_BLOCK_SENDER": SymbolSpec(
        10.0, "The sender is on a block list; the block action is forced.", Category.POLICY, _G
    ),
    "POLICY_BLOCK_IP": SymbolSpec(
        10.0,
        "The connecting client IP is on a block list; the block action is forced.",
        Category.POLICY,
        _G,
    ),
}


@dataclass(frozen=True)
class SenderPattern:
    text: str  # as configured
    address: str = ""  # exact address
    domain: str = ""  # exact domain, or the base of a wildcard
    subdomains: bool = False

    @classmethod
    def parse(cls, entry: str) -> SenderPattern:
        e = entry.strip().lower().strip("<>")
        if e.startswith("*@"):
            e = e[1:]
        if "@" in e and not e.startswith("@"):
            local, _, dom = e.rpartition("@")
            if not local or not _valid_domain(dom):
                raise ValueError(f"not an address: {entry!r}")
            return cls(entry, address=e)
        dom = e.lstrip("@")
        wildcard = dom.startswith("*.")
        dom = dom[2:] if wildcard else dom
        if not _valid_domain(dom):
            raise ValueError(f"not an address, @domain or *.domain: {entry!r}")
        return cls(entry, domain=dom.rstrip("."), subdomains=wildcard)

    def matches(self, address: str) -> bool:
        address = address.lower()
        if self.address:
            return address == self.address
        dom = domain_of(address)
        return dom == self.domain or (self.subdomains and dom.endswith("." + self.domain))


def _valid_domain(dom: str) -> bool:
    return bool(dom) and "." in dom.strip(".") and not any(c in dom for c in " @*,;<>")


IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Lists:
    """One layer of lists (global, a domain's, or a recipient's)."""

    name: str  # "global", "domain example.test", "recipient a@example.test"
    allow_senders: tuple[SenderPattern, ...] = ()
    block_senders: tuple[SenderPattern, ...] = ()
    allow_ips: tuple[IpNet, ...] = ()
    block_ips: tuple[IpNet, ...] = ()
    block_action: Action | None = None

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any]) -> Lists:
        def strings(key: str) -> list[str]:
            value = data.get(key, [])
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[policy] {name}: {key} must be a list of strings")
            return list(value)

        try:
            senders = {
                k: tuple(SenderPattern.parse(e) for e in strings(k))
                for k in ("allow_senders", "block_senders")
            }
            ips = {
                k: tuple(ipaddress.ip_network(e.strip(), strict=False) for e in strings(k))
                for k in ("allow_ips", "block_ips")
            }
        except ValueError as exc:
            raise ConfigError(f"[policy] {name}: {exc}") from exc
        action = None
        if "block_action" in data:
            action = BLOCK_ACTIONS.get(str(data["block_action"]).lower())
            if action is None:
                raise ConfigError(
                    f"[policy] {name}: block_action must be reject or quarantine, "
                    f"not {data['block_action']!r}"
                )
        return cls(
            name,
            senders["allow_senders"],
            senders["block_senders"],
            ips["allow_ips"],
            ips["block_ips"],
            action,
        )

    @property
    def empty(self) -> bool:
        return not (self.allow_senders or self.block_senders or self.allow_ips or self.block_ips)


@dataclass(frozen=True)
class _Match:
    symbol: str
    reason: str


def _first_pattern(patterns: Iterable[SenderPattern], address: str) -> SenderPattern | None:
    return next((p for p in patterns if address and p.matches(address)), None)


def _first_net(
    nets: Iterable[IpNet], ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> IpNet | None:
    if ip is None:
        return None
    return next((n for n in nets if ip.version == n.version and ip in n), None)


class ListsCheck(Check):
    name = "lists"
    family = "lists"
    symbols = SYMBOLS
    stage = 1  # after auth (stage 0), whose DMARC/SPF results decide whether an allow counts

    def __init__(
        self,
        global_lists: Lists,
        domains: dict[str, Lists],
        recipients: dict[str, Lists],
        block_action: Action,
    ) -> None:
        self.global_lists = global_lists
        self.domains = domains
        self.recipients = recipients
        self.block_action = block_action

    def layers_for(self, recipient: str | None) -> list[Lists]:
        layers = []
        if recipient:
            r = recipient.lower()
            for layer in (self.recipients.get(r), self.domains.get(domain_of(r))):
                if layer is not None:
                    layers.append(layer)
        layers.append(self.global_lists)
        return layers

    def _action_for(self, recipient: str | None) -> Action:
        for layer in self.layers_for(recipient):
            if layer.block_action is not None:
                return layer.block_action
        return self.block_action

    def _judge(self, layer: Lists, msg: ParsedMessage, result: ScanResult) -> list[_Match]:
        env_from = msg.envelope.mail_from.lower().strip("<>")
        froms = [a.address for a in msg.from_ if a.address]
        try:
            ip = ipaddress.ip_address((msg.envelope.client_ip or "").strip("[]"))
        except ValueError:
            ip = None
        where = "" if layer.name == "global" else f" ({layer.name})"

        blocks: list[_Match] = []
        net = _first_net(layer.block_ips, ip)
        if net is not None:
            blocks.append(
                _Match("POLICY_BLOCK_IP", f"client {ip} is in block_ips entry {net}{where}")
            )
        for label, addr in [("envelope sender", env_from)] + [("From", a) for a in froms]:
            pat = _first_pattern(layer.block_senders, addr)
            if pat is not None:
                blocks.append(
                    _Match(
                        "POLICY_BLOCK_SENDER",
                        f"{label} {addr} matches block_senders entry {pat.text!r}{where}",
                    )
                )
                break
        if blocks:
            return blocks

        allows: list[_Match] = []
        net = _first_net(layer.allow_ips, ip)
        if net is not None:
            allows.append(
                _Match("POLICY_ALLOW_IP", f"client {ip} is in allow_ips entry {net}{where}")
            )
        auth = result.facts.auth
        spf = auth.spf if auth is not None else ""
        dmarc = auth.dmarc if auth is not None else ""
        pat = _first_pattern(layer.allow_senders, env_from)
        if pat is not None and spf not in ("fail", "softfail"):
            allows.append(
                _Match(
                    "POLICY_ALLOW_SENDER",
                    f"envelope sender {env_from} matches allow_senders entry {pat.text!r}{where}",
                )
            )
        else:
            for addr in froms:
                pat = _first_pattern(layer.allow_senders, addr)
                if pat is None:
                    continue
                if dmarc == "pass":
                    why = "DMARC passed"
                elif (
                    env_from
                    and domain_of(env_from) == domain_of(addr)
                    and dmarc != "fail"
                    and spf not in ("fail", "softfail")
                ):
                    why = "the envelope sender is in the same domain"
                else:
                    continue  # unauthenticated From: a forger could write anything there
                allows.append(
                    _Match(
                        "POLICY_ALLOW_SENDER",
                        f"From {addr} matches allow_senders entry {pat.text!r} and {why}{where}",
                    )
                )
                break
        return allows

    def _outcome(
        self, recipient: str | None, msg: ParsedMessage, result: ScanResult
    ) -> tuple[_Match, ...]:
        for layer in self.layers_for(recipient):
            matches = self._judge(layer, msg, result)
            if matches:
                return tuple(matches)
        return ()

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        rcpts: list[str | None] = [r.lower() for r in msg.envelope.rcpt_tos] or [None]
        outcomes: dict[str | None, tuple[tuple[_Match, ...], Action | None]] = {}
        for r in rcpts:
            matches = self._outcome(r, msg, result)
            blocked = any(m.symbol.startswith("POLICY_BLOCK_") for m in matches)
            outcomes[r] = (matches, self._action_for(r) if blocked else None)
        distinct = set(outcomes.values())
        if len(distinct) == 1:
            matches, action = distinct.pop()
            self._emit(result, matches, action, None)
            return
        groups: dict[tuple[tuple[_Match, ...], Action | None], list[str]] = {}
        for r, outcome in outcomes.items():
            assert r is not None  # several outcomes only arise with recipients
            groups.setdefault(outcome, []).append(r)
        for (matches, action), group in groups.items():
            self._emit(result, matches, action, group)

    def _emit(
        self,
        result: ScanResult,
        matches: tuple[_Match, ...],
        action: Action | None,
        recipients: list[str] | None,
    ) -> None:
        if not matches:
            return
        options = tuple(f"rcpt={r}" for r in recipients) if recipients else ()
        suffix = f" (for {', '.join(recipients)})" if recipients else ""
        for m in matches:
            result.add(m.symbol, reason=m.reason + suffix, options=options)
        blocked = [m for m in matches if m.symbol.startswith("POLICY_BLOCK_")]
        if not blocked or action is None:
            return
        reason = f"blocked by policy: {blocked[0].reason}"
        if recipients is None:
            result.force(action, reason, Category.POLICY)
            return
        result.force_for(recipients, action, reason, Category.POLICY)


_NUMERIC_OVERRIDES = ("tag_threshold", "quarantine_threshold", "reject_threshold")


def validate_overrides(policy: Any) -> None:
    """Threshold overrides are free-form tables in config.py; check the values policy reads,
    so a typo'd number fails at start instead of on the first message."""
    tables: list[tuple[str, Mapping[str, Any]]] = [
        ("outbound", policy.outbound),
        ("internal", policy.internal),
    ]
    tables += [(f'domains."{k}"', v) for k, v in policy.domains.items()]
    tables += [(f'recipients."{k}"', v) for k, v in policy.recipients.items()]
    for name, table in tables:
        for key in _NUMERIC_OVERRIDES:
            if key in table and (
                isinstance(table[key], bool) or not isinstance(table[key], int | float)
            ):
                raise ConfigError(f"[policy.{name}] {key} must be a number, not {table[key]!r}")
        if "subject_prefix" in table and not isinstance(table["subject_prefix"], str):
            raise ConfigError(f"[policy.{name}] subject_prefix must be a string")


def build(ctx: BuildContext) -> list[Check]:
    policy = ctx.config.policy
    validate_overrides(policy)
    global_lists = Lists.from_mapping("global", {k: getattr(policy, k) for k in LIST_KEYS})
    action = BLOCK_ACTIONS.get(policy.block_action.lower())
    if action is None:
        raise ConfigError(
            f"[policy] block_action must be reject or quarantine, not {policy.block_action!r}"
        )
    domains = {
        d.lower().rstrip("."): Lists.from_mapping(f"domain {d}", v)
        for d, v in policy.domains.items()
    }
    recipients = {
        r.lower(): Lists.from_mapping(f"recipient {r}", v) for r, v in policy.recipients.items()
    }
    if global_lists.empty and all(x.empty for x in (*domains.values(), *recipients.values())):
        return []  # nothing configured: no check to run
    return [ListsCheck(global_lists, domains, recipients, action)]
