#!/usr/bin/env python3
"""How well `[internal]` catches taken-over accounts, on months of simulated company mail.

    nice env PYTHONPATH=src .venv/bin/python bench/internal_accounts.py \
        [--seeds 1,2,3] [--accounts 500] [--days 61] [--volume 0.4] [--identity header|auth] \
        [--deep] [--internal KEY=VALUE ...] [--limit N] [--out bench/results/internal_accounts]

For each seed, `mailmoat.internal.simulate` plans an organisation's internal and outbound
mail (legitimate bursts included) with the takeover scenarios injected in the last part of
the run, and renders every message to RFC 5322 bytes in a second process. Each
(message, envelope) goes through what the SMTP intake does with it, in time order:

1. the account gate (a suspended account's mail is answered 4xx/5xx before DATA is
   scanned, as `GatewayHandler` does at MAIL and DATA);
2. `Scanner.scan(raw, Envelope(..., received_at=t))` — the scanner built as `app.build`
   builds it (a SQLite database, the process's account guard shared through
   `BuildContext.extras`), so the message is parsed and every check family and policy
   runs; the behaviour check reads the other checks' verdicts;
3. the outcome: delivered (accept, tag), held (quarantine), rejected, or answered 4xx
   (deferred: the upstream mail server retries after 5, 10, 20, ... minutes, up to 4000 s
   apart, for 5 days, as Postfix does) or 5xx (refused).

An administrator is simulated too: a flagged account that was not taken over is released
`--review-minutes` after the flag (its queued mail then flows); one that was taken over is
cleaned up (password reset, forwarding rule removed) and released `--cleanup-hours` later,
after which the intruder sends nothing more and their queued mail is purged from the
upstream's queue.

What is reported, per scenario: whether every account was flagged, at which of its
malicious messages (1 = the first), how many malicious messages were delivered before the
flag and in all, and the signals that flagged it; over the run: false alerts (a flag on an
account not taken over at that time) per 1,000 accounts per day, over the clean part
(before the first takeover) and the whole run, and per million legitimate messages sent
(employee-sent mail, as Ho et al., USENIX Security 2019, count it), and the legitimate
mail that was held, deferred or refused. Several seeds show how the figures move.

Network checks are off (`[scan] network = false`: the simulated domains have no DNS),
tier 2 (the deep model) is off unless `--deep` (it costs ~20 ms a message), and so is the
lessons check (no lessons exist in a fresh run, so it cannot fire, but with no lessons file
it costs ~12 ms a message); the content model (tier 1) and every other local check run.
Everything else is the default configuration plus the `[internal]` contract
(`identity_header = "X-Authenticated-Sender"`, the company mail server in
`trusted_networks`); `--internal KEY=VALUE` (a TOML value) changes one `[internal]` setting.

The detector is reached through one function, `detector()`, below: nothing else here
imports `mailmoat.internal` beyond the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import itertools
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailmoat.config import Config, config_from_dict
from mailmoat.internal.simulate import (
    MAIL_SERVER_IP,
    SCENARIOS,
    SimConfig,
    SimMessage,
    Simulation,
    simulate,
)
from mailmoat.message.model import Direction, Envelope
from mailmoat.scan.base import Action, BuildContext
from mailmoat.scan.engine import Scanner, ScanOutcome
from mailmoat.store.db import Database

DEFAULT_VOLUME = 0.4
RETRY_FIRST = 300.0  # Postfix minimal_backoff_time
RETRY_MAX = 4000.0  # maximal_backoff_time
QUEUE_LIFETIME = 5 * 86400.0  # maximal_queue_lifetime
TARGET_FLAG_BY = 10
TARGET_MEDIAN = 3
TARGET_FP_PER_1000_DAY = 0.5
BATCH = 200


# -- the one place that knows the detector -------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the account detector made of one scanned message."""

    account: str  # "" when the message has no sending account
    flagged: bool  # this message flagged the account
    score: float  # what the behaviour symbols added to the message's score
    reply: str | None  # the SMTP reply when the intake answers instead of spooling
    signals: tuple[str, ...]  # the symbols that counted


@dataclass
class Detector:
    extras: dict[str, Any]  # BuildContext.extras: the guard the intake and the scanner share
    gate: Callable[[bytes, Envelope], Awaitable[str | None]]  # the intake's refusal at MAIL/DATA
    judge: Callable[[ScanOutcome], Decision]
    release: Callable[[str, float], Awaitable[None]]  # an administrator lifts a restriction
    close: Callable[[], Awaitable[None]]


