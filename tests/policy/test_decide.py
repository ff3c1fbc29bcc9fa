from __future__ import annotations

import pytest

from mailmoat.config import PolicySettings
from mailmoat.message.model import Direction
from mailmoat.policy.decide import decide
from mailmoat.scan.base import Action, Category, ScanResult, SymbolSpec

SPECS = {"X": SymbolSpec(1.0, "test", Category.SPAM, "t"), "P": SymbolSpec(1.0, "phish", Category.PHISHING, "t")}


def _result(**factors: float) -> ScanResult:
    r = ScanResult(specs=SPECS)
    for name, f in factors.items():
        r.add(name, reason="r", factor=f)
    return r


@pytest.mark.parametrize("score,action", [(0, Action.ACCEPT), (4.99, Action.ACCEPT), (5, Action.TAG),
                                          (10, Action.QUARANTINE), (15, Action.REJECT), (99, Action.REJECT)])
def test_thresholds(score, action):
    assert decide(_result(X=score), PolicySettings()).action is action


def test_domain_and_recipient_overrides_most_specific_wins():
    p = PolicySettings(domains={"example.test": {"reject_threshold": 8}},
                       recipients={"ceo@example.test": {"quarantine_threshold": 3, "reject_threshold": 50}})
    r = _result(X=9)
    assert decide(r, p, "bob@example.test").action is Action.REJECT
    assert decide(r, p, "ceo@example.test").action is Action.QUARANTINE
    assert decide(r, p, "x@other.test").action is Action.TAG


def test_direction_override():
    p = PolicySettings(outbound={"tag_threshold": 100, "quarantine_threshold": 200, "reject_threshold": 300})
    assert decide(_result(X=20), p, "x@y.test", Direction.OUTBOUND).action is Action.ACCEPT


def test_forced_action_only_makes_stricter():
    r = _result(X=1)
    r.force(Action.QUARANTINE, "virus", Category.MALWARE)
    v = decide(r, PolicySettings())
    assert v.action is Action.QUARANTINE and v.category is Category.MALWARE and v.reason == "virus"


def test_category_is_strongest_symbol_group():
    v = decide(_result(X=6, P=7), PolicySettings())
    assert v.category is Category.PHISHING and v.action is Action.QUARANTINE
    assert v.subject_prefix == ""
    assert decide(_result(X=6), PolicySettings()).subject_prefix == "[SPAM]"


def _bulk(level: int, score: float = 0.0) -> ScanResult:
    r = _result(X=score) if score else ScanResult(specs=SPECS)
    r.facts.bulk_level = level
    return r


def test_bulk_mail_is_its_own_category_and_delivered_by_default():
    v = decide(_bulk(8), PolicySettings())
    assert v.action is Action.ACCEPT and v.category is Category.BULK and v.bulk_level == 8
    assert "delivered as bulk" in v.reason
    # Below the threshold it is plain accepted mail, still carrying its level.
    low = decide(_bulk(3), PolicySettings())
    assert low.category is Category.CLEAN and low.bulk_level == 3
    # Bulk never softens a spam verdict: a score that tags still tags.
    assert decide(_bulk(9, score=6), PolicySettings()).action is Action.TAG


def test_bulk_threshold_and_action_per_domain_and_recipient():
    p = PolicySettings(domains={"example.test": {"bulk_threshold": 4}},
                       recipients={"bob@example.test": {"bulk_action": "quarantine"},
                                   "amy@example.test": {"bulk_threshold": 10}})
    r = _bulk(5)
    assert decide(r, p, "x@other.test").category is Category.CLEAN  # global threshold 7
    assert decide(r, p, "eve@example.test").category is Category.BULK
    held = decide(r, p, "bob@example.test")
    assert held.action is Action.QUARANTINE and held.category is Category.BULK
    assert "quarantined for this recipient" in held.reason
    assert decide(_bulk(9), p, "amy@example.test").category is Category.CLEAN  # 10: never


def test_malware_is_never_delivered_tagged():
    specs = {"Y": SymbolSpec(6.0, "yara", Category.MALWARE, "attachments")}
    r = ScanResult(specs=specs)
    r.add("Y", reason="EICAR test file")
    v = decide(r, PolicySettings())
    assert v.action is Action.QUARANTINE and v.category is Category.MALWARE
    assert "never delivered tagged" in v.reason
    # A recipient whose tag threshold is lower still gets it held, not tagged.
    p = PolicySettings(recipients={"a@b.test": {"quarantine_threshold": 50}})
    assert decide(r, p, "a@b.test").action is Action.QUARANTINE
