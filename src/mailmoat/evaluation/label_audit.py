"""How much of the whole pipeline's error is the corpora's own labels: the default-policy
verdicts as labelled, and again with the disputed labels of label_audit.tsv (beside this
module) set aside.

    nice python bench/pipeline_accuracy.py --workers 2 --deep-run bench/results/finetune \\
        --deep-data /tmp/ft/data.npz --dump-scores /tmp/scores.npz
    python -m mailmoat.evaluation.label_audit --scores /tmp/scores.npz

The verdicts are recomputed from the dump exactly as bench/pipeline_accuracy.py makes them
(content + tier 2 + other families after the evidence gate, a forced action and the bulk
level, through `mailmoat.policy.decide` at the default policy), and the program refuses a
dump whose verdicts it cannot reproduce. It also counts, over the whole index and without
regard to any model, texts that carry both labels (the same set of body words, at least
MIN_WORDS of them, in ham and in spam/phish): a check on label noise that no reading of
errors can bias.

Why both figures, and why the second one is not a result: the audit file lists only messages
found by reading the *errors* of one run. Nobody read the messages the pipeline got right, and
some of those labels may be wrong in the filter's disfavour; so "set aside" can only improve
the figures. It says how much of the distance to the targets is the labels, not how good the
filter is. The headline in README stays the figure as labelled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.evaluation.corpus import open_corpus
from mailmoat.evaluation.paths import results_dir
from mailmoat.evaluation.report import command, pct, write_report
from mailmoat.evaluation.verdicts import verdict

AUDIT = Path(__file__).with_name("label_audit.tsv")
MIN_WORDS = 20
READINGS = ("ham", "spam", "phish")


def read_audit(path: Path) -> list[dict[str, str]]:
    """The audit's rows: path, label, reading, reason. Comments start with '#'."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.rstrip("\n").split("\t")
            if len(cells) != 4 or cells[2] not in READINGS or cells[1] == cells[2]:
                raise SystemExit(f"{path}:{n}: want path, label, reading (another of "
                                 f"{'/'.join(READINGS)}), reason separated by tabs")
            rows.append(dict(zip(("path", "label", "reading", "reason"), cells)))
    return rows


def totals(d: Any) -> np.ndarray:
    """Every dumped message's total score: after the evidence gate (`combined`), or the sum
    of the parts in a dump made before the dump held it."""
    if "combined" in d.files:
        return np.asarray(d["combined"])
    return np.round(d["content"] + d["deep"] + d["others"], 3)


def verdicts(d: Any) -> np.ndarray:
    """The default-policy action of every dumped message: its total, forced action and bulk
    level through `mailmoat.policy.decide`."""
    total = totals(d)
    bulk = d["bulk_level"] if "bulk_level" in d.files else np.full(len(total), -1)
    return np.array([verdict(float(s), str(f) or None, int(b) if b >= 0 else None).action.value
                     for s, f, b in zip(total, d["forced"], bulk)])