def detector(config: Config, db: Database) -> Detector:
    """The adapter: everything the evaluation asks of `mailmoat.internal`.

    * `InternalGuard(config, db)` — one per process, as `app.build` makes it; handed to the
      scanner's `internal` check through `BuildContext.extras["internal_guard"]`;
    * `resolve_identity(envelope, header, ...)` + `guard.refusal(account, t)` — what
      `GatewayHandler` asks at MAIL (SMTP AUTH) and DATA (header or envelope identity);
    * `outcome.result.facts.internal` (a `Judgement`: account, flagged, action, reply,
      signals) — a `defer`/`refuse` action is answered with its reply, not spooled;
    * `release_account(config, db, account, actor, now=t)` + `guard.sync()` — the console's
      release, read back by the guard as a gateway does every `[internal] sync_seconds`.
    """
    try:
        from mailmoat.internal.accounts import release_account
        from mailmoat.internal.guard import InternalGuard
        from mailmoat.internal.identity import header_value, resolve_identity
        from mailmoat.internal.settings import InternalSettings
    except ImportError as exc:
        raise SystemExit(f"the account detector is not in this tree ({exc}); this evaluation "
                         "needs mailmoat.internal.guard, .identity and .accounts") from exc
    settings = config.section("internal", InternalSettings)
    guard = InternalGuard(config, db)
    internal_domains = frozenset(config.internal_domains)
    import ipaddress

    trusted_nets = [ipaddress.ip_network(n, strict=False) for n in config.smtp.trusted_networks]

    def trusted(ip: str | None) -> bool:
        try:
            return any(ipaddress.ip_address(ip or "") in n for n in trusted_nets)
        except ValueError:
            return False

    async def gate(raw: bytes, env: Envelope) -> str | None:
        sender = resolve_identity(env, lambda h: header_value(raw, h),
                                  identity_header=settings.identity_header,
                                  trusted=trusted(env.client_ip),
                                  internal_domains=internal_domains)
        if sender is None:
            return None
        return await guard.refusal(sender.account, env.received_at)

    def judge(outcome: ScanOutcome) -> Decision:
        j = outcome.result.facts.internal
        if j is None:
            return Decision("", False, 0.0, None, ())
        reply = j.reply if j.action in ("defer", "refuse") else None
        return Decision(j.account, bool(j.flagged), float(j.score), reply,
                        tuple(x.signal.name for x in j.signals if x.counted))

    async def release(account: str, at: float) -> None:
        await asyncio.to_thread(release_account, config, db, account, "evaluation", now=at)
        await guard.sync()

    return Detector(extras={"internal_guard": guard}, gate=gate, judge=judge, release=release,
                    close=guard.close)


# -- the replay ----------------------------------------------------------------------------


def _produce(cfg: SimConfig, limit: int, queue: Any) -> None:
    """Child process: render the run's messages and hand them over in batches."""
    try:
        sim = simulate(cfg)
        batch: list[SimMessage] = []
        for m in itertools.islice(sim.messages(), limit or None):
            batch.append(m)
            if len(batch) >= BATCH:
                queue.put(batch)
                batch = []
        queue.put(batch)
        queue.put(None)
    except BaseException as exc:  # the parent must not wait forever
        queue.put(repr(exc))
        raise


def _rendered(cfg: SimConfig, limit: int) -> Iterator[SimMessage]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=16)
    proc = ctx.Process(target=_produce, args=(cfg, limit, queue), daemon=True)
    proc.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, str):
                raise RuntimeError(f"the simulator failed: {item}")
            yield from item
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()


@dataclass
class Tx:
    """One (message, envelope) and what became of it."""

    msg: SimMessage
    first: float  # first attempt
    attempts: int = 0
    outcome: str = ""  # delivered | held | rejected | refused | deferred (still) | dropped
    done_at: float = 0.0
    behaviour: float = 0.0  # the behaviour symbols' part of its score, last attempt


@dataclass
class AccountFlag:
    account: str
    at: float
    compromised: bool  # taken over at that time
    kind: str  # what the flagging message was (a burst, "new", a scenario, ...)
    signals: tuple[str, ...]


