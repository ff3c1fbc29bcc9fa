"""Per-message cost of the account behaviour check at 100,000 accounts (issue 17).

    PYTHONPATH=src nice python bench/internal_check.py [--accounts 100000] [--messages 20000]
        [--redis redis://127.0.0.1:6379/0] [--scan]

What is timed, per message, is the guard's look-up and update (`InternalGuard.observe`:
the account's baseline and window fetched, signals evaluated, the baseline learned and put
back), after every account has been seen once (warm: the steady state of a gateway; a
first sight costs one database read in a thread on top). Senders are drawn from a
heavy-tailed distribution over all accounts; each message has one to three recipients,
half of them new; four messages in five come from a fifth of the accounts, one message
every 50 ms of message time (so no account nears a limit: the path timed is the common
one, not a flagging, which adds a database write in a thread). Two paths, in one run:

* `sqlite`: state in memory, written behind to SQLite (`sync()` every 5 s in a thread);
  the write of all dirty baselines is timed too.
* `redis`: windows and baselines in Redis, with `--redis`: one round trip before the
  verdict, the write-back after it (the account's next message waits for that).

`--scan` adds the baseline the ratios are against: the whole scan of a small internal
message (parse, every default check, policy) with `[internal]` off and on, so the check's
share of a message's cost is measured in the same run. Each call is timed on the wall clock
and in this thread's CPU time (which leaves out the time the process waits for a CPU or for
Redis); a noise floor, the wall time of one event-loop step, is measured first, so a p99 on
a busy machine can be read against it. Prints a table; `--json` writes the figures too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mailmoat.config import config_from_dict
from mailmoat.internal.baseline import Entry
from mailmoat.internal.check import SYMBOLS
from mailmoat.internal.fingerprint import recipient_key, simhash
from mailmoat.internal.guard import InternalGuard
from mailmoat.internal.identity import SenderIdentity
from mailmoat.internal.signals import MessageFacts
from mailmoat.store.db import Database

T0 = 1_780_000_000.0


def weight(name: str, factor: float) -> float:
    return round(SYMBOLS[name].weight * factor, 3)


def message(rng: random.Random, account: int, at: float, n_accounts: int
            ) -> tuple[SenderIdentity, MessageFacts, Entry]:
    name = f"user{account}@example.test"
    rcpts = [f"user{rng.randrange(n_accounts)}@example.test" if rng.random() < 0.5
             else f"new{rng.randrange(10**9)}@partner.test" for _ in range(rng.randint(1, 3))]
    external = sum(1 for r in rcpts if r.endswith("partner.test"))
    ident = SenderIdentity(account=name, source="header", client_ip="192.0.2.25",
                           network="192.0.2.0/24", helo="mail.example.test",
                           agent="microsoft outlook")
    facts = MessageFacts(at=at, recipients=len(rcpts), internal=len(rcpts) - external,
                         external=external, network=ident.network, agent=ident.agent,
                         client_ip=ident.client_ip, types=(), link_domains=("partner.test",),
                         reply_to="", reply_to_freemail=False, forwarded=False,
                         freemail_rcpts=0, category="clean", content_score=0.0,
                         threat_evidence=False, tag_threshold=5.0)
    entry = Entry(at=at, fingerprint=rng.getrandbits(64) | 1,
                  recipients=tuple(recipient_key(r) for r in rcpts), new=0, external=external,
                  external_attachments=False, freemail=0, forwarded=False)
    return ident, facts, entry


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


async def run_path(name: str, config: Any, db: Database | None, accounts: int, messages: int,
                   seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    guard = InternalGuard(config, db)
    await guard.start()
    if guard._sync_task is not None:  # the bench times the write-behind itself, below
        guard._sync_task.cancel()
    before = rss_mb()
    at = T0
    started = time.perf_counter()
    for a0 in range(0, accounts, 100):  # every account seen once: the warm state
        batch = []
        for a in range(a0, min(accounts, a0 + 100)):
            at += 0.01
            batch.append(message(rng, a, at, accounts))
        await asyncio.gather(*(guard.observe(*item, weight) for item in batch))
    warm_s = time.perf_counter() - started
    rss = rss_mb() - before
    # Skewed senders: four messages in five come from a fifth of the accounts.
    busy = max(1, accounts // 5)
    draws = [rng.randrange(busy) if rng.random() < 0.8 else rng.randrange(accounts)
             for _ in range(messages)]
    times, cpu = [], []
    for a in draws:
        at += 0.05
        item = message(rng, a, at, accounts)
        c = time.thread_time()
        t = time.perf_counter()
        await guard.observe(*item, weight)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    flush = 0.0
    dirty = 0
    if db is not None:
        src = guard.shared if guard.shared is not None else guard.memory
        dirty = len(src.dirty) + len(getattr(src, "evicted", {}))
        t = time.perf_counter()
        await guard.sync()
        flush = time.perf_counter() - t
    await guard.close()
    us = [x * 1e6 for x in times]
    cpu_us = [x * 1e6 for x in cpu]
    return {"path": name, "accounts": accounts, "messages": messages,
            "p50_us": round(pct(us, 0.50), 1), "p99_us": round(pct(us, 0.99), 1),
            "mean_us": round(statistics.fmean(us), 1),
            "cpu_p50_us": round(pct(cpu_us, 0.50), 1), "cpu_p99_us": round(pct(cpu_us, 0.99), 1),
            "warm_s": round(warm_s, 1),
            "memory_mb": round(rss, 1), "flush_rows": dirty, "flush_s": round(flush, 2),
            "flagged": guard.stats.flagged}


async def scan_baseline(n: int) -> dict[str, Any]:
    """p50/p99 of a whole scan of a small internal message, [internal] off and on."""
    from mailmoat.message.model import Direction, Envelope
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner
    from mailmoat.evaluation.messages import make_email

    out: dict[str, Any] = {}
    for enabled in (False, True):
        cfg = config_from_dict({
            "smtp": {"trusted_networks": ["192.0.2.0/24"], "internal_domains": ["example.test"]},
            "internal": {"enabled": enabled, "identity_header": "X-Authenticated-Sender"},
            "scan": {"network": False}})
        scanner = Scanner(BuildContext(config=cfg, network=False))
        rng = random.Random(7)
        times = []
        for i in range(n + 50):
            k = rng.randrange(2000)
            raw = make_email(sender=f"<user{k}@example.test>", to="team@example.test",
                             subject=f"Notes {i}", body=("Hi team,\nthe notes of today's "
                             f"meeting are below. Item {i}: agreed.\n") * 8,
                             headers={"X-Authenticated-Sender": f"user{k}@example.test"})
            env = Envelope(mail_from=f"user{k}@example.test", rcpt_tos=("team@example.test",),
                           client_ip="192.0.2.25", direction=Direction.INTERNAL,
                           received_at=T0 + i)
            t = time.perf_counter()
            await scanner.scan(raw, env)
            if i >= 50:  # the first ones load models
                times.append(time.perf_counter() - t)
        await scanner.close()
        us = [x * 1e6 for x in times]
        out["on" if enabled else "off"] = {"p50_us": round(pct(us, 0.5), 1),
                                           "p99_us": round(pct(us, 0.99), 1)}
    return out


async def noise_floor(n: int) -> dict[str, float]:
    """The same clock around a step of the event loop and one dict look-up: on a busy
    machine its p99 and p99.9 are the descheduling every timing here also pays."""
    table = {i: i for i in range(100_000)}
    rng = random.Random(3)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await asyncio.sleep(0)
        table.get(rng.randrange(100_000))
        times.append((time.perf_counter() - t) * 1e6)
    return {"p50_us": round(pct(times, 0.5), 1), "p99_us": round(pct(times, 0.99), 1),
            "p999_us": round(pct(times, 0.999), 1), "load": os.getloadavg()[0],
            "cpus": os.cpu_count() or 0}


def fingerprint_cost(n: int) -> dict[str, float]:
    body = ("Hi team,\nthe notes of today's meeting are below. We agreed on the plan and "
            "the next steps.\n") * 8
    t = time.perf_counter()
    for i in range(n):
        simhash(f"Notes {i}", body)
    return {"simhash_us": round((time.perf_counter() - t) / n * 1e6, 1)}


async def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--redis", default="", help="redis:// URL for the Redis path")
    ap.add_argument("--scan", action="store_true", help="measure the scan baseline too")
    ap.add_argument("--json", default="", help="also write the figures here")
    args = ap.parse_args()
    results: dict[str, Any] = {"paths": [], "noise": await noise_floor(20_000)}
    with tempfile.TemporaryDirectory() as d:
        cfg = config_from_dict({"storage": {"data_dir": d}, "scan": {"network": False}})
        db = Database(cfg.database_url)
        db.create_schema()
        results["paths"].append(await run_path("sqlite", cfg, db, args.accounts, args.messages, 1))
        db.dispose()
    if args.redis:
        import redis

        prefix = f"mailmoat-bench-{os.getpid()}:"
        with tempfile.TemporaryDirectory() as d:
            cfg = config_from_dict({"storage": {"data_dir": d}, "scan": {"network": False},
                                    "redis": {"url": args.redis, "key_prefix": prefix}})
            db = Database(cfg.database_url)
            db.create_schema()
            try:
                results["paths"].append(await run_path("redis", cfg, db, args.accounts,
                                                       args.messages, 1))
            finally:
                r = redis.Redis.from_url(args.redis)
                for keys in iter(lambda: list(r.scan_iter(f"{prefix}*", count=10_000))[:10_000],
                                 []):
                    r.delete(*keys)
                r.close()
                db.dispose()
    results["fingerprint"] = fingerprint_cost(2000)
    if args.scan:
        results["scan"] = await scan_baseline(500)
    n = results["noise"]
    print(f"noise floor (an event-loop step): p50 {n['p50_us']} µs, p99 {n['p99_us']} µs, "
          f"p99.9 {n['p999_us']} µs; load average {n['load']:.1f} on {n['cpus']} CPUs")
    print(f"{'path':8} {'accounts':>9} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8} "
          f"{'CPU p50':>8} {'CPU p99':>8} {'memory MB':>10} {'write-behind':>22}")
    for p in results["paths"]:
        print(f"{p['path']:8} {p['accounts']:>9} {p['p50_us']:>8} {p['p99_us']:>8} "
              f"{p['mean_us']:>8} {p['cpu_p50_us']:>8} {p['cpu_p99_us']:>8} "
              f"{p['memory_mb']:>10} {p['flush_rows']:>8} rows in {p['flush_s']:>5} s")
    print(f"content fingerprint (simhash of a 1 KB message): "
          f"{results['fingerprint']['simhash_us']} µs")
    if "scan" in results:
        s = results["scan"]
        print(f"whole scan of a small internal message: [internal] off p50 {s['off']['p50_us']} "
              f"µs, p99 {s['off']['p99_us']} µs; on p50 {s['on']['p50_us']} µs, p99 "
              f"{s['on']['p99_us']} µs")
        for p in results["paths"]:
            print(f"  {p['path']} look-up + update p50 = {p['p50_us'] / s['off']['p50_us']:.1%} "
                  f"of the scan's p50 (off)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
