"""Learning from feedback on mail from a source the models never saw (trec07p, in arrival order).

    nice python -m mailmoat.evaluation.feedback --deep-run bench/results/finetune \
        --deep-data /tmp/ft/data.npz [--corpus /tmp/corpus] [--workers 2]
    nice python -m mailmoat.evaluation.feedback --stream trec06c --out bench/results/feedback-trec06c
    nice python -m mailmoat.evaluation.feedback --stream csdmc2010 --out bench/results/feedback-csdmc2010
    nice python -m mailmoat.evaluation.feedback \
        --modes "releases and reports,releases and reports + poisoner" \
        [--stream S] ... --out bench/results/feedback-poisoning[-S]

The cross-validated tables say how the models do on the sources they were trained on; a new
deployment meets mail from a source they never saw, and its administrators and users then
release what was wrongly held and report what got through. This replays that: tier 1 is
trained on every corpus except trec07p and phishing_pot (the source test of
`mailmoat.evaluation.deep_cv`), tier 2's scores are those of the fine-tuning run's model trained without
them, and trec07p's messages (one mailbox, 2007) arrive in their original order (inmail.N).
Each message is scored as the gateway's content stage scores it by default (content check +
tier 2's symbol by `scan.deep.tier2_symbol`, then the lesson memory's near-copy adjustment
as the `lessons` check makes it; the other check families are left out; flagged: the
default policy's action for that score is not accept), against the model
and memory the gateway would use at that moment: the base model plus everything learned so
far (`mailmoat.ml.learn.learn`, the code behind `mailmoat learn` and the console's "not spam"
/ "report spam" buttons, into a temporary data_dir); every message let through is added to
the delivered-mail sample (`mailmoat.ml.delivered`) as the gateway's verdict hook adds it,
so reports learn their words against the mail delivered so far. Four runs over the same
stream:
- no feedback (the baseline);
- releases only: every flagged ham is released and taught as ham;
- reports only: every missed spam is reported and taught as spam;
- releases and reports: both.
Reported: false positives and misses overall and per block of 1,000 messages, how many
lessons were taken and how many near-copies the memory adjusted. A fifth run, only when
asked for (`--modes "releases and reports,releases and reports + poisoner"`), adds to the
honest feedback an account that reports every 10th delivered ham as spam (taken over, or
careless); at the end both runs score the whole stream again with everything they learned
(no more learning; the taught messages themselves included), and the poisoned run once more
after `unlearn(LessonFilter(taught_by=...))` took that account's lessons back. Tier 2 does
not learn (its model is fixed). `--stream trec06c` replays a second mailbox (Chinese, TREC 2006, by its
messages' numbers) with tier 1 trained without it and no tier 2 (the fine-tuning run has no
model trained without trec06c); it was run while the lesson design was still changing, so
it is a second replay, not a held-out test. `--stream csdmc2010` (CSDMC 2010, English, by
its messages' numbers, likewise tier 1 alone) was first run after the design was fixed: the
held-out check of it.
Writes feedback.md and feedback.json under --out (default bench/results).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.config import config_from_dict
from mailmoat.evaluation.corpus import open_corpus
from mailmoat.evaluation.paths import results_dir
from mailmoat.evaluation.report import command, write_report
from mailmoat.evaluation.tier2 import UNSEEN, left_out_note, load_tier2, tier2_score
from mailmoat.evaluation.verdicts import DEFAULT_POLICY, flagged
from mailmoat.ml import delivered
from mailmoat.ml.features import N_FEATURES_BITS
from mailmoat.ml.learn import LessonFilter, delta_path, get_model, learn, unlearn
from mailmoat.ml.lessons import adjustment, lessons_path, read
from mailmoat.ml.scoring import ContentSettings, content_score
from mailmoat.ml.train import TrainParams, build_matrix, featurize, fit, labels_to_y
from mailmoat.scan.deep import DeepSettings

# The streams a replay can use: the corpus, what tier 1 is trained without, and whether
# tier 2 has scores from a model trained without them (deep_cv's source test).
STREAMS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "trec07p": (UNSEEN["source"], "source"),  # trained without trec07p and phishing_pot
    "trec06c": (("trec06c",), None),  # a second mailbox, Chinese; tier 2 has no such test
    "csdmc2010": (("csdmc2010",), None),  # a third, held out from the lesson design
}
TAG = DEFAULT_POLICY.tag_threshold  # reported; flagged is decide()'s action, not this
BLOCK = 1000
MODES = ("no feedback", "releases only", "reports only", "releases and reports")
POISONED = "releases and reports + poisoner"  # not in the default --modes
POISON_EVERY = 10  # the poisoning account reports every 10th delivered ham as spam
POISONER = "mallory@bench.test"


def arrival(path: str) -> int:
    """A message's place in its corpus's original order (trec07p inmail.N, trec06c N.eml,
    csdmc2010 TRAIN_N.eml.eml)."""
    m = re.search(r"(\d+)(?:\.eml)+$", path)
    return int(m.group(1)) if m else 0


def replay(mode: str, stream: list[int], samples: list[Any], X: Any, P2: np.ndarray,
           voted: np.ndarray, base_path: Path, log) -> dict[str, Any]:
    """Score the stream in order under `mode`; teach the errors the mode feeds back."""
    st = DeepSettings()
    started = time.perf_counter()
    flags = np.zeros(len(stream), bool)  # any action other than accept
    lessons = {"ham": 0, "spam": 0}
    with tempfile.TemporaryDirectory(prefix="mm-feedback-") as tmp:
        config = config_from_dict({"storage": {"data_dir": tmp},
                                  "content": {"model_path": str(base_path)}})
        memory = lessons_path(delta_path(config))
        similarity = config.section("content", ContentSettings).lesson_similarity
        sample = delivered.sample_path(delta_path(config).parent)
        near_copies = {"LEARNED_SPAM": 0, "LEARNED_PHISH": 0, "LEARNED_HAM": 0}
        poisoned = 0
        final: dict[str, dict[str, int]] = {}

        def score_now(i: int) -> tuple[float, tuple[str, float] | None]:
            """The content stage's score of message i with what was learned so far."""
            p1 = get_model(config).predict_matrix(X[i])[0]  # base + what was learned so far
            t2 = tier2_score(p1, P2[i], bool(voted[i]), st)
            score = content_score(float(p1[1]), float(p1[2])) + (t2[1] if t2 else 0.0)
            # ... and the lesson memory, as the `lessons` check applies it
            near = read(memory, N_FEATURES_BITS).nearest(X[i].indices, X[i].data, similarity)
            adj = adjustment(near, score) if near else None
            return score + (adj[1] if adj else 0.0), adj

        def errors_now() -> dict[str, int]:
            """FP and misses over the whole stream with what is learned at the end."""
            now = np.array([flagged(score_now(i)[0]) for i in stream])
            lab = np.array([samples[i].label for i in stream])
            return {"fp": int((now & (lab == "ham")).sum()), "missed": int((~now & (lab != "ham")).sum())}

        for k, i in enumerate(stream):
            score, adj = score_now(i)
            if adj:
                near_copies[adj[0]] += 1
            flags[k] = flagged(score)
            if not flags[k]:
                # delivered: sampled as a counter-example, as the gateway's verdict hook does
                delivered.append(sample, X[i].indices)
            label = samples[i].label
            teach = None
            honest = mode in ("releases and reports", POISONED)
            if (honest or mode == "releases only") and label == "ham" and flags[k]:
                teach = "ham"  # released from quarantine, or "not spam" on a tagged copy
            elif (honest or mode == "reports only") and label != "ham" and not flags[k]:
                teach = "spam"  # reported by the recipient
            if teach:
                learn(config, Path(samples[i].path).read_bytes(), teach, actor="bench")
                lessons[teach] += 1
            elif mode == POISONED and label == "ham" and not flags[k]:
                # An account taken over (or a careless user) reports good mail as spam.
                poisoned += 1
                if poisoned % POISON_EVERY == 0:
                    learn(config, Path(samples[i].path).read_bytes(), "spam", actor=POISONER)
            if (k + 1) % 2500 == 0:
                log(f"  [{mode}] {k + 1}/{len(stream)} ({time.perf_counter() - started:.0f}s)")
        if mode in ("releases and reports", POISONED):
            final["learned"] = errors_now()
        if mode == POISONED:
            undo = unlearn(config, LessonFilter(taught_by=POISONER), actor="admin")
            final["after unlearn --taught-by"] = errors_now()
            final["taken_back"] = {"messages": len(undo.messages), "changes": undo.changes}
    labels = np.array([samples[i].label for i in stream])
    ham, bad = labels == "ham", labels != "ham"
    blocks = []
    for b in range(0, len(stream), BLOCK):
        s = slice(b, b + BLOCK)
        blocks.append({"from": b + 1, "to": min(b + BLOCK, len(stream)),
                       "fp": int((flags[s] & ham[s]).sum()), "ham": int(ham[s].sum()),
                       "missed": int((~flags[s] & bad[s]).sum()), "spam": int(bad[s].sum())})
    return {"fp": int((flags & ham).sum()), "ham": int(ham.sum()),
            "missed": int((~flags & bad).sum()), "spam": int(bad.sum()),
            "lessons": lessons, "near_copies": near_copies, "blocks": blocks,
            "flagged_ham": [samples[i].path for i, f, h in zip(stream, flags, ham) if f and h],
            "final": final, "seconds": round(time.perf_counter() - started)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="extracted corpora (default: /tmp/corpus)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stream", choices=sorted(STREAMS), default="trec07p",
                    help="the corpus replayed (trec06c: without tier 2, which has no model "
                         "trained without it)")
    ap.add_argument("--deep-run", help="finetune train's output folder (trec07p)")
    ap.add_argument("--deep-data", help="finetune prepare's data.npz (trec07p)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N messages of the stream")
    ap.add_argument("--out", default=str(results_dir()))
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma-separated runs (also: {POISONED!r}: releases and reports, and "
                         f"an account that reports every {POISON_EVERY}th delivered ham as spam, "
                         "taken back at the end with unlearn --taught-by)")
    args = ap.parse_args()
    started = time.perf_counter()
    root, samples = open_corpus(args.corpus)
    y = labels_to_y([s.label for s in samples])
    params = TrainParams()
    print(f"featurising {len(samples)} messages", flush=True)
    X = build_matrix(featurize(samples, workers=args.workers), params.n_bits)
    corp = np.array([s.corpus for s in samples])
    held_out, deep_test = STREAMS[args.stream]
    held = np.isin(corp, held_out)
    base = fit(X[~held], y[~held], params)
    if deep_test:
        if not (args.deep_run and args.deep_data):
            raise SystemExit(f"--stream {args.stream} needs --deep-run and --deep-data")
        P2, voted, changed, *_ = load_tier2(root, samples, Path(args.deep_data),
                                           Path(args.deep_run), deep_test)
    else:
        P2, voted = np.zeros((len(samples), 3)), np.zeros(len(samples), bool)  # no tier 2
        changed = np.zeros(len(samples), bool)

    stream = sorted(np.flatnonzero(corp == args.stream).tolist(),
                    key=lambda i: arrival(samples[i].path))
    if args.limit:
        stream = stream[:args.limit]
    res: dict[str, Any] = {"stream": args.stream, "messages": len(stream),
                           "trained_without": list(held_out), "tag_threshold": TAG,
                           "tier2": bool(deep_test),
                           "tier2_left_out_changed": int(changed[stream].sum()),
                           "deep": DeepSettings().model_dump(
                               include={"mode", "band", "combine", "min_tokens"})}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="mm-base-") as tmp:
        base_path = base.save(Path(tmp) / "base.npz")
        for mode in args.modes.split(","):
            print(f"[{mode}]", flush=True)
            runs[mode] = replay(mode, stream, samples, X, P2, voted, base_path, print)
    res["runs"] = runs
    res["seconds"] = round(time.perf_counter() - started)
    md = report(res, "nice " + command("mailmoat.evaluation.feedback"))
    write_report(args.out, "feedback", md, res)
    print(md)


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.2f}%" if d else "n/a"