@dataclass
class Run:
    seed: int
    sim: Simulation
    txs: list[Tx] = field(default_factory=list)
    flags: list[AccountFlag] = field(default_factory=list)
    alerts: list[AccountFlag] = field(default_factory=list)  # flags that open an alert
    elapsed: float = 0.0
    cpu: float = 0.0  # seconds of this process (the gateway's side)
    render_cpu: float = 0.0  # seconds of the simulator's process
    scanned: int = 0
    gated: int = 0


def build_config(sim: Simulation, data_dir: str, deep: bool,
                 overrides: dict[str, Any]) -> Config:
    internal = {"enabled": True, "identity_header": sim.config.identity_header}
    internal.update(overrides)
    return config_from_dict({
        "smtp": {"trusted_networks": [f"{MAIL_SERVER_IP}/32"],
                 "internal_domains": [sim.config.domain]},
        "storage": {"data_dir": data_dir},
        # No lessons exist in a fresh run, so the lessons check cannot fire; with no
        # lessons file it still costs ~12 ms a message (two empty 2^20-column matrices
        # built and converted per call), more than the rest of the scan.
        "scan": {"network": False, "disabled_checks": ["lessons"]},
        "deep": {"mode": "band" if deep else "off"},
        "internal": internal,
    })


async def replay(sim: Simulation, args: argparse.Namespace, overrides: dict[str, Any]) -> Run:
    run = Run(seed=sim.config.seed, sim=sim)
    compromised_at: dict[str, float] = {}
    for s in sim.scenarios:
        for a in s.accounts:
            compromised_at[a] = min(compromised_at.get(a, float("inf")), s.start)
    with tempfile.TemporaryDirectory(prefix="mailmoat-internal-eval-") as tmp:
        config = build_config(sim, tmp, args.deep, overrides)
        db = Database(config.database_url)
        db.create_schema()
        det = detector(config, db)
        scanner = Scanner(BuildContext(config=config, network=False, database=db,
                                       extras=det.extras))
        under_review: dict[str, float] = {}  # account -> flag time, until released
        cleaned: set[str] = set()  # taken over, cleaned up: the intruder is out
        heap: list[tuple[float, int, str, Any]] = []
        seq = itertools.count()
        started = time.perf_counter()
        cpu0 = time.process_time()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        last_report = started

        async def attempt(tx: Tx, at: float) -> None:
            m = tx.msg
            if m.label is not None and m.account in cleaned:
                tx.outcome, tx.done_at = "dropped", at
                return
            tx.attempts += 1
            env = dataclasses.replace(m.envelope, received_at=at)
            refusal = await det.gate(m.raw, env)
            if refusal is None:
                outcome = await scanner.scan(m.raw, env)
                run.scanned += 1
                d = det.judge(outcome)
                tx.behaviour = d.score
                if d.flagged:
                    flag = AccountFlag(d.account, at, at >= compromised_at.get(d.account, 1e18),
                                       m.kind, d.signals)
                    run.flags.append(flag)
                    if d.account not in under_review:
                        under_review[d.account] = at
                        run.alerts.append(flag)
                        delay = args.cleanup_hours * 3600 if flag.compromised else \
                            args.review_minutes * 60
                        heapq.heappush(heap, (at + delay, next(seq), "release", d.account))
                reply = d.reply
                if reply is None:
                    act = outcome.verdict.action
                    tx.outcome = {Action.QUARANTINE: "held", Action.REJECT: "rejected"}.get(
                        act, "delivered")
                    tx.done_at = at
                    return
            else:
                run.gated += 1
                reply = refusal
            if reply.startswith("5"):
                tx.outcome, tx.done_at = "refused", at
                return
            tx.outcome = "deferred"
            backoff = min(RETRY_MAX, RETRY_FIRST * 2 ** (tx.attempts - 1))
            if at + backoff - tx.first <= QUEUE_LIFETIME:
                heapq.heappush(heap, (at + backoff, next(seq), "retry", tx))

        async def due(until: float) -> None:
            while heap and heap[0][0] <= until:
                at, _, kind, item = heapq.heappop(heap)
                if kind == "retry":
                    await attempt(item, at)
                else:
                    account = item
                    if under_review.pop(account, None) is None:
                        continue
                    if at >= compromised_at.get(account, 1e18):
                        cleaned.add(account)
                    await det.release(account, at)

        try:
            for m in _rendered(sim.config, args.limit):
                t = m.envelope.received_at
                await due(t)
                tx = Tx(m, first=t)
                run.txs.append(tx)
                await attempt(tx, t)
                now = time.perf_counter()
                if now - last_report > 30:
                    last_report = now
                    day = (t - sim.start) / 86400
                    print(f"  seed {sim.config.seed}: day {day:5.1f}, {len(run.txs):,} messages, "
                          f"{len(run.txs) / (now - started):.0f}/s, {len(run.alerts)} alerts",
                          file=sys.stderr, flush=True)
            await due(float("inf") if not args.limit else run.txs[-1].first + 86400)
        finally:
            run.elapsed = time.perf_counter() - started
            run.cpu = time.process_time() - cpu0
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            run.render_cpu = (children.ru_utime + children.ru_stime
                              - children0.ru_utime - children0.ru_stime)
            await scanner.close()
            await det.close()
            db.engine.dispose()
    return run


