"""The fine-tuned tier 2 against tier 1, both out-of-fold on the same grouped folds.

    # scores from `python -m mailmoat.ml.deep.finetune train` (docs/deep.md, "Fine-tuning")
    nice python -m mailmoat.evaluation.deep_cv --data /tmp/ft/data.npz --run /tmp/ft/run [--corpus /tmp/corpus]

Both tiers score every message with a model that never saw its fold: `finetune prepare`
stores the very split of `mailmoat.evaluation.folds` (StratifiedGroupKFold on `group`, seed
0), and this program cross-validates tier 1 on it again here. Reported:
1. each tier alone, per corpus, at P(spam or phish) ≥ 0.5;
2. tier 1's uncertain band 0.2–0.8 (where tier 2 voted by default before `combine =
   "mean"`): how each tier and both together decide there;
3. what the gateway would do: the content check's score plus tier 2's symbol exactly as
   `scan/deep.py` computes it (`tier2_symbol`; no vote under `min_tokens` word pieces), at the
   default policy (tag 5, quarantine 10, reject 15), under each way of running tier 2
   (`GATEWAY`: the default, combine = mean on all mail, the vote on the old band and on all
   mail);
4. the whole trade-off curve of each tier, of both together (mean of log-odds) and of the
   plain mean of the two probabilities, over all mail;
5. the source test (trained without trec07p and phishing_pot, scored on them) and the era
   test (trained without modern_ham), for both tiers and every configuration of 3.
Writes bench/results/deep_cv.md and deep_cv.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.evaluation.corpus import open_corpus
from mailmoat.evaluation.folds import add_cv_args, oof_probabilities
from mailmoat.evaluation.report import command, pct, write_report
from mailmoat.evaluation.tier2 import (
    MIN_TOKENS,
    UNSEEN,
    left_out_note,
    load_tier2,
    tier2_scores,
    together,
)
from mailmoat.evaluation.verdicts import actions, flagged
from mailmoat.ml.evaluate import format_operating_curve, format_table, operating_curve, summarize
from mailmoat.ml.scoring import content_score
from mailmoat.ml.train import TrainParams, build_matrix, featurize, fit, labels_to_y
from mailmoat.scan.deep import DeepSettings

VOTE_BAND = (0.2, 0.8)  # the band tier 2 voted on by default until combine = mean

# What the gateway would decide under each way of running tier 2 (`[deep]` settings);
# None: the content check alone. The first with settings is the default configuration.
GATEWAY: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("content alone", None),
    ("+ tier 2, default (combine = mean, band 0.001–0.9999)", {}),
    ("+ tier 2, combine = mean on all mail", {"mode": "all"}),
    ("+ tier 2 vote on the band 0.2–0.8 (the default before)",
     {"combine": "vote", "band": VOTE_BAND}),
    ("+ tier 2 vote on all mail", {"combine": "vote", "mode": "all"}),
)


def alone(labels: np.ndarray, pbad: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    bad, flag = labels != "ham", pbad >= 0.5
    return {"n": len(labels), "accuracy": float((flag == bad).mean()),
            "fp_rate": float(flag[~bad].mean()) if (~bad).any() else None,
            "fp": int((flag & ~bad).sum()),
            "detection": float(flag[bad].mean()) if bad.any() else None,
            "missed": int((~flag & bad).sum()),
            "auc": float(roc_auc_score(bad, pbad)) if bad.any() and (~bad).any() else None}


def alone_table(samples: list[Any], labels: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> str:
    corp = np.array([s.corpus for s in samples])
    lines = ["| corpus | messages | accuracy: tier 1 / **tier 2** | FP rate: tier 1 / **tier 2** "
             "| detection: tier 1 / **tier 2** | ROC AUC: tier 1 / **tier 2** |",
             "|---|---|---|---|---|---|"]
    for c in [*sorted(set(corp)), "overall"]:
        m = np.ones(len(corp), bool) if c == "overall" else corp == c
        a, b = alone(labels[m], p1[m]), alone(labels[m], p2[m])
        auc = (f"{a['auc']:.5f} / **{b['auc']:.5f}**" if a["auc"] is not None else "n/a")
        lines.append(f"| {'**overall**' if c == 'overall' else c} | {int(m.sum())} | "
                     f"{pct(a['accuracy'])} / **{pct(b['accuracy'])}** | "
                     f"{pct(a['fp_rate'], 3)} ({a['fp']}) / **{pct(b['fp_rate'], 3)} ({b['fp']})** | "
                     f"{pct(a['detection'])} ({a['missed']} missed) / "
                     f"**{pct(b['detection'])} ({b['missed']} missed)** | {auc} |")
    return "\n".join(lines)


def band_table(labels: np.ndarray, p1: np.ndarray, p2: np.ndarray, voted: np.ndarray) -> tuple[str, dict]:
    lo, hi = VOTE_BAND
    rows = {}
    lines = ["| on tier 1's band | messages | accuracy | FP | missed |", "|---|---|---|---|---|"]
    inband = (p1 >= lo) & (p1 <= hi)
    for name, mask in (("band", inband), ("band, tier 2 voted (≥ min_tokens)", inband & voted)):
        bad = labels[mask] != "ham"
        for who, p in (("tier 1", p1[mask]), ("tier 2", p2[mask]),
                       ("both together", together(p1[mask], p2[mask], np.ones(mask.sum(), bool)))):
            flag = p >= 0.5
            r = {"messages": int(mask.sum()), "accuracy": float((flag == bad).mean()) if mask.any() else None,
                 "fp": int((flag & ~bad).sum()), "missed": int((~flag & bad).sum())}
            rows[f"{name}: {who}"] = r
            lines.append(f"| {name}: {who} | {r['messages']} | {pct(r['accuracy'])} | {r['fp']} | {r['missed']} |")
    return "\n".join(lines), rows


def gateway_scores(P1: np.ndarray, P2: np.ndarray, voted: np.ndarray,
                   settings: dict[str, Any] | None) -> np.ndarray:
    """Content score + tier 2's score (`tier2_scores`) under these `[deep]` settings (None:
    content alone)."""
    content = np.array([content_score(float(p[1]), float(p[2])) for p in P1])
    if settings is None:
        return content
    return np.round(content + tier2_scores(P1, P2, voted, DeepSettings(**settings))[0], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="finetune prepare's data.npz")
    ap.add_argument("--run", required=True, help="finetune train's output folder")
    add_cv_args(ap)
    args = ap.parse_args()
    started = time.perf_counter()
    root, samples = open_corpus(args.corpus)
    data, run = Path(args.data), Path(args.run)
    t2 = load_tier2(root, samples, data, run)
    P2, voted, max_tokens = t2.p, t2.voted, t2.max_tokens
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    labels = np.array([s.label for s in samples])
    y = labels_to_y(labels.tolist())

    params = TrainParams()
    print(f"[tier 1] featurising {len(samples)} messages", flush=True)
    X = build_matrix(featurize(samples, workers=args.workers), params.n_bits)
    P1 = oof_probabilities(samples, X, y, args.folds, params, print)
    p1, p2 = P1[:, 1] + P1[:, 2], P2[:, 1] + P2[:, 2]
    res: dict[str, Any] = {"messages": len(samples), "finetune": report,
                           "band": list(DeepSettings().band), "vote_band": list(VOTE_BAND),
                           "min_tokens": MIN_TOKENS, "tier2_voted": int(voted.sum()),
                           "tier2_short": int(t2.short.sum()),
                           "tier2_changed": int(t2.changed.sum())}
    # The whole trade-off of each tier and of both together (the gateway's
    # `deep_combined_probability`, the mean of their log-odds; where tier 2 has no vote,
    # tier 1 alone) over all mail: what running tier 2 on every message could reach at any
    # threshold; and, for comparison, the plain mean of the two probabilities.
    both = together(p1, p2, voted)
    res["curves"] = {"tier1": operating_curve(samples, p1.tolist()),
                     "tier2": operating_curve(samples, p2.tolist()),
                     "mean_of_probabilities_all_mail": operating_curve(
                         samples, np.where(voted, (p1 + p2) / 2, p1).tolist()),
                     "together_all_mail": operating_curve(samples, both.tolist())}
    res["tier1_alone"] = alone(labels, p1)
    covers = DeepSettings().covers  # where the default runs tier 2
    res["default_band_share"] = float(np.mean([covers(float(x)) for x in p1]))
    res["tier2_alone"] = alone(labels, p2)
    band_md, res["band_rows"] = band_table(labels, p1, p2, voted)

    gw: dict[str, dict[str, Any]] = {}
    for name, settings in GATEWAY:
        scores = gateway_scores(P1, P2, voted, settings)
        gw[name] = summarize(samples, scores.tolist(), actions(scores).tolist())
    res["gateway"] = gw

    tests: dict[str, Any] = {}
    band_share: dict[str, float] = {}  # per test, as default_band_share
    corp = np.array([s.corpus for s in samples])
    for name, held_corpora in UNSEEN.items():
        held = np.isin(corp, held_corpora)
        print(f"[{name} test] tier 1 trained without {held_corpora}", flush=True)
        m = fit(X[~held], y[~held], params)
        q1 = m.predict_matrix(X[held])
        q2 = load_tier2(root, samples, data, run, name).p[held]
        sub = labels[held]
        b1, b2 = q1[:, 1] + q1[:, 2], q2[:, 1] + q2[:, 2]
        bm = together(b1, b2, voted[held])  # as deep_combined_probability
        row: dict[str, Any] = {"tier1": alone(sub, b1), "tier2": alone(sub, b2),
                               "mean": alone(sub, bm)}
        band_share[name] = float(np.mean([covers(float(x)) for x in b1]))
        # What the gateway would do there under each way of running tier 2, flagged at the
        # tag threshold (default policy).
        tag = {g: np.array([flagged(x) for x in gateway_scores(q1, q2, voted[held], settings)])
               for g, settings in GATEWAY}
        for c in held_corpora:
            mc = corp[held] == c
            row[c] = {"tier1": alone(sub[mc], b1[mc]), "tier2": alone(sub[mc], b2[mc]),
                      "mean": alone(sub[mc], bm[mc]),
                      "gateway_flagged": {
                          m: {
                              lab: (float(t[mc & sel].mean()) if (mc & sel).any() else None)
                              for lab, sel in (("ham", sub == "ham"), ("bad", sub != "ham"))}
                          for m, t in tag.items()}}
        tests[name] = row
    res["tests"] = tests
    res["unseen_default_band_share"] = band_share
    res["seconds"] = round(time.perf_counter() - started)

    out = write_report(args.out, "deep_cv", data=res)
    cfg = report["config"]
    t_lines = ["| test | corpus | tier 1: FP rate / detection | **tier 2: FP rate / detection** "
               "| both together: FP rate / detection |", "|---|---|---|---|---|"]
    for name, row in tests.items():
        for c, r in row.items():
            if c in ("tier1", "tier2", "mean"):
                continue
            a, b, m = r["tier1"], r["tier2"], r["mean"]
            t_lines.append(f"| {name} | {c} | {pct(a['fp_rate'], 2)} / {pct(a['detection'])} | "
                           f"**{pct(b['fp_rate'], 2)} / {pct(b['detection'])}** | "
                           f"{pct(m['fp_rate'], 2)} / {pct(m['detection'])} |")
    md = [
        "# Tier 2 fine-tuned: out-of-fold against tier 1",
        "",
        (f"Command: `nice {command('mailmoat.evaluation.deep_cv')}` ({len(samples)} messages; "
         f"{res['seconds']} s here for tier 1's cross-validation). Tier 2's scores come from "
         f"`python -m mailmoat.ml.deep.finetune train` on {report.get('gpu', report['device'])} "
         f"(torch {report['torch']}; {sum(report['seconds'].values()):.0f} s for "
         f"{len(report['seconds'])} trainings): LoRA rank {cfg['rank']}, {cfg['epochs']} epochs, "
         f"batch {cfg['batch']}, fixed before any fold was scored. Both tiers use the same "
         f"{args.folds} grouped folds. Tier 2 reads {max_tokens} word pieces; "
         f"{res['tier2_short']} messages have fewer than {MIN_TOKENS} and get no tier-2 vote "
         "in the gateway (they count as tier 2 ≥ 0.5 or not by its raw score in the 'alone' "
         "table only)"
         + (f"; {left_out_note(res['tier2_changed'])}, and likewise counted in the 'alone' "
            "table only" if res["tier2_changed"] else "") + "."),
        "",
        "## Each tier alone (P(spam or phish) ≥ 0.5)",
        "",
        alone_table(samples, labels, p1, p2),
        "",
        f"## Tier 1's uncertain band ({VOTE_BAND[0]}–{VOTE_BAND[1]})",
        "",
        band_md,
        "",
        "## What the gateway decides (default policy: tag 5, quarantine 10, reject 15)",
        "",
        "Content check score + tier 2's symbol (`tier2_symbol`, as scan/deep.py emits it); the "
        "other check families are not included here (bench/pipeline_accuracy.py adds them). "
        f"The default band {DeepSettings().band[0]:g}–{DeepSettings().band[1]:g} holds tier 1's "
        f"out-of-fold P(spam or phish) of {100 * res['default_band_share']:.1f}% of the "
        "messages, and of "
        + ", ".join(f"{100 * v:.1f}% in the {n} test" for n, v in band_share.items())
        + " (tier 1 trained without those corpora): where tier 2 runs by default.",
        "",
    ]
    for name, r in gw.items():
        md += [f"### {name}", "", format_table(r), ""]
    md += ["## Best achievable trade-off over all mail (any threshold)", "",
           "Out-of-fold P(spam or phish) of tier 1, of tier 2, of both together "
           "(`deep_combined_probability`: the mean of their log-odds; tier 1 alone where "
           "tier 2 has no vote) and, for comparison, the plain mean of the two "
           "probabilities, each as one score: what running tier 2 on every message could "
           "reach with a threshold on it (`python -m mailmoat.evaluation.tradeoff_plot` draws the "
           "curves).", ""]
    for key, title in (("tier1", "tier 1"), ("tier2", "tier 2"),
                       ("mean_of_probabilities_all_mail", "mean of the two probabilities"),
                       ("together_all_mail", "both together (mean of log-odds)")):
        md += [f"### {title}", "", format_operating_curve(res["curves"][key]), ""]
    g_lines = ["| test | corpus | label | " + " / ".join(
        f"**{g}**" if settings == {} else g for g, settings in GATEWAY) + " |",
        "|---" * (3 + len(GATEWAY)) + "|"]
    for name, row in tests.items():
        for c, r in row.items():
            if c in ("tier1", "tier2", "mean"):
                continue
            g = r["gateway_flagged"]
            for lab, key in (("ham (FP)", "ham"), ("spam+phish (detection)", "bad")):
                if g["content alone"][key] is not None:
                    g_lines.append(f"| {name} | {c} | {lab} | " + " / ".join(
                        f"**{pct(g[n][key])}**" if settings == {} else pct(g[n][key])
                        for n, settings in GATEWAY) + " |")
    md += ["## Source and era tests", "",
           "Source: trained without trec07p and phishing_pot, scored on them. Era: trained "
           "without modern_ham (2019–2026 mailing lists), scored on it. Threshold 0.5 on "
           "P(spam or phish); both together is `deep_combined_probability`.", "",
           "\n".join(t_lines), "",
           "The same held-out mail through the gateway's scoring (content check score plus "
           "tier 2's symbol as scan/deep.py emits it; flagged = tag threshold or above; "
           "the other check families are not included), flagged under each configuration:",
           "",
           "\n".join(g_lines), ""]
    write_report(out, "deep_cv", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
