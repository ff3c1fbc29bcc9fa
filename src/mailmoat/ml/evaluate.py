"""Measuring verdicts on labelled mail: per corpus and overall.

Definitions (the same everywhere numbers are reported):
- a message is *flagged* when its action is anything but accept (tag, quarantine, reject);
- false-positive rate: ham flagged / ham; false-negative rate: spam+phish accepted / spam+phish;
- accuracy: (ham accepted + spam/phish flagged) / all;
- phishing recall: phish flagged / phish;
- ROC AUC of the ranking value (P(spam or phish) for the model alone, the total score for the
  full scanner) against "is spam or phish", where a corpus holds both kinds;
- `quarantined_*`: the same at the quarantine threshold (quarantine or reject).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mailmoat.ml.corpus import Sample, read_sample, strip_path_headers
from mailmoat.ml.model import CLASSES
from mailmoat.ml.scoring import ContentSettings, content_score
from mailmoat.policy.decide import Thresholds, action_for_score

DEFAULT_THRESHOLDS = (5.0, 10.0, 15.0)
TRADEOFF_THRESHOLDS = (-1.0, 1.0, 3.0, 5.0, 7.0, 10.0, 12.0, 15.0)


def action_for(score: float, thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS) -> str:
    """The policy's own mapping (policy.decide), for a content score alone."""
    tag, quarantine, reject = thresholds
    return action_for_score(score, Thresholds(tag, quarantine, reject, ""))[0].value


def _auc(bad: np.ndarray, rank: np.ndarray) -> float | None:
    if bad.all() or not bad.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(bad, rank))


def _rates(labels: np.ndarray, actions: np.ndarray, rank: np.ndarray) -> dict[str, Any]:
    ham = labels == "ham"
    bad = ~ham
    phish = labels == "phish"
    flagged = actions != "accept"
    held = (actions == "quarantine") | (actions == "reject")
    n = len(labels)

    def frac(a: np.ndarray, m: np.ndarray) -> float | None:
        return float(a[m].mean()) if m.any() else None

    return {
        "n": n, "ham": int(ham.sum()), "spam": int((labels == "spam").sum()), "phish": int(phish.sum()),
        "accuracy": float(((ham & ~flagged) | (bad & flagged)).mean()) if n else None,
        "fp_rate": frac(flagged, ham), "fn_rate": frac(~flagged, bad),
        "detection": frac(flagged, bad), "phish_recall": frac(flagged, phish),
        "quarantined_ham": frac(held, ham), "quarantined_bad": frac(held, bad),
        "auc": _auc(bad, rank),
    }


def summarize(samples: Sequence[Sample], scores: Sequence[float], actions: Sequence[str],
              rank: Sequence[float] | None = None) -> dict[str, Any]:
    """{"overall": rates, "corpora": {corpus: rates}} for the given verdicts."""
    labels = np.array([s.label for s in samples])
    corp = np.array([s.corpus for s in samples])
    acts = np.array(list(actions))
    rk = np.asarray(rank if rank is not None else scores, dtype=np.float64)
    out: dict[str, Any] = {"overall": _rates(labels, acts, rk), "corpora": {}}
    for c in sorted(set(corp.tolist())):
        m = corp == c
        out["corpora"][c] = _rates(labels[m], acts[m], rk[m])
    return out


def tradeoff(samples: Sequence[Sample], scores: Sequence[float],
             thresholds: Sequence[float] = TRADEOFF_THRESHOLDS) -> list[dict[str, Any]]:
    """False-positive rate vs detection if the flagging threshold were each value."""
    labels = np.array([s.label for s in samples])
    sc = np.asarray(scores, dtype=np.float64)
    ham = labels == "ham"
    rows = []
    for t in thresholds:
        fl = sc >= t
        rows.append({"threshold": t,
                     "fp_rate": float(fl[ham].mean()) if ham.any() else None,
                     "detection": float(fl[~ham].mean()) if (~ham).any() else None,
                     "phish_recall": float(fl[labels == "phish"].mean()) if (labels == "phish").any() else None})
    return rows


# False-positive ceilings at which the curve is read off (the targets speak of 0.05 %).
CURVE_FP_CEILINGS = (0.0002, 0.0005, 0.001, 0.002, 0.005)
CURVE_DETECTION_FLOORS = (0.98, 0.99, 0.995)
CURVE_MAX_POINTS = 400