# -- the figures ---------------------------------------------------------------------------


def scenario_results(run: Run) -> list[dict[str, Any]]:
    out = []
    by_account: dict[str, list[Tx]] = defaultdict(list)
    for tx in run.txs:
        if tx.msg.label is not None:
            by_account[tx.msg.account].append(tx)
    for s in run.sim.scenarios:
        per = []
        for a in s.accounts:
            mal = sorted((tx for tx in by_account.get(a, []) if tx.msg.label == s.name),
                         key=lambda tx: tx.first)
            flag = next((f for f in run.flags if f.account == a and f.at >= s.start), None)
            flagged_at = None
            left_before = sum(1 for tx in mal if tx.outcome == "delivered")
            if flag is not None:
                flagged_at = sum(1 for tx in mal if tx.first <= flag.at)
                left_before = sum(1 for tx in mal if tx.first < flag.at
                                  and tx.outcome == "delivered")
            per.append({
                "account": a,
                "malicious": len(mal),
                "flagged": flag is not None,
                "flagged_at_message": flagged_at,
                "minutes_to_flag": round((flag.at - s.start) / 60, 1) if flag else None,
                "left_before_flag": left_before,
                "left_in_all": sum(1 for tx in mal if tx.outcome == "delivered"),
                "held_or_rejected": sum(1 for tx in mal if tx.outcome in ("held", "rejected")),
                "stopped_at_smtp": sum(1 for tx in mal if tx.outcome in ("refused", "deferred")),
                "never_sent": sum(1 for tx in mal if tx.outcome == "dropped"),
                "flagging_message": flag.kind if flag else None,
                "signals": list(flag.signals) if flag else [],
            })
        flagged = [p for p in per if p["flagged"]]
        at = [p["flagged_at_message"] for p in flagged if p["flagged_at_message"] is not None]
        out.append({
            "scenario": s.name,
            "description": s.description,
            "accounts": per,
            "detected": len(flagged) == len(per) and bool(per),
            "accounts_flagged": f"{len(flagged)}/{len(per)}",
            "malicious": sum(p["malicious"] for p in per),
            # For several accounts: the worst one, since each account is its own door.
            "flagged_at_message": max(at) if len(at) == len(per) and at else None,
            "left_before_flag": sum(p["left_before_flag"] for p in per),
            "left_in_all": sum(p["left_in_all"] for p in per),
        })
    return out


