"""The trade-off curve of a continuous score: exact on a small case worked out by hand."""

from __future__ import annotations

from mailmoat.ml.corpus import Sample
from mailmoat.ml.evaluate import format_operating_curve, operating_curve


def _samples(labels: str) -> list[Sample]:
    kinds = {"h": "ham", "s": "spam", "p": "phish"}
    return [Sample(path=f"m{i}.eml", label=kinds[c], corpus="c", group=f"g{i}")
            for i, c in enumerate(labels)]


def test_best_detection_under_each_fp_ceiling():
    # 1,000 ham scored 0.000 … 0.999; 20 bad at 1.0 (above every ham), 20 at 0.9955 (just
    # above the ham at 0.995) and 10 at 0.5.
    ham = [i / 1000 for i in range(1000)]
    scores = ham + [1.0] * 20 + [0.9955] * 20 + [0.5] * 10
    samples = _samples("h" * 1000 + "s" * 20 + "p" * 20 + "s" * 10)
    curve = operating_curve(samples, scores)
    assert curve["n_ham"] == 1000 and curve["n_bad"] == 50
    best = {b["fp_ceiling"]: b for b in curve["best_detection_at_fp"]}
    # FP ≤ 0.05 % allows no ham (half a message): only the 20 above every ham are caught.
    assert best[0.0005]["ham_flagged"] == 0 and best[0.0005]["detection"] == 0.4
    # FP ≤ 0.5 % allows 5 ham: flagging from 0.9955 takes the ham at 0.996 … 0.999 (4) and
    # 40 bad; going lower gains no bad before it costs more ham than allowed.
    assert best[0.005]["ham_flagged"] == 4 and best[0.005]["detection"] == 0.8
    # Detection ≥ 99 % needs the ones at 0.5 as well, which flags every ham from 0.5: 50 %.
    need = {n["detection_floor"]: n for n in curve["fp_for_detection"]}
    assert need[0.99]["fp_rate"] == 0.5 and need[0.99]["threshold"] == 0.5
    # The curve runs from (0, 0) to (1, 1), FP rates never decreasing, thinned for plotting.
    pts = curve["points"]
    assert pts[0] == [0.0, 0.0] and pts[-1] == [1.0, 1.0]
    assert all(a[0] <= b[0] for a, b in zip(pts, pts[1:]))
    assert len(pts) <= 402
    table = format_operating_curve(curve)
    assert "| 0.50% | 80.00% | 4 of 1000 |" in table


def test_one_class_has_no_curve():
    assert operating_curve(_samples("hhh"), [0.1, 0.2, 0.3]) == {}
    assert format_operating_curve({}).startswith("(no curve")
