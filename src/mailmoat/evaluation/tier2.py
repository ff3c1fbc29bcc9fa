"""Tier 2's stored scores as the gateway would use them.

The fine-tuning run (`python -m mailmoat.ml.deep.finetune train`, docs/deep.md) scores every
message out-of-fold on the folds of `mailmoat.evaluation.folds`, and, for the held-out
tests, with models trained without those corpora. The programs read its scores here instead
of running tier 2 again (a GPU run), and score them as `scan/deep.py` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mailmoat.scan.deep import SYMBOLS, DeepSettings, combined_bad, tier2_symbol

MIN_TOKENS = DeepSettings().min_tokens

# The held-out-source tests: both tiers trained without these corpora (finetune train keeps
# tier 2's scores for them as `<test>_idx` / `<test>_p`).
UNSEEN: dict[str, tuple[str, ...]] = {"source": ("trec07p", "phishing_pot"),
                                      "era": ("modern_ham",)}


def changed_inputs(d: Any, sc: Any, data: Path, run: Path) -> np.ndarray:
    """Which messages tier 2 would now read differently from the run that scored them: their
    word pieces in `d` (`data`, prepared from today's parser) differ from the run's
    (`inputs` in its scores `sc`, or inputs.npz beside them for runs made before runs stored
    them)."""
    from mailmoat.ml.deep.finetune import input_digests

    if "inputs" in sc.files:
        before = sc["inputs"]
    elif (run / "inputs.npz").exists():
        before = np.load(run / "inputs.npz", allow_pickle=False)["inputs"]
    else:
        return np.zeros(len(d["lengths"]), dtype=bool)  # unknown: trusted, as before
    if len(before) != len(d["lengths"]):
        raise SystemExit(f"{run} scored {len(before)} messages, {data} holds {len(d['lengths'])}")
    return input_digests(d["ids"], d["lengths"]) != before


def left_out_note(n: int) -> str:
    """The sentence each report carries when `changed_inputs` left tier 2 out."""
    return (f"tier 2 is left out (tier 1 decides alone) for {n} messages whose text reads "
            "differently now than when the run scored it (parser changes since; docs/deep.md, "
            "\"Scores belong to the texts\")") if n else ""


class Tier2(NamedTuple):
    """Tier 2's stored scores as an evaluation may use them (`load_tier2`)."""

    p: np.ndarray  # probabilities per sample and class
    voted: np.ndarray  # counts: long enough and unchanged since the run
    changed: np.ndarray  # left out: the text reads differently now (`changed_inputs`)
    short: np.ndarray  # left out: fewer than `min_tokens` word pieces
    max_tokens: int  # word pieces tier 2 reads


def load_tier2(root: Path, samples: list[Any], data: Path, run: Path,
               unseen: str | None = None) -> Tier2:
    """Tier 2's probabilities for every sample — out-of-fold, or with `unseen` those of its
    model trained without that test's corpora (zero elsewhere) — and which of them count
    (a vote): texts long enough (`min_tokens`) and unchanged since the run (`changed_inputs`:
    an old text's score is not paired with a new text; tier 1 alone decides those). Refuses
    files made from another index."""
    d = np.load(data, allow_pickle=False)
    rel = [str(Path(s.path).relative_to(root)) for s in samples]
    if rel != [str(p) for p in d["path"]]:
        raise SystemExit(f"{data} was prepared from another corpus or index order")
    sc = np.load(run / "scores.npz", allow_pickle=False)
    changed = changed_inputs(d, sc, data, run)
    if changed.any():
        print(f"[tier 2] {int(changed.sum())} messages read differently since {run} was "
              "scored: tier 2 left out for them", flush=True)
    P2 = sc["oof"]
    if unseen:
        held = np.isin([s.corpus for s in samples], UNSEEN[unseen])
        if not np.array_equal(sc[f"{unseen}_idx"], np.flatnonzero(held)):
            raise SystemExit(f"{run}: the {unseen} test held out other messages")
        P2 = np.zeros_like(P2)
        P2[held] = sc[f"{unseen}_p"]
    short = d["lengths"].astype(int) - 2 < MIN_TOKENS
    return Tier2(P2, ~short & ~changed, changed, short, int(d["max_tokens"]))


def together(p1: np.ndarray, p2: np.ndarray, voted: np.ndarray) -> np.ndarray:
    """Both tiers' P(spam or phish) as the gateway combines them (`combined_bad`, the mean
    of their log-odds; tier 1 alone where tier 2 has no vote)."""
    both = np.array([combined_bad(float(a), float(b)) for a, b in zip(p1, p2)])
    return np.where(voted, both, p1)


def tier2_score(p1: np.ndarray, p2: np.ndarray, voted: bool,
                st: DeepSettings) -> tuple[str, float] | None:
    """Tier 2's symbol and score for one message, as the check would add them: nothing when
    it does not run (`DeepSettings.covers` tier 1's P(spam or phish), and the text has
    `min_tokens` word pieces: `voted`), else `scan.deep.tier2_symbol`'s. p1, p2: (ham, spam,
    phish) of each tier."""
    if not voted or not st.covers(float(p1[1] + p1[2])):
        return None
    hit = tier2_symbol(float(p2[1]), float(p2[2]), (float(p1[1]), float(p1[2])), st)
    return (hit[0], round(SYMBOLS[hit[0]].weight * hit[1], 3)) if hit else None


def tier2_scores(P1: np.ndarray, P2: np.ndarray, voted: np.ndarray,
                 settings: DeepSettings | None = None) -> tuple[np.ndarray, list[str]]:
    """`tier2_score` for every message under `settings` (default: the default `[deep]`):
    scores and symbol names."""
    st = settings or DeepSettings()
    out = np.zeros(len(P1))
    names = [""] * len(P1)
    for i in range(len(P1)):
        hit = tier2_score(P1[i], P2[i], bool(voted[i]), st)
        if hit is not None:
            names[i], out[i] = hit
    return out, names