def false_alerts(run: Run) -> dict[str, Any]:
    sim = run.sim
    days = sim.config.days
    first_attack = min((s.start for s in sim.scenarios), default=sim.end)
    compromised_at: dict[str, float] = {}
    for s in sim.scenarios:
        for a in s.accounts:
            compromised_at[a] = min(compromised_at.get(a, float("inf")), s.start)
    end = run.txs[-1].first if run.txs else sim.start

    def account_days(lo: float, hi: float) -> float:
        total = 0.0
        for a in sim.accounts:
            start = max(lo, sim.start + a.joins_day * 86400)
            stop = min(hi, compromised_at.get(a.address, hi))
            total += max(0.0, stop - start) / 86400
        return total

    legit = [tx for tx in run.txs if tx.msg.label is None and tx.msg.account]
    legit_internal = [tx for tx in legit if tx.msg.envelope.direction is Direction.INTERNAL]
    fp = [f for f in run.alerts if not f.compromised]
    fp_clean = [f for f in fp if f.at < first_attack]
    ad_all = account_days(sim.start, min(end, sim.end))
    ad_clean = account_days(sim.start, min(first_attack, end))
    outcome = Counter(tx.outcome for tx in legit)
    # Held or rejected legitimate mail, and whether the behaviour symbols had a part in it
    # (the content checks alone hold some legitimate mail whatever the detector does).
    stopped = [tx for tx in legit if tx.outcome in ("held", "rejected")]
    by_behaviour = sum(1 for tx in stopped if tx.behaviour > 0)
    late = [tx.done_at - tx.first for tx in legit if tx.attempts > 1 and tx.outcome == "delivered"]
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for tx in legit:
        if tx.outcome != "delivered" or tx.attempts > 1:
            by_kind[tx.msg.kind][tx.outcome + ("_late" if tx.attempts > 1 and
                                               tx.outcome == "delivered" else "")] += 1
    return {
        "days": round(min(end, sim.end) - sim.start, 0) / 86400,
        "clean_days": round((min(first_attack, end) - sim.start) / 86400, 1),
        "account_days": round(ad_all),
        "false_alerts": len(fp),
        "false_alerts_clean": len(fp_clean),
        "per_1000_accounts_per_day": round(1000 * len(fp) / ad_all, 3) if ad_all else None,
        "per_1000_accounts_per_day_clean": (round(1000 * len(fp_clean) / ad_clean, 3)
                                            if ad_clean else None),
        "legit_messages": len(legit),
        "legit_internal_messages": len(legit_internal),
        "per_million_legit": round(1e6 * len(fp) / len(legit), 1) if legit else None,
        "per_million_legit_internal": (round(1e6 * len(fp) / len(legit_internal), 1)
                                       if legit_internal else None),
        "legit_outcomes": dict(outcome),
        "legit_held_or_rejected_with_behaviour_symbols": by_behaviour,
        "legit_held_or_rejected_by_content_alone": len(stopped) - by_behaviour,
        "legit_delivered_late": len(late),
        "legit_max_delay_minutes": round(max(late) / 60, 1) if late else 0,
        "legit_not_delivered_by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "alerts": [{"account": f.account, "at": _iso(f.at), "message": f.kind,
                    "signals": list(f.signals),
                    "role": sim.account(f.account).role.name if f.account in
                    {a.address for a in sim.accounts} else ""} for f in fp],
    }


def burst_results(run: Run) -> list[dict[str, Any]]:
    out = []
    for b in run.sim.bursts:
        hits = [f for f in run.alerts if f.account in b.accounts and not f.compromised
                and b.start - 3600 <= f.at <= b.end + 3600]
        out.append({"burst": b.kind, "accounts": list(b.accounts), "start": _iso(b.start),
                    "description": b.description, "alerted": bool(hits)})
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def seed_summary(run: Run) -> dict[str, Any]:
    sc = scenario_results(run)
    fa = false_alerts(run)
    return {
        "seed": run.seed,
        "messages": len(run.txs),
        "scanned": run.scanned,
        "refused_before_scan": run.gated,
        "seconds": round(run.elapsed, 1),
        "messages_per_second": round(len(run.txs) / run.elapsed, 1) if run.elapsed else None,
        # CPU, so a figure from a busy machine still says what an idle one would do.
        "cpu_seconds_gateway": round(run.cpu, 1),
        "cpu_seconds_simulator": round(run.render_cpu, 1),
        "messages_per_gateway_cpu_second": round(len(run.txs) / run.cpu, 1) if run.cpu else None,
        "scenarios": sc,
        "detected": sum(1 for s in sc if s["detected"]),
        "scenario_count": len(sc),
        "within_target": sum(1 for s in sc if s["flagged_at_message"] is not None
                             and s["flagged_at_message"] <= TARGET_FLAG_BY),
        "median_flagged_at_message": median_flag([s["flagged_at_message"] for s in sc]),
        "false_alerts": fa,
        "bursts": burst_results(run),
    }


def median_flag(at: list[int | None]) -> float | str | None:
    """The median of the messages at which scenarios were flagged, a scenario never flagged
    counting as later than any: "never" when the median is one of those."""
    if not at:
        return None
    m = statistics.median([float("inf") if x is None else x for x in at])
    return "never" if m == float("inf") else m


def spread(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:g}"
    return f"{statistics.median(v):g} ({min(v):g}–{max(v):g})"