def operating_curve(samples: Sequence[Sample], rank: Sequence[float]) -> dict[str, Any]:
    """The whole trade-off of a continuous score: FP rate (ham flagged) and detection
    (spam+phish flagged) at every threshold, as sklearn's ROC curve, plus the best detection
    under each FP ceiling and the least FP rate that reaches each detection floor.

    `points` keeps at most CURVE_MAX_POINTS of the curve, spread evenly on a log scale of
    the FP rate, so the low-FP end that matters to a mail administrator stays detailed."""
    from sklearn.metrics import roc_curve

    bad = np.array([s.label != "ham" for s in samples])
    if bad.all() or not bad.any():
        return {}
    fpr, tpr, thr = roc_curve(bad, np.asarray(rank, dtype=np.float64))
    n_ham = int((~bad).sum())
    best = []
    for ceiling in CURVE_FP_CEILINGS:
        ok = np.flatnonzero(fpr <= ceiling)
        i = int(ok[np.argmax(tpr[ok])])
        best.append({"fp_ceiling": ceiling, "fp_rate": float(fpr[i]), "detection": float(tpr[i]),
                     "threshold": float(min(thr[i], 1.0)), "ham_flagged": round(fpr[i] * n_ham)})
    needed = []
    for floor in CURVE_DETECTION_FLOORS:
        ok = np.flatnonzero(tpr >= floor)
        i = int(ok[np.argmin(fpr[ok])])
        needed.append({"detection_floor": floor, "fp_rate": float(fpr[i]),
                       "detection": float(tpr[i]), "threshold": float(min(thr[i], 1.0))})
    # Thin the curve for plotting: one point per log-spaced FP bucket (the last of each,
    # i.e. the highest detection at that FP), plus both ends.
    keep = {0, len(fpr) - 1}
    edges = np.logspace(np.log10(max(1.0 / max(n_ham, 1), 1e-6)), 0, CURVE_MAX_POINTS)
    bucket = np.searchsorted(edges, fpr)
    for b in np.unique(bucket):
        keep.add(int(np.flatnonzero(bucket == b)[-1]))
    idx = sorted(keep)
    return {"n_ham": n_ham, "n_bad": int(bad.sum()),
            "points": [[float(fpr[i]), float(tpr[i])] for i in idx],
            "best_detection_at_fp": best, "fp_for_detection": needed}


def format_operating_curve(curve: dict[str, Any]) -> str:
    if not curve:
        return "(no curve: one class only)"
    lines = ["| FP rate at most | best detection | ham flagged | threshold (P(spam or phish) ≥) |",
             "|---|---|---|---|"]
    for b in curve["best_detection_at_fp"]:
        lines.append(f"| {_pct(b['fp_ceiling'], 2)} | {_pct(b['detection'])} | "
                     f"{b['ham_flagged']} of {curve['n_ham']} | {b['threshold']:.6f} |")
    lines += ["", "| detection at least | lowest FP rate | threshold |", "|---|---|---|"]
    for n in curve["fp_for_detection"]:
        lines.append(f"| {_pct(n['detection_floor'], 1)} | {_pct(n['fp_rate'], 3)} | "
                     f"{n['threshold']:.6f} |")
    return "\n".join(lines)


def metrics(samples: Sequence[Sample], P: np.ndarray, settings: ContentSettings | None = None,
            thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Model-only metrics from a probability matrix (columns ham, spam, phish)."""
    si, pi = CLASSES.index("spam"), CLASSES.index("phish")
    scores = [content_score(float(p[si]), float(p[pi]), settings) for p in P]
    actions = [action_for(s, thresholds) for s in scores]
    out = summarize(samples, scores, actions, rank=(P[:, si] + P[:, pi]).tolist())
    out["tradeoff"] = tradeoff(samples, scores)
    return out


async def evaluate_with_scanner(samples: Sequence[Sample], scanner: Any, *, strip: bool = False,
                                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Scan every sample with a `Scanner` (parse + all its checks + policy) and summarise."""
    from mailmoat.message.model import Envelope

    scores: list[float] = []
    actions: list[str] = []
    elapsed = 0.0
    policy = scanner.config.policy
    thresholds = (policy.tag_threshold, policy.quarantine_threshold, policy.reject_threshold)
    for s in samples:
        raw = read_sample(s)
        if strip:
            raw = strip_path_headers(raw)
        t = time.perf_counter()
        out = await scanner.scan(raw, Envelope(mail_from="", rcpt_tos=()))
        elapsed += time.perf_counter() - t
        scores.append(out.verdict.score)
        actions.append(out.verdict.action.value)
        if progress:
            progress(1)
    res = summarize(samples, scores, actions)
    res["tradeoff"] = tradeoff(samples, scores)
    res["thresholds"] = list(thresholds)
    res["messages_per_second"] = len(samples) / elapsed if elapsed > 0 else None
    res["scan_seconds"] = elapsed
    return res


def run_scanner_eval(samples: Sequence[Sample], scanner: Any, **kw: Any) -> dict[str, Any]:
    return asyncio.run(evaluate_with_scanner(samples, scanner, **kw))


def _pct(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def format_table(res: dict[str, Any]) -> str:
    """A Markdown table of per-corpus and overall rates."""
    head = ("| corpus | ham | spam | phish | accuracy | FP rate | FN rate | phish recall | "
            "ROC AUC | ham quarantined | spam+phish quarantined |")
    lines = [head, "|" + "---|" * 11]
    rows = list(res["corpora"].items()) + [("**overall**", res["overall"])]
    for name, r in rows:
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.5f}"
        lines.append(f"| {name} | {r['ham']} | {r['spam']} | {r['phish']} | {_pct(r['accuracy'])} | "
                     f"{_pct(r['fp_rate'], 3)} | {_pct(r['fn_rate'])} | {_pct(r['phish_recall'])} | "
                     f"{auc} | {_pct(r['quarantined_ham'], 3)} | {_pct(r['quarantined_bad'])} |")
    return "\n".join(lines)


def format_tradeoff(rows: list[dict[str, Any]]) -> str:
    lines = ["| flag at score ≥ | FP rate (ham flagged) | detection (spam+phish flagged) | phish recall |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threshold']:g} | {_pct(r['fp_rate'], 3)} | {_pct(r['detection'])} | "
                     f"{_pct(r['phish_recall'])} |")
    return "\n".join(lines)
