"""Draw the detection / false-positive trade-off measured by the accuracy programs.

    pip install -e '.[bench]'            # matplotlib
    python -m mailmoat.evaluation.tradeoff_plot [--results bench/results]

Reads `accuracy.json` (`accuracy`: the tier-1 model's out-of-fold curve over every
threshold, and the same for mail from sources never seen in training) and, when present,
`deep_cv.json` (`deep_cv`: the fine-tuned tier 2's out-of-fold curve, that of both tiers
together as the gateway combines them, and that of the plain mean of their probabilities)
and `pipeline_accuracy.json` (bench/pipeline_accuracy.py: the whole local pipeline's score
at its trade-off thresholds, default settings; also, when present, the runs with tier 2
voting on the old band and on all mail and with `combine = "mean"` on all mail, in
`pipeline-deep-vote-band/`, `pipeline-deep-all/` and `pipeline-deep-mean/`), and writes
`tradeoff.png` beside them. The FP axis is logarithmic, so the region a mail administrator
cares about (under 0.1 % of ham) is readable; the target (FP ≤ 0.05 %, detection ≥ 99.5 %)
is the shaded corner.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mailmoat.evaluation.paths import results_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(results_dir()))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    res = Path(args.results)
    acc = json.loads((res / "accuracy.json").read_text(encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    floor = 1e-5  # an FP rate of 0 is drawn at the left edge of the log axis
    for key, label, style in (("raw_curve", "tier 1, out-of-fold (grouped 5-fold)", "-"),
                              ("unseen_sources_curve",
                               "tier 1 on sources never seen in training", "--")):
        curve = acc.get(key) or {}
        if not curve:
            continue
        xs = [max(x, floor) * 100 for x, _ in curve["points"]]
        ys = [y * 100 for _, y in curve["points"]]
        ax.plot(xs, ys, style, drawstyle="steps-post", label=label)
    deep = res / "deep_cv.json"  # deep_cv: the fine-tuned tier 2, out-of-fold
    if deep.exists():
        curves = json.loads(deep.read_text(encoding="utf-8")).get("curves", {})
        for key, style, color, label in (
                ("tier2", ":", "tab:green", "tier 2 (fine-tuned), out-of-fold"),
                ("mean_of_probabilities_all_mail", "-.", "tab:brown",
                 "mean of the tiers' probabilities, all mail, out-of-fold"),
                ("together_all_mail", "-", "tab:red",
                 "tiers 1 and 2 together (mean log-odds), all mail, out-of-fold")):
            curve = curves.get(key) or {}
            if curve:
                ax.plot([max(x, floor) * 100 for x, _ in curve["points"]],
                        [y * 100 for _, y in curve["points"]], style, drawstyle="steps-post",
                        color=color, label=label)
    # The whole pipeline at its score thresholds: the default run, and (when present) the
    # other ways of running tier 2, each written by `bench/pipeline_accuracy.py ... --out
    # bench/results/pipeline-deep-{vote-band,all,mean}`.
    runs: tuple[tuple[Path, str, str, str | None], ...] = (
        (res / "pipeline_accuracy.json", "o", "black", None),
        (res / "pipeline-deep-vote-band" / "pipeline_accuracy.json", "D", "tab:gray",
         "whole local pipeline, tier 2 vote on the band 0.2–0.8 (default before)"),
        (res / "pipeline-deep-all" / "pipeline_accuracy.json", "s", "tab:purple",
         "whole local pipeline, tier 2 vote on all mail"),
        (res / "pipeline-deep-mean" / "pipeline_accuracy.json", "^", "tab:red",
         "whole local pipeline, combine = mean on all mail"))
    for path, marker, color, legend in runs:
        if not path.exists():
            continue
        run = json.loads(path.read_text(encoding="utf-8"))
        rows = run["combined"]["tradeoff"]
        if legend is None:
            tier2 = " with tier 2 (default settings)" if run.get("deep_run") else ""
            legend = f"whole local pipeline{tier2}, at score thresholds (labelled)"
        pts = [(max(r["fp_rate"], floor) * 100, r["detection"] * 100, r["threshold"])
               for r in rows if r["fp_rate"] is not None and r["threshold"] >= 1]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, color=color, label=legend)
        for x, y, t in pts:
            ax.annotate(f"≥{t:g}", (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=color)
    ax.fill_between([floor * 100, 0.05], 99.5, 100, color="green", alpha=0.15,
                    label="target: FP ≤ 0.05 %, detection ≥ 99.5 %")
    ax.set_xscale("log")
    ax.set_xlim(floor * 100, 20)
    ax.set_ylim(80, 100)
    ax.set_xlabel("false positives: ham flagged (%)")
    ax.set_ylabel("detection: spam and phish flagged (%)")
    ax.set_title("Detection vs false positives on the shared corpora (30,595 messages)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = res / "tradeoff.png"
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
