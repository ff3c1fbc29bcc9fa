"""Latency of the content stage with tier 2 on the uncertain band, and memory.

    python bench/content_latency.py --corpus /tmp/corpus [--messages 400] [--engine auto]

Runs a pipeline of two checks on held-out corpus messages up to 100 KB: a tier-1 PROXY
(HashingVectorizer + SGD, `mailmoat.evaluation.tier1_proxy`, never trained on these
messages, which sets `result.facts.content` as the real tier 1 does) and the real tier-2
`DeepCheck` in band mode. For each message it times
`Pipeline.scan` (the content stage; parsing is timed apart) and reports p50/p99 with and
without tier 2 (the baseline: the same pipeline without the deep check, same messages, same
run), the share of messages tier 2 ran on, tier 2's own p50/p99 on those, the same percentiles in
CPU time (this thread plus the deep worker's, which a busy shared machine hardly changes,
unlike wall-clock time), the encoder alone
(tokenising included) in ms/message for a text long enough to fill the head's word pieces,
for each engine (numpy, onnxruntime fp32, onnxruntime int8) at the head's length and at
128, and the process RSS before and after loading the model. Tier 2 runs with the
gateway's defaults (`[deep] engine = "auto"`: the engine the head was trained for, the graph
built into the user cache on first use), unless --engine says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import numpy as np
import psutil

from mailmoat.evaluation.tier1_proxy import train_tier1_proxy
from mailmoat.message.model import ParsedMessage
from mailmoat.message.parse import parse_message
from mailmoat.ml.deep.corpus import is_test_group, read_index
from mailmoat.ml.deep.engine import open_named
from mailmoat.scan.base import Check, ScanResult, SymbolSpec
from mailmoat.scan.deep import DeepCheck, DeepModel, DeepSettings
from mailmoat.scan.facts import ModelFacts
from mailmoat.scan.pipeline import Pipeline


class Tier1Proxy(Check):
    name = "content"
    family = "content"
    symbols: dict[str, SymbolSpec] = {}

    def __init__(self, vec, clf) -> None:  # type: ignore[no-untyped-def]
        self.vec, self.clf = vec, clf

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        text = f"{msg.subject}\n{msg.from_domain}\n{msg.body_text[:20000]}"
        p = float(self.clf.predict_proba(self.vec.transform([text]))[0, 1])
        result.facts.content = ModelFacts(p_bad=p, p_spam=p, p_phish=0.0)


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(xs) * 1000, q)), 2) if xs else float("nan")


# CPU seconds spent in the deep model's worker thread, one entry per scored message: unlike
# wall-clock time it hardly depends on what else runs on the machine.
DEEP_CPU: list[float] = []


def count_deep_cpu(model: DeepModel) -> None:
    score = model.score

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        c = time.thread_time()
        try:
            return score(*args, **kwargs)
        finally:
            DEEP_CPU.append(time.thread_time() - c)

    model.score = timed  # type: ignore[method-assign]


async def scan_all(pipe: Pipeline, msgs: list[ParsedMessage],
                   cpu: list[float] | None = None) -> tuple[list[float], list[ScanResult]]:
    times, results = [], []
    for m in msgs:
        n, c = len(DEEP_CPU), time.thread_time()
        t = time.perf_counter()
        r = await pipe.scan(m)
        times.append(time.perf_counter() - t)
        if cpu is not None:  # this thread (tier 1, the loop) + the deep worker's share
            cpu.append(time.thread_time() - c + sum(DEEP_CPU[n:]))
        results.append(r)
    return times, results


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/tmp/corpus")
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--timeout-ms", type=int, default=250)
    ap.add_argument("--big", type=int, default=20, help="extra messages padded to ~100 KB")
    ap.add_argument("--engine", choices=("auto", "onnx", "numpy"), default="auto")
    ap.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto")
    ap.add_argument("--deep-mode", choices=("band", "all"), default="band",
                    help="[deep] mode: tier 2 on tier 1's uncertain band (default) or on all mail")
    ap.add_argument("--no-engine-table", action="store_true",
                    help="skip timing the encoder alone for every engine")
    a = ap.parse_args()
    load_start = psutil.getloadavg()[0]
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    vec, clf = train_tier1_proxy(a.corpus)
    rows = [r for r in read_index(a.corpus) if is_test_group(r.group)]
    random.Random(5).shuffle(rows)
    raws = [b for b in (r.path.read_bytes() for r in rows[: a.messages * 2]) if len(b) <= 100_000]
    raws = raws[: a.messages]
    # Held-out mail is mostly small; add messages padded to just under 100 KB (their own
    # text repeated), so the size limit of the target is exercised too.
    for b in raws[: a.big]:
        head_, _, body = b.partition(b"\n\n")
        reps = max(1, 99_000 // max(1, len(body)))
        raws.append((head_ + b"\n\n" + body * reps)[:100_000])
    t = time.perf_counter()
    msgs = [parse_message(b) for b in raws]
    parse_ms = (time.perf_counter() - t) / len(msgs) * 1000
    rss_tier1 = proc.memory_info().rss
    rss_before_model = proc.memory_info().rss
    settings = DeepSettings(timeout_ms=a.timeout_ms, engine=a.engine, precision=a.precision,
                            mode=a.deep_mode)
    fut = DeepModel.preload(engine=settings.engine, precision=settings.precision)
    model = fut.result()
    rss_deep = proc.memory_info().rss

    base = Pipeline([Tier1Proxy(vec, clf)])
    deep = DeepCheck(settings, fut)
    full = Pipeline([Tier1Proxy(vec, clf), deep])

    async def run() -> dict[str, object]:
        await scan_all(full, msgs[:20])  # warm-up
        cb: list[float] = []
        cf: list[float] = []
        tb, _ = await scan_all(base, msgs, cb)
        count_deep_cpu(model)
        tf, res = await scan_all(full, msgs, cf)
        ran = [i for i, r in enumerate(res) if r.facts.deep is not None or r.has("DEEP_FAIL")]
        deep_t = [res[i].timings["deep"] for i in ran]
        fails = sum(1 for r in res if r.has("DEEP_FAIL"))
        # The "on_band" keys keep their names with --deep-mode all (then: on every message
        # that has enough text; deep_mode says which).
        return {"deep_mode": a.deep_mode,
                "tier1_only": {"p50_ms": pct(tb, 50), "p99_ms": pct(tb, 99)},
                "cpu_ms_tier1_only": {"p50_ms": pct(cb, 50), "p99_ms": pct(cb, 99)},
                "cpu_ms_tier1+tier2_on_band": {"p50_ms": pct(cf, 50), "p99_ms": pct(cf, 99),
                                               "max_ms": pct(cf, 100)},
                "cpu_ms_tier2_on_band": {"p50_ms": pct(DEEP_CPU, 50),
                                         "p99_ms": pct(DEEP_CPU, 99)},
                "tier1+tier2_on_band": {"p50_ms": pct(tf, 50), "p99_ms": pct(tf, 99),
                                        "max_ms": pct(tf, 100)},
                "p99_ratio_vs_tier1_only": round(pct(tf, 99) / pct(tb, 99), 1),
                "tier2_ran_on": len(ran), "tier2_share": round(len(ran) / len(msgs), 4),
                "tier2_deep_fail_over_budget": fails,
                "tier2_on_band": {"p50_ms": pct(deep_t, 50), "p99_ms": pct(deep_t, 99)}}

    out = asyncio.run(run())
    rss_after_scans = proc.memory_info().rss
    # A mail-like text of 2,000 characters (message_text's cap) that fills any length.
    long_text = ("The quarterly invoice is attached, please confirm the payment details. "
                 * 40)[:2000]
    enc_ms: dict[str, dict[str, float]] = {}
    if not a.no_engine_table:
        lengths = sorted({model.head.max_tokens, 128})
        engines = {(name, n): open_named(name, max_tokens=n)
                   for name in ("numpy", "onnx-fp32", "onnx-int8") for n in lengths}
        wall: dict[tuple[str, int], list[float]] = {k: [] for k in engines}
        cpu: dict[tuple[str, int], list[float]] = {k: [] for k in engines}
        for e in engines.values():
            e.encode([long_text])
        for _round in range(5):  # interleaved rounds: a loaded machine hurts every engine alike
            for k, e in engines.items():
                t, c = time.perf_counter(), time.thread_time()
                for _ in range(10):
                    e.encode([long_text])
                wall[k].append((time.perf_counter() - t) / 10 * 1000)
                cpu[k].append((time.thread_time() - c) / 10 * 1000)
        for (name, n) in engines:
            enc_ms[f"{name}, {n} pieces"] = {
                "wall_median": round(float(np.median(wall[(name, n)])), 1),
                "wall_min": round(min(wall[(name, n)]), 1),
                "cpu_median": round(float(np.median(cpu[(name, n)])), 1),
                "vs_numpy_128": round(float(np.median(wall[(name, n)])
                                            / np.median(wall[("numpy", 128)])), 2)}
    out.update({
        "messages": len(msgs), "max_size_bytes": max(len(b) for b in raws),
        "mean_size_bytes": int(sum(len(b) for b in raws) / len(raws)),
        "messages_over_90kb": sum(1 for b in raws if len(b) > 90_000),
        "parse_ms_mean": round(parse_ms, 2),
        "tier2_engine": model.engine, "tier2_word_pieces": model.head.max_tokens,
        "encoder_alone_ms_per_message_1_thread_batch_1": enc_ms,
        "rss_mb": {"start": rss0 >> 20, "with_tier1_proxy": rss_tier1 >> 20,
                   "before_deep_model": rss_before_model >> 20,
                   "with_deep_model": rss_deep >> 20, "after_scans": rss_after_scans >> 20,
                   "end_after_engine_timings": proc.memory_info().rss >> 20},
        "cpu": f"{psutil.cpu_count()} cores, load average {load_start:.1f} at the start, "
               f"{psutil.getloadavg()[0]:.1f} at the end",
    })
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
