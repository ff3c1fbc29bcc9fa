"""Policy: a pure function from (scan result, policy, recipient, direction) to a verdict.

Checks never decide delivery; this does. Thresholds come from `[policy]`, overridden for
the direction (`[policy.outbound]`, `[policy.internal]`), then the recipient's domain
(`[policy.domains."example.test"]`), then the recipient (`[policy.recipients."a@b"]`);
the most specific wins. A forced action (virus, GTUBE, unparseable mail) is applied after
thresholds, and only ever makes the verdict stricter. Mail whose category is malware is
never merely tagged: it is quarantined at least.

Bulk and automated mail that the evidence gate found consistent carries a bulk level (0–9,
`ScanResult.facts.bulk_level`). Mail the score accepts whose level reaches `bulk_threshold`
is marked bulk (category `bulk`) and gets `bulk_action`: delivered with the headers a
client or Sieve rule files by, or quarantined where the recipient or domain asks for it.
Bulk is a category of its own, never spam: it does not add to the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailmoat.config import PolicySettings
from mailmoat.message.model import Direction, domain_of
from mailmoat.policy.types import Action, Category

if TYPE_CHECKING:  # what the checks produce; policy only reads it
    from mailmoat.scan.base import ScanResult

_THRESHOLD_KEYS = ("tag_threshold", "quarantine_threshold", "reject_threshold", "subject_prefix",
                   "bulk_threshold", "bulk_action")


@dataclass(frozen=True)
class Thresholds:
    tag: float
    quarantine: float
    reject: float
    subject_prefix: str
    bulk: int = 7  # bulk level at or above which accepted bulk mail is marked bulk
    bulk_action: str = "deliver"  # deliver | quarantine


@dataclass(frozen=True)
class Verdict:
    action: Action
    score: float
    category: Category
    reason: str  # one sentence: why this action
    subject_prefix: str = ""  # set for tagged mail when configured
    bulk_level: int | None = None  # 0–9 for bulk and automated mail, else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action.value, "score": self.score,
                               "category": self.category.value, "reason": self.reason}
        if self.bulk_level is not None:
            out["bulk_level"] = self.bulk_level
        return out


def thresholds_for(policy: PolicySettings, recipient: str | None,
                   direction: Direction = Direction.INBOUND) -> Thresholds:
    values: dict[str, Any] = {k: getattr(policy, k) for k in _THRESHOLD_KEYS}
    layers: list[dict[str, Any]] = []
    if direction is Direction.OUTBOUND:
        layers.append(policy.outbound)
    elif direction is Direction.INTERNAL:
        layers.append(policy.internal)
    if recipient:
        layers.append(policy.domains.get(domain_of(recipient), {}))
        layers.append(policy.recipients.get(recipient.lower(), {}))
    for layer in layers:
        for key in _THRESHOLD_KEYS:
            if key in layer:
                values[key] = layer[key]
    return Thresholds(tag=float(values["tag_threshold"]),
                      quarantine=float(values["quarantine_threshold"]),
                      reject=float(values["reject_threshold"]),
                      subject_prefix=str(values["subject_prefix"]),
                      bulk=int(values["bulk_threshold"]),
                      bulk_action=str(values["bulk_action"]))


def action_for_score(score: float, t: Thresholds) -> tuple[Action, str]:
    """The action the thresholds give a score, and why; also what the model reports of
    `mailmoat train` and the evaluation programs count with."""
    if score >= t.reject:
        return Action.REJECT, f"score {score:g} reaches the reject threshold {t.reject:g}"
    if score >= t.quarantine:
        return Action.QUARANTINE, (f"score {score:g} reaches the quarantine threshold "
                                   f"{t.quarantine:g}")
    if score >= t.tag:
        return Action.TAG, f"score {score:g} reaches the tag threshold {t.tag:g}"
    return Action.ACCEPT, f"score {score:g} is below every threshold"


def decide(result: ScanResult, policy: PolicySettings, recipient: str | None = None,
           direction: Direction = Direction.INBOUND) -> Verdict:
    """Map a scan result to the action for one recipient (or the message when None)."""
    t = thresholds_for(policy, recipient, direction)
    score, forced = _for_recipient(result, recipient)
    category = result.category
    action, reason = action_for_score(score, t)
    if forced is not None and forced[0].severity > action.severity:
        action, reason = forced[0], forced[1]
    if action is Action.TAG and category is Category.MALWARE:
        # A tag delivers the file; a malware verdict from any engine (YARA, attachment
        # analysis, a hash list) must not reach the mailbox, whatever the thresholds.
        action, reason = Action.QUARANTINE, f"{reason}, and malware is never delivered tagged"
    level = result.facts.bulk_level
    if action is Action.ACCEPT:
        category = Category.CLEAN
        if level is not None and level >= t.bulk:
            category = Category.BULK
            if t.bulk_action == "quarantine":
                action = Action.QUARANTINE
                reason = (f"bulk level {level} reaches the bulk threshold {t.bulk}, and bulk "
                          "mail is quarantined for this recipient")
            else:
                reason = (f"{reason}; bulk level {level} reaches the bulk threshold {t.bulk}: "
                          "delivered as bulk")
    elif category is Category.CLEAN:
        category = Category.POLICY
    prefix = t.subject_prefix if action is Action.TAG else ""
    return Verdict(action=action, score=score, category=category, reason=reason,
                   subject_prefix=prefix, bulk_level=level)


def _for_recipient(result: ScanResult, recipient: str | None
                   ) -> tuple[float, tuple[Action, str, Category] | None]:
    """Score and forced action for one recipient.

    A symbol whose options name recipients (`rcpt=<address>`, from per-recipient lists)
    counts only for them; `result.forced_for` holds forced actions per recipient.
    """
    forced = result.forced
    scoped = [s for s in result.symbols if any(o.startswith("rcpt=") for o in s.options)]
    forced_for = result.forced_for
    if not scoped and not forced_for:
        return result.score, forced
    mine = f"rcpt={recipient.lower()}" if recipient else None
    score = round(sum(s.score for s in result.symbols
                      if s not in scoped or (mine is not None and mine in s.options)), 3)
    extra = forced_for.get(recipient.lower()) if recipient else None
    if extra is not None and (forced is None or extra[0].severity > forced[0].severity):
        forced = extra
    return score, forced


def strictest(verdicts: list[Verdict]) -> Verdict:
    """The message-level verdict when recipients differ: the most severe one."""
    return max(verdicts, key=lambda v: (v.action.severity, v.score))
