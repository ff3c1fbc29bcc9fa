"""Scores to actions through the product's own `mailmoat.policy.decide`.

An evaluation knows a message's total score (and a forced action, a bulk level) without a
live scan; it hands them to `decide()` as a scan result holding that total, so every
figure follows the policy the gateway applies — thresholds, forced actions only making the
verdict stricter, bulk — and nothing here restates it. The default policy is the one a new
installation has (tag 5, quarantine 10, reject 15).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np

from mailmoat.config import PolicySettings
from mailmoat.ml.corpus import Sample
from mailmoat.ml.evaluate import summarize, tradeoff
from mailmoat.ml.model import CLASSES
from mailmoat.ml.scoring import ContentSettings, content_score
from mailmoat.policy.decide import Verdict, decide
from mailmoat.policy.types import Action, Category
from mailmoat.scan.base import ScanResult, Symbol
from mailmoat.scan.facts import Facts

DEFAULT_POLICY = PolicySettings()
_TOTAL = "EVALUATED_TOTAL"  # the one symbol carrying the total into decide()


def verdict(score: float, forced: str | None = None, bulk_level: int | None = None,
            policy: PolicySettings | None = None) -> Verdict:
    """What `decide()` makes of a message whose checks add up to `score`, one of which
    forced the action `forced` ("tag", "quarantine", "reject"; None: none did), whose
    bulk level is `bulk_level` (None: not bulk)."""
    if policy is None:
        return _default_verdict(float(score), forced or None, bulk_level)
    return _decide(float(score), forced or None, bulk_level, policy)


@lru_cache(maxsize=65536)
def _default_verdict(score: float, forced: str | None, bulk_level: int | None) -> Verdict:
    # Scores take few distinct values (banded content scores, rule weights), and a corpus
    # evaluation asks for tens of thousands of verdicts per table.
    return _decide(score, forced, bulk_level, DEFAULT_POLICY)


def _decide(score: float, forced: str | None, bulk_level: int | None,
            policy: PolicySettings) -> Verdict:
    total = Symbol(name=_TOTAL, score=score, category=Category.SPAM,
                   reason="the total of the evaluated checks")
    result = ScanResult(specs={}, symbols=[total],
                        forced=(Action(forced), "forced by a check", Category.POLICY)
                        if forced else None,
                        facts=Facts(bulk_level=bulk_level))
    return decide(result, policy)


def action(score: float, forced: str | None = None, policy: PolicySettings | None = None) -> str:
    """The action ("accept", "tag", "quarantine", "reject") for a total score."""
    return verdict(score, forced, policy=policy).action.value


def actions(scores: Iterable[float], forced: Iterable[str | None] | None = None,
            policy: PolicySettings | None = None) -> np.ndarray:
    """`action` of every score (with its forced action, when given), as an array."""
    fs = forced if forced is not None else repeat(None)
    return np.array([action(float(s), str(f) if f else None, policy) for s, f in zip(scores, fs)])


def flagged(score: float, policy: PolicySettings | None = None) -> bool:
    """Whether a total score alone earns any action other than accept (tag or stricter)."""
    return action(score, policy=policy) != "accept"


def metrics(samples: Sequence[Sample], P: np.ndarray, settings: ContentSettings | None = None,
            policy: PolicySettings | None = None) -> dict[str, Any]:
    """The content check alone, from a probability matrix (columns ham, spam, phish): its
    score per message (`content_score`), the verdict the policy gives that score, and the
    rates of `mailmoat.ml.evaluate.summarize` ranked by P(spam or phish)."""
    si, pi = CLASSES.index("spam"), CLASSES.index("phish")
    scores = [content_score(float(p[si]), float(p[pi]), settings) for p in P]
    out = summarize(samples, scores, actions(scores, policy=policy).tolist(),
                    rank=(P[:, si] + P[:, pi]).tolist())
    out["tradeoff"] = tradeoff(samples, scores)
    return out