def report(res: dict[str, Any], cmd: str) -> str:
    runs = res["runs"]
    lines = [
        "# Learning from feedback: an unseen source, in arrival order",
        "",
        (f"Command: `{cmd}` ({res['messages']} messages of "
         f"{res['stream']}; {res['seconds']} s). Tier 1 trained without "
         f"{', '.join(res['trained_without'])}; "
         + ("tier 2 from the fine-tuning run's model trained without them; scored as the "
            "content stage does by default "
            f"({res['deep']['combine']}, band {res['deep']['band'][0]:g}–"
            f"{res['deep']['band'][1]:g}); "
            + (f"{left_out_note(res['tier2_left_out_changed'])}; "
               if res["tier2_left_out_changed"] else "") if res["tier2"] else
            "no tier 2 (it has no model trained without this corpus), so tier 1 alone; ")
         + 
         f"flagged = score ≥ {res['tag_threshold']:g} (tag or stricter). The other check "
         "families are left out. Lessons go through `mailmoat.ml.learn.learn`, as the "
         "console's buttons and `mailmoat learn` do; near-copies of taught mail are adjusted "
         "as the `lessons` check does; every message let through joins the delivered-mail "
         "sample that reports learn their words against, as the gateway's verdict hook "
         "adds it."),
        "",
        ("| feedback | ham flagged (FP) | spam missed | lessons: ham / spam | near-copies: "
         "LEARNED_SPAM / LEARNED_HAM |"),
        "|---|---|---|---|---|",
    ]
    for mode, r in runs.items():
        lines.append(f"| {mode} | {r['fp']} of {r['ham']} ({_pct(r['fp'], r['ham'])}) | "
                     f"{r['missed']} of {r['spam']} ({_pct(r['missed'], r['spam'])}) | "
                     f"{r['lessons']['ham']} / {r['lessons']['spam']} | "
                     f"{r['near_copies']['LEARNED_SPAM']} / {r['near_copies']['LEARNED_HAM']} |")
    finals = {m: r["final"] for m, r in runs.items() if r.get("final")}
    if POISONED in finals:
        lines += ["", ("**Poisoning and taking it back.** The whole stream scored again at the "
                       "end, with everything learned by then (no more learning): honest "
                       "feedback; the same plus an account that reported every "
                       f"{POISON_EVERY}th delivered ham as spam; and that run after "
                       "`unlearn --taught-by` took the account's lessons back "
                       f"({finals[POISONED]['taken_back']['messages']} messages, "
                       f"{finals[POISONED]['taken_back']['changes']} weight changes)."),
                  "", "| at the end | ham flagged (FP) | spam missed |", "|---|---|---|"]
        rows = [(f"{m}", f["learned"]) for m, f in finals.items()]
        rows.append((f"{POISONED}, after unlearn --taught-by", finals[POISONED]["after unlearn --taught-by"]))
        for name, e in rows:
            lines.append(f"| {name} | {e['fp']} | {e['missed']} |")
    lines += ["", f"Per block of {BLOCK} messages in arrival order, FP rate / miss rate:", "",
              "| messages | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    first = next(iter(runs.values()))
    for j, blk in enumerate(first["blocks"]):
        cells = []
        for r in runs.values():
            b = r["blocks"][j]
            cells.append(f"{_pct(b['fp'], b['ham'])} / {_pct(b['missed'], b['spam'])}")
        lines.append(f"| {blk['from']}–{blk['to']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
