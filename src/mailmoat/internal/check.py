"""Check family `internal`: the sending account's behaviour, after every other check.

It runs for internal and outbound mail only (`Direction.INTERNAL`, `OUTBOUND`), last in
the pipeline, so the content, phishing, malware and BEC checks' verdicts on the same
message are known: an account of ours sending what they object to is the strongest sign
that it is not in its owner's hands. It works out who sent the message
(`identity.resolve_identity`), describes the message for the guard (recipients, content
fingerprint, attachments, links, Reply-To, forwarding, client), and adds what the guard
found as INTERNAL_* symbols. Their scores count like any other check's; when they add up to
`[internal] flag_score`, the guard flags the account and the internal policy's action
applies: `hold` forces quarantine here; `defer` and `refuse` are the SMTP intake's to
answer (it reads `ScanResult.facts.internal`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from mailmoat.config import Config
from mailmoat.domains import is_freemail, org_domain
from mailmoat.errors import ConfigError
from mailmoat.internal.baseline import Entry
from mailmoat.internal.dlp import Finding, attachment_text, detect
from mailmoat.internal.fingerprint import recipient_key, simhash
from mailmoat.internal.guard import InternalGuard, Judgement
from mailmoat.internal.identity import SenderIdentity, resolve_identity
from mailmoat.internal.rules import (
    SEVERITY,
    InternalRule,
    Subject,
    describe_match,
    groups_of,
    matches_before_content,
    pattern_matches,
    read_groups_file,
)
from mailmoat.internal.settings import InternalSettings
from mailmoat.internal.signals import (
    BAD_CONTENT,
    BURST,
    EXFILTRATION,
    EXTERNAL_ATTACHMENTS,
    FANOUT,
    FORWARD,
    NEW_CLIENT,
    NEW_RECIPIENTS,
    ODD_HOUR,
    REPLY_TO,
    SHARED_CLIENT,
    MessageFacts,
)
from mailmoat.message.model import Direction, ParsedMessage
from mailmoat.policy.decide import thresholds_for
from mailmoat.scan.base import (
    TEXT_GROUPS,
    THREAT_EVIDENCE,
    Action,
    BuildContext,
    Category,
    Check,
    ScanResult,
    SymbolSpec,
)

log = logging.getLogger(__name__)

_G = "internal"
FLAGGED = "INTERNAL_FLAGGED"
RESTRICTED = "INTERNAL_RESTRICTED"
RULE = "INTERNAL_RULE"
MAX_DLP_ATTACHMENTS = 50
MAX_LINK_DOMAINS = 20
MAX_TYPES = 10
_THREATS = frozenset({Category.PHISHING, Category.MALWARE, Category.BEC})
_FORWARD_HEADERS = ("Resent-From", "Resent-To", "X-Forwarded-To", "X-Forwarded-For")
# Exchange and Microsoft 365 write this on what an inbox rule sends (its loop guard).
_RULE_HEADER = "X-MS-Exchange-Inbox-Rules-Loop"
_FW_SUBJECT = re.compile(r"^\s*(fw|fwd|wg|tr|rv|doorst|vs|i)\s*:", re.I)
_QUOTED_ORIGINAL = re.compile(r"-{2,}\s*(original message|forwarded message)\s*-{2,}|"
                              r"^begin forwarded message:", re.I | re.M)
MAX_RECENT_MESSAGE_IDS = 20_000

SYMBOLS: dict[str, SymbolSpec] = {
    BURST: SymbolSpec(
        3.0, "The account sent far more messages or reached far more recipients in the recent "
        "window than its own busiest hours and its peers' (factor: how far, up to 2.5).",
        Category.POLICY, _G),
    FANOUT: SymbolSpec(
        4.0, "The account sent near-identical content to more recipients in the recent window "
        "than it or its peers ever do, most of them never written to before (factor 1.5 when "
        "80 % or more are new).", Category.POLICY, _G),
    NEW_RECIPIENTS: SymbolSpec(
        3.0, "The account wrote to far more recipients it never wrote to before than usual "
        "in the recent window.", Category.POLICY, _G),
    EXTERNAL_ATTACHMENTS: SymbolSpec(
        3.0, "The account sent attachments to outside recipients in far more messages than "
        "usual in the recent window (factor 1.5 when mostly to free-mail).",
        Category.POLICY, _G),
    BAD_CONTENT: SymbolSpec(
        4.0, "The content, phishing, malware or BEC checks objected to this outgoing "
        "message: an account of ours sending it is likely compromised (factor 1.5 for a "
        "threat backed by evidence beyond the text; on the text alone 1 at twice the tag "
        "threshold, else 0.75; spam 0.75 at twice the tag threshold, else 0.5).",
        Category.POLICY, _G),
    REPLY_TO: SymbolSpec(
        2.0, "Replies are diverted to an address outside our domains and the sender's, one "
        "the account never used (factor 1.5 for free-mail).", Category.POLICY, _G),
    FORWARD: SymbolSpec(
        2.0, "The account sends mail written by others on to an outside address, as an "
        "auto-forward rule an intruder set would (factor 1.5 for a rule rather than a person, "
        "1.5 for free-mail, 0.5 for an address it wrote to before, up to 2 as forwards to "
        "one address repeat within a day).", Category.POLICY, _G),
    EXFILTRATION: SymbolSpec(
        3.0, "The account sends attachments to a free-mail address it never wrote to before "
        "(or first did within the day); factor 0.5 for one such message in the window, 1 "
        "from three, 1.5 from six, 2 from ten, twice that at an hour it hardly ever sends "
        "at (up to 2.5).", Category.POLICY, _G),
    SHARED_CLIENT: SymbolSpec(
        3.0, "The account sends from a network new to it that other of our accounts also "
        "started sending from within the hour (factor 0.5 per account, up to 2; 1.25 times "
        "that when the mail program is new to them too).", Category.POLICY, _G),
    NEW_CLIENT: SymbolSpec(
        2.0, "The account sends from a network or with a mail program it never used, "
        "together with other changes (other signals, new link domains or attachment types).",
        Category.POLICY, _G),
    ODD_HOUR: SymbolSpec(
        2.0, "The account sends at an hour of the day at which its long history has no mail.",
        Category.POLICY, _G),
    RULE: SymbolSpec(
        1.0, "An [[internal.rules]] rule matched: the reason names the rule and what matched "
        "(data-loss detector counts, recipients, symbols, attachment types), never the "
        "numbers found; the score is the rule's own (factor: its `score`).",
        Category.POLICY, _G),
    FLAGGED: SymbolSpec(
        0.0, "This message flagged the account: the reason says the score, the action taken "
        "and the incident.", Category.POLICY, _G),
    RESTRICTED: SymbolSpec(
        0.0, "The account is held, throttled or suspended; the reason says since when and "
        "by whom.", Category.POLICY, _G),
}


class InternalCheck(Check):
    name = "behaviour"
    family = _G
    symbols = SYMBOLS
    stage = 4  # after the evidence gate (stage 3): every verdict on the content is in

    def __init__(self, ctx: BuildContext, guard: InternalGuard, owned: bool) -> None:
        self.config = ctx.config
        self.settings = ctx.config.section("internal", InternalSettings)
        self.guard = guard
        self.owned = owned  # built here (offline scans): closed with the check
        self.trusted = [ipaddress.ip_network(n, strict=False)
                        for n in ctx.config.smtp.trusted_networks]
        self.internal_domains = frozenset(ctx.config.internal_domains)
        self._internal_orgs = frozenset(org_domain(d) for d in self.internal_domains)
        self.rules = [r for r in self.settings.rules if r.enabled]
        self.groups = load_groups(ctx.config, self.settings)
        # (account, Message-ID) of the messages judged lately: a list post the mail server
        # hands over in several transactions is one message, not several.
        self._recent_ids: OrderedDict[tuple[str, str], None] = OrderedDict()

    def is_trusted(self, ip: str | None) -> bool:
        try:
            addr = ipaddress.ip_address(ip or "")
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def identity(self, msg: ParsedMessage) -> SenderIdentity | None:
        env = msg.envelope
        return resolve_identity(env, msg.header, identity_header=self.settings.identity_header,
                                trusted=self.is_trusted(env.client_ip),
                                internal_domains=self.internal_domains)

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        if msg.envelope.direction is Direction.INBOUND:
            return
        ident = self.identity(msg)
        if ident is None:
            return
        facts, entry, exempt = self.describe(msg, ident, result)

        def score_of(name: str, factor: float) -> float:
            weight = result.weight_overrides.get(name, self.symbols[name].weight)
            return round(weight * factor, 3)

        j = await self.guard.observe(ident, facts, entry, score_of, exempt=exempt)
        for x in j.signals:
            if x.counted:
                result.add(x.signal.name, x.signal.reason, factor=x.signal.factor)
            else:
                r = j.restriction
                who = r.released_by if r is not None and r.released_by else "an administrator"
                result.add(x.signal.name, f"{x.signal.reason} (not counted: released by {who})",
                           factor=0.0)
        self.explain(j, result)
        if self.rules and j.action not in ("defer", "refuse"):
            j = await self.apply_rules(msg, ident, facts, result, j)
        if self.settings.review_copy_to and j.flagged and j.action in ("none", "tag"):
            j = replace(j, copy_to=tuple(self.settings.review_copy_to))
        result.facts.internal = j
        if j.action == "hold":
            result.force(Action.QUARANTINE, j.reason)

    async def apply_rules(self, msg: ParsedMessage, ident: SenderIdentity, facts: MessageFacts,
                          result: ScanResult, j: Judgement) -> Judgement:
        """`[[internal.rules]]`: the cheap conditions first, the data-loss detectors (one
        pass over the text for every rule that still could match) last; a symbol for each
        rule that matches, and the strongest action of theirs."""
        env = msg.envelope
        subject = Subject(
            account=ident.account, sender=msg.from_addr.address if msg.from_addr else "",
            groups=tuple(groups_of(ident.account, self.groups)),
            direction=env.direction.value,
            recipients=tuple(r.strip().strip("<>").lower() for r in env.rcpt_tos),
            internal_domains=self.internal_domains,
            symbols=frozenset(x.name for x in result.symbols), category=facts.category,
            score=facts.content_score,
            attachment_types=frozenset(a.extension for a in msg.attachments if a.extension))
        candidates = [(rule, rcpts) for rule in self.rules
                      if (rcpts := matches_before_content(rule, subject)) is not None]
        wanted = {d for rule, _ in candidates for d in rule.detectors}
        found = await self.detect(msg, wanted) if wanted else {}
        matched: list[tuple[InternalRule, str]] = []
        for rule, rcpts in candidates:
            if rule.detectors and not any(
                    (f := found.get(d)) is not None and f.count >= n
                    for d, n in rule.detectors.items()):
                continue
            reason = describe_match(rule, subject, rcpts, found)
            matched.append((rule, reason))
            result.add(RULE, reason, factor=rule.score, options=(rule.name,))
        if not matched:
            return j
        rule, reason = max(matched, key=lambda m: SEVERITY[m[0].action])
        action = rule.action
        if action == "copy":
            j = replace(j, copy_to=tuple(self.settings.review_copy_to))
        elif action == "hold":
            result.force(Action.QUARANTINE, reason)
        elif action == "reject":
            result.force(Action.REJECT, reason)
        elif action in ("alert", "throttle", "suspend") and not j.flagged and (
                j.restriction is None or not j.restriction.active(env.received_at)):
            mine = [s for s in result.symbols if s.name == RULE]
            lines: list[dict[str, Any]] = [
                {"name": RULE, "score": s.score, "reason": s.reason} for s in mine]
            act, reply, why, incident_id, restriction = await self.guard.flag_by_rule(
                ident, action, round(sum(s.score for s in mine), 3), lines,
                env.received_at)
            j = replace(j, flagged=True, action=act, reply=reply, reason=why,
                        incident_id=incident_id, restriction=restriction)
            state = f"; the account is {restriction.describe()}" if restriction else ""
            result.add(FLAGGED, f"{ident.account} flagged by {reason}{state}; incident "
                       f"{incident_id}")
        return j

    async def detect(self, msg: ParsedMessage, wanted: set[str]) -> dict[str, Finding]:
        """The detectors' findings in the subject, the bodies and the attachments' text;
        off the event loop when there is much to read."""
        def run() -> dict[str, Finding]:
            texts = [msg.subject, msg.text, msg.html_text]
            texts += [attachment_text(a.filename, a.declared_type, a.detected_type, a.content)
                      for a in msg.attachments[:MAX_DLP_ATTACHMENTS]]
            return detect((t for t in texts if t), wanted)

        size = len(msg.text) + len(msg.html_text) + sum(a.size for a in msg.attachments)
        return run() if size < 200_000 else await asyncio.to_thread(run)

    @staticmethod
    def explain(j: Judgement, result: ScanResult) -> None:
        r = j.restriction
        if j.flagged:
            done = {"none": "no action", "tag": "tagged", "hold": "held for review",
                    "defer": "deferred (451)", "refuse": "refused"}.get(j.action, j.action)
            state = f"; the account is {r.describe()}" if r is not None else ""
            counted = round(sum(x.score for x in j.signals), 3)
            score = f"{j.score:g}" if counted >= j.score else \
                f"{j.score:g}, counted as {counted:g} towards the message's score"
            result.add(FLAGGED, f"{j.account} flagged (behaviour score {score}): this "
                       f"message {done}{state}; incident {j.incident_id}")
        elif r is not None and j.action in ("hold", "defer", "refuse"):
            result.add(RESTRICTED, f"{j.account} is {r.describe()} (by {r.by}, "
                       f"since {_when(r.since)}): {r.reason}"[:600])

    def describe(self, msg: ParsedMessage, ident: SenderIdentity, result: ScanResult
                 ) -> tuple[MessageFacts, Entry, bool]:
        """The message as the guard sees it, and whether it is exempt from the volume
        signals (a list server's expansion)."""
        env = msg.envelope
        rcpts = [r.strip().strip("<>").lower() for r in env.rcpt_tos]
        addressed = self.list_addresses(msg, ident, rcpts)
        copy = False
        if addressed:
            # The mail server expanded a list or alias (Postfix virtual_alias_maps, an
            # Exchange distribution group): the person wrote one message to the list, and
            # that is what is counted and learned; its members are the list's, not
            # correspondents of the account.
            rcpts = addressed
            key = (ident.account, msg.message_id.strip())
            if key[1]:
                copy = key in self._recent_ids
                self._recent_ids[key] = None
                self._recent_ids.move_to_end(key)
                while len(self._recent_ids) > MAX_RECENT_MESSAGE_IDS:
                    self._recent_ids.popitem(last=False)
        domains = [r.rpartition("@")[2] for r in rcpts]
        internal = sum(1 for d in domains if d in self.internal_domains)
        external_domains = [d for d in domains if d not in self.internal_domains]
        freemail = sum(1 for d in external_domains if is_freemail(d))
        links = []
        for host in sorted(msg.url_hosts):
            org = org_domain(host)
            if org and org not in self._internal_orgs and org not in links:
                links.append(org)
                if len(links) >= MAX_LINK_DOMAINS:
                    break
        types = tuple(sorted({a.extension for a in msg.attachments if a.extension})[:MAX_TYPES])
        reply_to, reply_free = "", False
        sender_org = org_domain(msg.from_domain)
        for a in msg.reply_to:
            org = org_domain(a.domain)
            if a.address and org and org not in self._internal_orgs and org != sender_org:
                reply_to, reply_free = a.address, is_freemail(a.domain)
                break
        author = msg.from_addr.address if msg.from_addr else ""
        looks_forwarded = bool(_FW_SUBJECT.match(msg.subject or "")) and bool(
            _QUOTED_ORIGINAL.search(msg.body_text[:20_000]))
        auto = bool(external_domains) and (
            (msg.header("Auto-Submitted") or "").lower().startswith("auto-forwarded")
            or any(msg.header(h) is not None for h in _FORWARD_HEADERS)
            or (msg.header(_RULE_HEADER) is not None and looks_forwarded))
        forwarded = bool(external_domains) and (
            auto or looks_forwarded
            or (bool(author) and author != ident.account
                and org_domain(msg.from_addr.domain if msg.from_addr else "")
                not in self._internal_orgs))
        forward_to = next((r for r in rcpts if r.rpartition("@")[2] not in self.internal_domains),
                          "") if forwarded else ""
        threat = sum(s.score for s in result.symbols
                     if s.category in _THREATS and s.group not in TEXT_GROUPS)
        tag = thresholds_for(self.config.policy, None, env.direction).tag
        facts = MessageFacts(
            at=env.received_at, recipients=len(rcpts), internal=internal,
            external=len(external_domains), network=ident.network, agent=ident.agent,
            client_ip=ident.client_ip, types=types, link_domains=tuple(links),
            reply_to=reply_to, reply_to_freemail=reply_free, forwarded=forwarded,
            freemail_rcpts=freemail, category=result.category.value,
            content_score=result.score, threat_evidence=threat >= THREAT_EVIDENCE,
            tag_threshold=tag, forward_to=forward_to, forward_auto=auto,
            freemail_keys=tuple(recipient_key(r) for r in rcpts
                                if r.rpartition("@")[2] not in self.internal_domains
                                and is_freemail(r.rpartition("@")[2]))[:50])
        auto = (msg.header("Auto-Submitted") or "no").strip().lower() != "no"
        listed = ident.source == "envelope" and msg.header("List-Id") is not None
        # Auto-replies and list mail are alike by nature: they are never a fan-out.
        fingerprint = 0 if auto or listed else simhash(msg.subject, msg.body_text)
        keys = tuple(dict.fromkeys(recipient_key(r) for r in rcpts[:1000]))
        entry = Entry(at=env.received_at, fingerprint=fingerprint, recipients=keys, new=0,
                      external=len(external_domains),
                      external_attachments=bool(external_domains) and bool(msg.attachments),
                      freemail=freemail, forwarded=forwarded, copy=copy)
        return facts, entry, listed

    def list_addresses(self, msg: ParsedMessage, ident: SenderIdentity,
                       rcpts: list[str]) -> list[str]:
        """The list addresses the mail server expanded, when this transaction is such an
        expansion: every envelope recipient is ours and none is named in To or Cc, which
        name at least one address of ours that is not a recipient (the list); else []."""
        if not rcpts:
            return []
        named = [a.address.strip().lower() for a in (*msg.to, *msg.cc) if a.address]
        if not named:
            return []
        in_env = set(rcpts)
        if any(r in in_env for r in named):
            return []
        if not all(r.rpartition("@")[2] in self.internal_domains for r in rcpts):
            return []
        lists = [a for a in dict.fromkeys(named) if a.rpartition("@")[2] in self.internal_domains
                 and a != ident.account]
        if self.settings.lists:
            # Only the lists the administrator named: otherwise a taken-over account could
            # put a made-up address of ours in To and its fan-out in Bcc, and be counted
            # as one post to a list.
            lists = [a for a in lists
                     if any(pattern_matches(p, a) for p in self.settings.lists)]
        return lists
    async def close(self) -> None:
        if self.owned:
            await self.guard.close()


def load_groups(config: Config, settings: InternalSettings) -> dict[str, list[str]]:
    """`[internal] groups` and the groups of `groups_file` together."""
    groups = {k: list(v) for k, v in settings.groups.items()}
    if settings.groups_file:
        path = config.resolve_path(settings.groups_file)
        try:
            for name, members in read_groups_file(path).items():
                groups.setdefault(name, []).extend(members)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[internal] groups_file: {exc}") from exc
        for rule in settings.rules:
            for g in rule.groups:
                if g not in groups:
                    raise ConfigError(f"[internal] rule {rule.name!r}: no group {g!r} in "
                                      f"groups or {path.name}")
    return groups


def _when(at: float) -> str:
    from datetime import UTC, datetime

    return f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M} UTC"


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("internal", InternalSettings)
    if not settings.enabled or ctx.disabled(InternalCheck.name):
        return []
    guard = ctx.extras.get("internal_guard")
    owned = guard is None
    if guard is None:
        guard = InternalGuard(ctx.config, ctx.database, redis=ctx.redis)
    return [InternalCheck(ctx, guard, owned)]
