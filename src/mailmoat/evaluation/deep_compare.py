"""Two or more tier-2 fine-tuning runs side by side, on the messages every one of them scored
out-of-fold: tier 2 alone, and the gateway's default verdict with each.

    nice python bench/pipeline_accuracy.py --workers 2 --deep-run bench/results/finetune \\
        --deep-data /tmp/ft/data.npz --dump-scores /tmp/scores.npz
    python -m mailmoat.evaluation.deep_compare --scores /tmp/scores.npz \\
        --run "64 pieces=bench/results/finetune,/tmp/ft/data.npz" \\
        --run "128 pieces=/tmp/ft128/run,/tmp/ft128/data.npz"

A run may have scored only some folds (`finetune train --only-folds`: a CPU can afford one
fold, not five); the comparison keeps the messages that every run scored and whose text every
run read as today's parser does (`tier2.changed_inputs`), so each run is judged on the same
mail. Tier 1's scores and the other families' come from the pipeline dump, so "gateway" is
bench/pipeline_accuracy.py's default verdict (content + tier 2 combined by the mean of their
log-odds on the band, + the other families, through `mailmoat.policy.decide`) on those
messages, without the evidence gate: the dump holds the gate's outcome for its own tier-2
run only, not what the gate would do with another.
Writes deep_compare.md under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.evaluation.corpus import open_corpus
from mailmoat.evaluation.label_audit import rates
from mailmoat.evaluation.paths import results_dir
from mailmoat.evaluation.report import command, write_report
from mailmoat.evaluation.tier2 import load_tier2, tier2_scores
from mailmoat.evaluation.verdicts import actions


def _auc(bad: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(bad, score))


def row(name: str, bad: np.ndarray, flagged: np.ndarray, score: np.ndarray) -> str:
    r = rates(np.where(bad, "spam", "ham"), flagged)
    return (f"| {name} | {100 * r['accuracy']:.2f}% | {100 * r['fp_rate']:.3f}% ({r['fp']}) | "
            f"{100 * r['detection']:.2f}% ({r['missed']} missed) | {_auc(bad, score):.5f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scores", required=True, help="bench/pipeline_accuracy.py --dump-scores file")
    ap.add_argument("--run", action="append", required=True,
                    help="NAME=RUN_DIR,DATA (finetune train's --out and the prepare file it used)")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--out", default=str(results_dir()))
    args = ap.parse_args()

    root, samples = open_corpus(args.corpus)
    d = np.load(args.scores, allow_pickle=False)
    if [str(p) for p in d["path"]] != [s.path for s in samples]:
        raise SystemExit(f"{args.scores} holds other messages (sampled or another index)")
    runs: list[tuple[str, Any]] = []
    described: list[str] = []
    for spec in args.run:
        name, _, paths = spec.partition("=")
        run_dir, _, data = paths.partition(",")
        if not (name and run_dir and data):
            raise SystemExit(f"--run {spec!r}: want NAME=RUN_DIR,DATA")
        t2 = load_tier2(root, samples, Path(data), Path(run_dir))
        runs.append((name, t2))
        rep = json.loads((Path(run_dir) / "report.json").read_text(encoding="utf-8"))
        described.append(f"- {name}: `{run_dir}`, {t2.max_tokens} word pieces, trained on "
                         f"{rep.get('gpu') or rep.get('device')} (torch {rep.get('torch')}), "
                         f"trainings: {', '.join(sorted(rep.get('seconds', {})))}")
    keep = np.ones(len(samples), dtype=bool)
    for _, t2 in runs:
        keep &= np.isfinite(t2.p).all(axis=1) & ~t2.changed
    if not keep.any():
        raise SystemExit("no message was scored by every run")
    bad = d["label"][keep] != "ham"
    p1, others, forced = d["p1"][keep], d["others"][keep], d["forced"][keep]
    content = d["content"][keep]

    def gateway(deep: np.ndarray) -> np.ndarray:
        return actions(np.round(content + deep + others, 3), forced) != "accept"

    head = ["| | accuracy | FP rate | detection | ROC AUC |", "|---|---|---|---|---|"]
    alone = [*head, row("tier 1 (out-of-fold, from the dump)", bad, (p1[:, 1] + p1[:, 2]) >= 0.5,
                        p1[:, 1] + p1[:, 2])]
    verdict = [*head]
    content_total = content + others
    verdict.append(row("content and other families, no tier 2", bad, gateway(np.zeros(len(bad))),
                       content_total))
    for name, t2 in runs:
        p2 = t2.p[keep]
        alone.append(row(f"tier 2: {name}", bad,
                         (p2[:, 1] + p2[:, 2]) >= 0.5, p2[:, 1] + p2[:, 2]))
        deep, _ = tier2_scores(p1, p2, t2.voted[keep])
        verdict.append(row(f"with tier 2: {name}", bad, gateway(deep), content_total + deep))
    n_ham = int((~bad).sum())
    cmd = command("mailmoat.evaluation.deep_compare")
    md = "\n".join([
        "# Tier-2 runs compared on the same messages", "",
        f"Command: `{cmd}`.", "",
        (f"{int(keep.sum())} messages ({n_ham} ham, {int(bad.sum())} spam/phish): those every "
        "run scored out-of-fold and read as today's parser does. ROC AUC of the gateway rows "
        "ranks by the total score."), "", *described, "",
        "## Tier 2 alone (P(spam or phish) ≥ 0.5)", "", *alone, "",
        "## The gateway's default verdict (tag 5, quarantine 10, reject 15)", "", *verdict, ""])
    write_report(args.out, "deep_compare", md)
    print(md)


if __name__ == "__main__":
    main()