def markdown(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    p = summary["parameters"]
    lines = [
        "# Compromised-account detection on simulated company mail",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"{p['accounts']} accounts, {p['days']} days from {p['start']}, volume {p['volume']}, "
        f"identity by {p['identity']}, tier 2 {'on' if p['deep'] else 'off'}, network checks "
        f"off; [internal] overrides: {p['internal'] or 'none'}"
        f"{'; the newsletter sender exempt' if p['exempt_newsletter'] else ''}. "
        f"Machine: {summary['machine']}. Code: {summary.get('revision', 'unknown')}.",
        "",
        "## Per seed",
        "",
        "| seed | messages | msg/s | detected | flagged within 10 | median message of flag | "
        "false alerts (clean part) | per 1,000 accounts/day (clean) | per million legit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in seeds:
        fa = s["false_alerts"]
        lines.append(
            f"| {s['seed']} | {s['messages']:,} | {s['messages_per_second']} | "
            f"{s['detected']}/{s['scenario_count']} | {s['within_target']}/{s['scenario_count']} | "
            f"{s['median_flagged_at_message']} | "
            f"{fa['false_alerts']} ({fa['false_alerts_clean']}) | "
            f"{fa['per_1000_accounts_per_day']} ({fa['per_1000_accounts_per_day_clean']}) | "
            f"{fa['per_million_legit']} |")
    lines += ["", "## Per scenario (median over seeds, min–max)", "",
              "| scenario | detected (seeds) | accounts flagged | message that flagged it | "
              "left before the flag | left in all | flagged by |",
              "|---|---|---|---|---|---|---|"]
    for name in SCENARIOS:
        rows = [sc for s in seeds for sc in s["scenarios"] if sc["scenario"] == name]
        if not rows:
            continue
        sig = Counter(x for r in rows for a in r["accounts"] for x in a["signals"])
        lines.append(
            f"| {name} | {sum(r['detected'] for r in rows)}/{len(rows)} | "
            f"{sum(a['flagged'] for r in rows for a in r['accounts'])}/"
            f"{sum(len(r['accounts']) for r in rows)} | "
            f"{spread([r['flagged_at_message'] for r in rows])} | "
            f"{spread([r['left_before_flag'] for r in rows])} | "
            f"{spread([r['left_in_all'] for r in rows])} | "
            f"{', '.join(k for k, _ in sig.most_common(3)) or '-'} |")
    t = summary["targets"]
    lines += ["", "## Against the targets", "",
              f"* every scenario flagged within its first {TARGET_FLAG_BY} malicious messages: "
              f"{t['all_within_10']}",
              f"* median message of the flag <= {TARGET_MEDIAN}: {t['median_ok']} "
              f"(median over all scenarios and seeds: {t['median']})",
              f"* false alerts < {TARGET_FP_PER_1000_DAY} per 1,000 accounts per day: "
              f"{t['fp_ok']} (worst seed: {t['fp_worst']})",
              "",
              "Ho et al. (USENIX Security 2019) report fewer than 4 false positives per million "
              "employee-sent messages at about 87 % detection of lateral phishing; the per-million "
              "column above counts this run's false alerts the same way (per legitimate message "
              "sent by an account).", ""]
    lines += ["## False alerts", ""]
    for s in seeds:
        for a in s["false_alerts"]["alerts"]:
            lines.append(f"* seed {s['seed']}, {a['at']} UTC, {a['account']} ({a['role']}), on a "
                         f"'{a['message']}' message: {', '.join(a['signals'])}")
    if not any(s["false_alerts"]["alerts"] for s in seeds):
        lines.append("None.")
    lines += ["", "## Legitimate mail", "",
              "| seed | legitimate messages | held or rejected: with behaviour symbols / by "
              "content alone | deferred, delivered later (longest wait, minutes) | never "
              "delivered (deferred past the end, refused) |", "|---|---|---|---|---|"]
    for s in seeds:
        fa = s["false_alerts"]
        o = fa["legit_outcomes"]
        lines.append(f"| {s['seed']} | {fa['legit_messages']:,} | "
                     f"{fa['legit_held_or_rejected_with_behaviour_symbols']} / "
                     f"{fa['legit_held_or_rejected_by_content_alone']} | "
                     f"{fa['legit_delivered_late']} ({fa['legit_max_delay_minutes']}) | "
                     f"{o.get('deferred', 0) + o.get('refused', 0)} |")
    lines += ["", "## Legitimate bursts", ""]
    kinds = sorted({b["burst"] for s in seeds for b in s["bursts"]})
    for k in kinds:
        bs = [b for s in seeds for b in s["bursts"] if b["burst"] == k]
        lines.append(f"* {k}: {sum(b['alerted'] for b in bs)} of {len(bs)} alerted")
    return "\n".join(lines) + "\n"


def revision() -> str:
    """The checkout's commit (and whether it had changes), so figures name their code."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' with local changes' if dirty.strip() else ''}" if rev else "unknown"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--internal wants KEY=VALUE, not {item!r}")
        out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    ap.add_argument("--accounts", type=int, default=500)
    ap.add_argument("--days", type=int, default=61)
    ap.add_argument("--volume", type=float, default=DEFAULT_VOLUME,
                    help="scales every account's rate (1.0: the simulator's full office)")
    ap.add_argument("--identity", choices=("header", "auth"), default="header")
    ap.add_argument("--deep", action="store_true", help="run tier 2 (deep model) too")
    ap.add_argument("--internal", action="append", default=[], metavar="KEY=VALUE",
                    help="an [internal] setting, TOML value (repeatable)")
    ap.add_argument("--exempt-newsletter", action="store_true",
                    help="list the newsletter's sender in [internal] exempt_accounts, as an "
                    "administrator would")
    ap.add_argument("--review-minutes", type=float, default=60,
                    help="how long a falsely flagged account waits for its release")
    ap.add_argument("--cleanup-hours", type=float, default=24,
                    help="how long a taken-over account stays restricted before release")
    ap.add_argument("--limit", type=int, default=0, help="stop after N messages (a quick look)")
    ap.add_argument("--out", type=Path, help="write summary.json and summary.md here")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.internal)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = []
    for seed in seeds:
        cfg = SimConfig(seed=seed, accounts=args.accounts, days=args.days, volume=args.volume,
                        identity=args.identity)
        t0 = time.perf_counter()
        sim = simulate(cfg)
        print(f"seed {seed}: planned {sim.transactions():,} messages in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        settings = dict(overrides)
        if args.exempt_newsletter:
            settings["exempt_accounts"] = sorted({a for b in sim.bursts if b.kind == "newsletter"
                                                  for a in b.accounts})
        run = asyncio.run(replay(sim, args, settings))
        s = seed_summary(run)
        runs.append(s)
        fa = s["false_alerts"]
        print(f"seed {seed}: {s['messages']:,} messages in {s['seconds']} s "
              f"({s['messages_per_second']}/s); detected {s['detected']}/{s['scenario_count']}, "
              f"within {TARGET_FLAG_BY}: {s['within_target']}, median message of the flag "
              f"{s['median_flagged_at_message']}; false alerts {fa['false_alerts']} "
              f"({fa['per_1000_accounts_per_day']} per 1,000 accounts/day, "
              f"{fa['per_million_legit']} per million legit)", flush=True)
        for sc in s["scenarios"]:
            print(f"    {sc['scenario']:<20} flagged {sc['accounts_flagged']:<4} at message "
                  f"{sc['flagged_at_message']!s:<5} left before {sc['left_before_flag']:<4} "
                  f"left in all {sc['left_in_all']:<4} of {sc['malicious']}", flush=True)
    all_at = [sc["flagged_at_message"] for s in runs for sc in s["scenarios"]]
    overall = median_flag(all_at)
    worst_fp = max((s["false_alerts"]["per_1000_accounts_per_day"] or 0) for s in runs)
    summary = {
        "command": " ".join(["bench/internal_accounts.py", *(argv if argv is not None
                                                              else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "revision": revision(),
        "parameters": {"accounts": args.accounts, "days": args.days, "volume": args.volume,
                       "start": str(SimConfig().start), "identity": args.identity,
                       "deep": args.deep, "internal": overrides, "seeds": seeds,
                       "exempt_newsletter": args.exempt_newsletter,
                       "review_minutes": args.review_minutes, "cleanup_hours": args.cleanup_hours},
        "targets": {
            "all_within_10": all(x is not None and x <= TARGET_FLAG_BY for x in all_at),
            "median": overall,
            "median_ok": isinstance(overall, float | int) and overall <= TARGET_MEDIAN,
            "fp_ok": worst_fp < TARGET_FP_PER_1000_DAY,
            "fp_worst": worst_fp,
        },
        "seeds": runs,
    }
    print(markdown(summary))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (args.out / "summary.md").write_text(markdown(summary))
        print(f"wrote {args.out / 'summary.json'} and summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
