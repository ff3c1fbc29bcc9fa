"""Evaluation verdicts are the policy's: `mailmoat.policy.decide` maps every evaluated total."""

from __future__ import annotations

import numpy as np

from mailmoat.config import PolicySettings
from mailmoat.evaluation import verdicts
from mailmoat.ml import evaluate
from mailmoat.ml.corpus import Sample
from mailmoat.scan.base import Category


def test_thresholds_at_their_edges():
    # The default policy: tag 5, quarantine 10, reject 15, each reached at the threshold.
    cases = {-3.0: "accept", 4.999: "accept", 5.0: "tag", 9.999: "tag",
             10.0: "quarantine", 14.9996: "reject", 15.0: "reject", 40.0: "reject"}
    # 14.9996 counts as 15: a scan result's total is rounded to 3 decimals, as live.
    assert {s: verdicts.action(s) for s in cases} == cases


def test_a_forced_action_only_makes_the_verdict_stricter():
    assert verdicts.action(0.0, "reject") == "reject"
    assert verdicts.action(12.0, "tag") == "quarantine"
    assert verdicts.action(3.0, "quarantine") == "quarantine"
    assert list(verdicts.actions([1.0, 6.0, 20.0], [None, "quarantine", "tag"])) == \
        ["accept", "quarantine", "reject"]


def test_the_policy_given_is_the_policy_applied():
    strict = PolicySettings(tag_threshold=2.0, quarantine_threshold=4.0, reject_threshold=6.0)
    assert [verdicts.action(s, policy=strict) for s in (1.0, 3.0, 5.0, 7.0)] == \
        ["accept", "tag", "quarantine", "reject"]
    assert verdicts.flagged(3.0, strict) and not verdicts.flagged(3.0)


def test_accepted_bulk_is_delivered_as_bulk_or_quarantined_as_the_policy_says():
    level = PolicySettings().bulk_threshold
    assert verdicts.verdict(1.0, bulk_level=level).category is Category.BULK
    assert verdicts.verdict(1.0, bulk_level=level).action.value == "accept"
    assert verdicts.verdict(1.0, bulk_level=level - 1).category is Category.CLEAN
    assert verdicts.verdict(6.0, bulk_level=9).category is not Category.BULK  # tagged: not bulk
    held = PolicySettings(bulk_action="quarantine")
    assert verdicts.verdict(1.0, bulk_level=level, policy=held).action.value == "quarantine"


def test_content_metrics_match_the_training_report():
    """`verdicts.metrics` (through decide) gives the rates `mailmoat train` reports."""
    rng = np.random.default_rng(3)
    P = rng.dirichlet([1.0, 1.0, 1.0], size=600)
    P[:50] = [0.0001, 0.9998, 0.0001]  # very sure spam: the reject band
    labels = rng.choice(["ham", "spam", "phish"], size=600)
    samples = [Sample(path=f"m{i}", label=str(lab), corpus=f"c{i % 3}", group=f"g{i}")
               for i, lab in enumerate(labels)]
    ours = verdicts.metrics(samples, P)
    assert ours == evaluate.metrics(samples, P)
    assert ours["overall"]["quarantined_bad"] > 0  # the reject band was exercised
