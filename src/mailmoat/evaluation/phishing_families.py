"""Measure the phishing (`urls`) and BEC (`impersonation`) families on the corpora.

Runs the real Scanner (network off, default config plus the options below) over the phish
corpora (nazario, phishing_pot) and the ham corpora (spamassassin, trec07p, csdmc2010, trec06c,
modern_ham), and reports per check family:

- phish: % of messages with at least one symbol of the family;
- ham: % with any symbol of the family, and % whose score from the family alone (and from
  both families together) the policy flags (tag or stricter, `mailmoat.policy.decide`);
- per symbol: how often it fires on phish and on ham;
- the time the two checks take per message (mean, p50, p99).

Messages are split by their `group` column (sha1(group) even -> "tune", odd -> "test"), so
near-copies stay on one side; weights were tuned on `tune`, numbers are reported for `test`
(`--split all` for everything).

    nice python -m mailmoat.evaluation.phishing_families --split test
    nice python -m mailmoat.evaluation.phishing_families --split tune --dump /tmp/phish_tune.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from mailmoat.config import config_from_dict
from mailmoat.evaluation.corpus import corpus_dir
from mailmoat.evaluation.verdicts import flagged
from mailmoat.message.model import Envelope
from mailmoat.ml.corpus import design_half
from mailmoat.scan.base import BuildContext, ScanResult
from mailmoat.scan.engine import Scanner
from mailmoat.scan.facts import Facts

PHISH = ("nazario", "phishing_pot")
HAM = ("spamassassin", "trec07p", "csdmc2010", "trec06c", "modern_ham")
FAMILIES = ("urls", "impersonation")


def load_index(root: Path, corpus: str, label: str, split: str) -> list[tuple[Path, str]]:
    out = []
    with open(root / f"index-{corpus}.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["label"] != label:
                continue
            if split != "all" and design_half(row["group"]) != split:
                continue
            out.append((root / row["path"], row["group"]))
    return out


def envelope_for(raw: bytes) -> Envelope:
    head = raw.split(b"\n\n", 1)[0].decode("latin-1")
    mail_from = ""
    for line in head.splitlines():
        if line.lower().startswith("return-path:"):
            mail_from = line.split(":", 1)[1].strip().strip("<>")
            break
    return Envelope(mail_from=mail_from, rcpt_tos=("user@example.test",), client_ip="192.0.2.10")


async def run(args: argparse.Namespace) -> None:
    cfg = config_from_dict({"scan": {"network": False}})
    scanner = Scanner(BuildContext(config=cfg, network=False))
    ours = [c for c in scanner.pipeline.checks if c.family in FAMILIES]
    root = corpus_dir(args.corpus)
    sets: list[tuple[str, str, list[tuple[Path, str]]]] = []
    for c in PHISH:
        sets.append((c, "phish", load_index(root, c, "phish", args.split)))
    for c in HAM:
        sets.append((c, "ham", load_index(root, c, "ham", args.split)))
    rng = random.Random(7)
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None
    stats: dict[str, dict] = {}
    timings: list[float] = []
    sym_counts: dict[str, Counter] = {"phish": Counter(), "ham": Counter()}
    totals: Counter[str] = Counter()
    started = time.perf_counter()
    for corpus, label, items in sets:
        if args.sample and len(items) > args.sample:
            items = rng.sample(items, args.sample)
        st = stats[corpus] = {"label": label, "n": 0, "any": Counter(), "tag": Counter()}
        for path, group in items:
            raw = path.read_bytes()
            out = await scanner.scan(raw, envelope_for(raw))
            res = out.result
            # CPU time of our two checks alone, re-run on the parsed message: the pipeline's
            # wall-clock timings include other checks of the same stage and, on a shared
            # machine, other processes.
            t0 = time.thread_time()
            for check in ours:
                # What the two checks read of earlier stages: the sender memory.
                again = ScanResult(specs=scanner.pipeline.specs,
                                   facts=Facts(sender_memory=res.facts.sender_memory))
                await check.run(out.message, again)
            timings.append(time.thread_time() - t0)
            st["n"] += 1
            totals[label] += 1
            by_fam: dict[str, float] = defaultdict(float)
            names = []
            for s in res.symbols:
                if s.group in FAMILIES:
                    by_fam[s.group] += s.score
                    names.append(s.name)
            for fam in FAMILIES:
                if any(s.group == fam for s in res.symbols):
                    st["any"][fam] += 1
                if flagged(by_fam[fam], cfg.policy):
                    st["tag"][fam] += 1
            if names:
                st["any"]["both"] += 1
            if flagged(sum(by_fam.values()), cfg.policy):
                st["tag"]["both"] += 1
            for name in set(names):
                sym_counts[label][name] += 1
            if dump and names:
                dump.write(json.dumps({"path": str(path), "corpus": corpus, "label": label,
                                       "score": round(sum(by_fam.values()), 2),
                                       "symbols": [(s.name, s.score, s.reason) for s in res.symbols
                                                   if s.group in FAMILIES]},
                                      ensure_ascii=False) + "\n")
    await scanner.close()
    elapsed = time.perf_counter() - started
    if dump:
        dump.close()

    def pct(a: int, n: int) -> str:
        return f"{100.0 * a / n:.2f}%" if n else "-"

    print(f"split={args.split} sample={args.sample or 'all'} messages={sum(totals.values())} "
          f"wall={elapsed:.0f}s")
    print()
    print("| corpus | label | n | urls: any | impersonation: any | either: any | "
          "urls alone >= tag | impersonation alone >= tag | both together >= tag |")
    print("|---|---|---|---|---|---|---|---|---|")
    for corpus, st in stats.items():
        n = st["n"]
        print(f"| {corpus} | {st['label']} | {n} | {pct(st['any']['urls'], n)} | "
              f"{pct(st['any']['impersonation'], n)} | {pct(st['any']['both'], n)} | "
              f"{pct(st['tag']['urls'], n)} | {pct(st['tag']['impersonation'], n)} | "
              f"{pct(st['tag']['both'], n)} |")
    for label in ("phish", "ham"):
        n = totals[label]
        agg_any: Counter[str] = Counter()
        agg_tag: Counter[str] = Counter()
        for st in stats.values():
            if st["label"] == label:
                agg_any.update(st["any"])
                agg_tag.update(st["tag"])
        print(f"| **all {label}** | {label} | {n} | {pct(agg_any['urls'], n)} | "
              f"{pct(agg_any['impersonation'], n)} | {pct(agg_any['both'], n)} | "
              f"{pct(agg_tag['urls'], n)} | {pct(agg_tag['impersonation'], n)} | "
              f"{pct(agg_tag['both'], n)} |")
    print()
    print("| symbol | phish hits | ham hits |")
    print("|---|---|---|")
    for name in sorted(set(sym_counts["phish"]) | set(sym_counts["ham"])):
        print(f"| `{name}` | {pct(sym_counts['phish'][name], totals['phish'])} | "
              f"{pct(sym_counts['ham'][name], totals['ham'])} ({sym_counts['ham'][name]}) |")
    if timings:
        ts = sorted(timings)
        print()
        print(f"urls+impersonation CPU time per message: mean {statistics.mean(ts) * 1e3:.3f} ms, "
              f"p50 {ts[len(ts) // 2] * 1e3:.3f} ms, p99 {ts[int(len(ts) * 0.99)] * 1e3:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="extracted corpora (default: /tmp/corpus, else the "
                    "archives of ../shared/corpus)")
    ap.add_argument("--split", choices=("tune", "test", "all"), default="test")
    ap.add_argument("--sample", type=int, default=0, help="at most N messages per corpus (0: all)")
    ap.add_argument("--dump", default="", help="write messages with hits as JSON lines here")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