def rates(labels: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    ham, bad = labels == "ham", labels != "ham"
    return {"ham": int(ham.sum()), "fp": int((flagged & ham).sum()),
            "bad": int(bad.sum()), "missed": int((~flagged & bad).sum()),
            "fp_rate": float((flagged & ham).sum() / ham.sum()) if ham.any() else None,
            "detection": float((flagged & bad).sum() / bad.sum()) if bad.any() else None,
            "accuracy": float((flagged == bad).mean())}


def label_conflicts(root: Path, samples: list[Any]) -> list[list[str]]:
    """Groups of messages with the same set of body words (≥ MIN_WORDS) and both labels."""
    from mailmoat.ml.train import featurize

    tokens = featurize(samples, workers=2)
    by_words: dict[str, list[int]] = defaultdict(list)
    for i, (text, _meta) in enumerate(tokens):
        words = sorted({t for t in text if t.startswith("w:") and not t.startswith(("w:c:", "w:b:"))})
        if len(words) >= MIN_WORDS:
            by_words[hashlib.sha1("\n".join(words).encode()).hexdigest()].append(i)
    out = []
    for idx in by_words.values():
        if len({samples[i].label == "ham" for i in idx}) == 2:
            out.append(sorted(f"{Path(samples[i].path).relative_to(root)} ({samples[i].label})"
                              for i in idx))
    return out


def table(labels: np.ndarray, corpora: np.ndarray, flagged: np.ndarray,
          keep: np.ndarray) -> tuple[list[str], dict[str, Any]]:
    lines = [("| corpus | ham | FP: as labelled / **set aside** | spam+phish | "
             "detection: as labelled / **set aside** | accuracy: as labelled / **set aside** |"),
             "|---|---|---|---|---|---|"]
    res: dict[str, Any] = {}
    for name in sorted(set(corpora.tolist())) + ["overall"]:
        m = np.ones(len(labels), bool) if name == "overall" else corpora == name
        a, b = rates(labels[m], flagged[m]), rates(labels[m & keep], flagged[m & keep])
        res[name] = {"as_labelled": a, "set_aside": b}
        label = f"**{name}**" if name == "overall" else name
        lines.append(
            f"| {label} | {a['ham']} → {b['ham']} | {pct(a['fp_rate'], 3)} ({a['fp']}) / "
            f"**{pct(b['fp_rate'], 3)} ({b['fp']})** | {a['bad']} → {b['bad']} | "
            f"{pct(a['detection'])} ({a['missed']} missed) / **{pct(b['detection'])} "
            f"({b['missed']} missed)** | {pct(a['accuracy'])} / **{pct(b['accuracy'])}** |")
    return lines, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scores", required=True, help="bench/pipeline_accuracy.py --dump-scores file")
    ap.add_argument("--audit", default=str(AUDIT))
    ap.add_argument("--corpus", default=None, help="extracted shared corpora (default: "
                    "/tmp/corpus, else the archives of ../shared/corpus)")
    ap.add_argument("--expect", default=str(results_dir() / "pipeline_accuracy.json"),
                    help="the pipeline run whose verdicts the dump must reproduce")
    ap.add_argument("--out", default=str(results_dir()))
    args = ap.parse_args()

    root, samples = open_corpus(args.corpus)
    d = np.load(args.scores, allow_pickle=False)
    rel = np.array([str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p
                    for p in d["path"]])
    labels, corpora = d["label"].astype(str), d["corpus"].astype(str)
    acts, total = verdicts(d), totals(d)
    flagged = acts != "accept"
    overall = rates(labels, flagged)
    expect = json.loads(Path(args.expect).read_text(encoding="utf-8"))["combined"]["overall"]
    for key in ("fp_rate", "detection"):
        if abs(overall[key] - expect[key]) > 1e-9:
            raise SystemExit(f"{args.scores} does not reproduce {args.expect}: {key} "
                             f"{overall[key]} here, {expect[key]} there")

    audit = read_audit(Path(args.audit))
    pos = {p: i for i, p in enumerate(rel)}
    keep = np.ones(len(labels), bool)
    listed = []
    for row in audit:
        i = pos.get(row["path"])
        if i is None:
            raise SystemExit(f"{row['path']}: not in the dump (another corpus or sample?)")
        if labels[i] != row["label"]:
            raise SystemExit(f"{row['path']}: the index labels it {labels[i]}, the audit "
                             f"{row['label']}")
        keep[i] = False
        listed.append((row, acts[i], float(total[i])))

    conflicts = label_conflicts(root, samples)
    lines, res = table(labels, corpora, flagged, keep)
    ham_side = sum(1 for r, _, _ in listed if r["label"] == "ham")
    cmd = command("mailmoat.evaluation.label_audit")
    md = [
        "# Label audit: the pipeline's errors read by a person",
        "",
        (f"Command: `{cmd}` (dump of `bench/pipeline_accuracy.py --dump-scores`, whose "
        "default-policy verdicts it reproduces; audit: src/mailmoat/evaluation/label_audit.tsv)."),
        "",
        (f"Every error of the default run was read ({overall['fp']} ham flagged, "
        f"{overall['missed']} spam/phish missed). {len(listed)} labels are disputed: "
        f"{ham_side} ham that is spam by any reading, {len(listed) - ham_side} spam/phish that "
        "is not (label_audit.tsv gives each one's reason). Newsletters and adverts keep "
        "their label: whether they were wanted was the recipient's call."),
        "",
        ("**Not a result.** Only errors were read, so setting the disputed messages aside can "
        "only help; the messages the pipeline got right were not read and may hold wrong "
        "labels too. The second figure says how much of the distance to the targets (FP ≤ "
        "0.05 %, detection ≥ 99.5 %) is the corpora's labels; README's headline stays the "
        "figure as labelled."),
        "",
        "## Default policy: as labelled, and with the disputed labels set aside",
        "",
        *lines,
        "",
        "## Disputed labels",
        "",
        "| message | label | reading | verdict (score) | reason |",
        "|---|---|---|---|---|",
        *[f"| {r['path']} | {r['label']} | {r['reading']} | {a} ({s:g}) | {r['reason']} |"
          for r, a, s in listed],
        "",
        "## Texts that carry both labels (whole index, no model involved)",
        "",
        (f"Messages with the same set of body words (at least {MIN_WORDS}) labelled ham in one "
        f"place and spam/phish in another: {len(conflicts)} such text"
        f"{'' if len(conflicts) == 1 else 's'}."),
        "",
        *[f"- {', '.join(c)}" for c in conflicts],
        "",
    ]
    out = write_report(args.out, "label_audit", "\n".join(md),
                       {"disputed": [dict(r, verdict=a, score=s) for r, a, s in listed],
                        "rates": res, "conflicts": conflicts})
    print("\n".join(lines))
    print(f"wrote {out / 'label_audit.md'}")


if __name__ == "__main__":
    main()
