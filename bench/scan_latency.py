#!/usr/bin/env python3
"""Latency of the whole scan (parse, every check family, policy) next to baselines, in one run.

    nice -n 10 env PYTHONPATH=src .venv/bin/python bench/scan_latency.py [--n 300] [--with-clamd]
        [--disable deep] [--senders K] [--no-network]

Generated messages of about 2 KB, 20 KB and 100 KB (text + HTML + a PDF-like attachment,
five links) go through `Scanner.scan()` exactly as the SMTP intake does: parse once, every
check family the default configuration turns on, policy. On top of the defaults the bench
configures what a gateway would have and the defaults cannot know:

* DNS: a real DNS server on loopback (`mailmoat.evaluation.dnsserver`, dnslib) in a child
  process, as a local resolver would be. Every sender domain publishes SPF (`mx` plus an `include`), an
  RSA-2048 DKIM key and a DMARC policy, and every message is DKIM-signed with it; every
  `--arc-every`-th message reached us through a mailing list that ARC-sealed it. A DNSBL
  zone for client IPs and a URIBL zone for linked domains are configured (one in ten listed).
  By default every message has its own sender domain, client IP and linked domains, so the
  gateway's resolver cache misses and each look-up is answered by the server: the
  pessimistic case. `--senders K` cycles through K sender domains instead (a warm cache).
* the sender memory on SQLite (as `mailmoat serve` has it), allow/block lists, and with
  `--with-clamd` a private clamd with the test signatures (`mailmoat.evaluation.clamd`).
* tiers 1 and 2 as configured by default (`--disable deep` leaves tier 2 out); tier 3 (LLM)
  is off by default and stays off.

Baselines, interleaved message by message in the same process: `parse_message()` alone,
and one uncached DNS query to the same loopback server (its round trip: the scan pays at
least three in sequence — SPF's record, then its `mx`, then the MX host's address).
The share of each check is measured in a separate pass over `--share-n` further 100 KB
messages (new senders: a cold cache again): parse, then every check run alone, one after
the other in stage order, timed each (wall time: a DNS check's includes its waits). In the
real scan the checks of one stage run concurrently, so DNS and clamd waits overlap with
the CPU-bound checks and the scan is shorter than the sum of the shares.
The run fails if the authentication results are not the expected passes, or any check
failed or timed out: then it would be measuring an error path.

`--no-network` is the earlier local-only mode (no DNS checks). Writes
bench/results/scan_latency.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from mailmoat.config import config_from_dict
from mailmoat.evaluation.messages import SIZES, synthetic_message
from mailmoat.evaluation.paths import results_dir
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner

LIST_DOMAIN = "lists.bench.test"  # the mailing list that ARC-seals forwarded mail
LIST_IP = "198.51.100.7"
PROVIDER_SPF = "_spf.mailer.bench.test"  # included by every sender's SPF record
DNSBL_ZONE = "dnsbl.bench.test"
LOCAL_ENV = Envelope(mail_from="bounce@partner.test", rcpt_tos=("bob@example.test",),
                     client_ip="192.0.2.10")  # --no-network: one sender, no DNS
URIBL_ZONE = "uribl.bench.test"


class World:
    """The senders, their signed messages and the DNS zones that vouch for them."""

    def __init__(self, senders: int, arc_every: int) -> None:
        from mailmoat.dkimsign import generate_private_key, load_private_key
        from mailmoat.evaluation.dnsserver import publish_sender

        self.publish_sender = publish_sender
        self.pem = generate_private_key("rsa", 2048)
        self.key = load_private_key(self.pem, "s1")
        self.arc_key = load_private_key(self.pem, "arc").private
        self.senders = senders
        self.arc_every = arc_every
        self.zones: dict = {PROVIDER_SPF: {"TXT": ["v=spf1 ip4:198.18.0.0/15 -all"]}}
        publish_sender(self.zones, LIST_DOMAIN, spf=f"v=spf1 ip4:{LIST_IP} -all",
                       dkim_pem=self.pem, selector="arc")
        self.count = 0

    def _sender(self, idx: int) -> str:
        k = idx % self.senders if self.senders else idx
        domain = f"sender{k}.test"
        if domain not in self.zones:
            self.publish_sender(self.zones, domain, dkim_pem=self.pem,
                                spf=f"v=spf1 mx include:{PROVIDER_SPF} -all")
            self.zones[domain]["MX"] = [f"10 mx.{domain}"]
            self.zones[f"mx.{domain}"] = {"A": ["192.0.2.25"]}
        return domain

    def message(self, target: int) -> tuple[bytes, Envelope]:
        import dkim

        from mailmoat.dkimsign import sign_message
        from mailmoat.scan.reputation import reverse_ip

        idx = self.count
        self.count += 1
        domain = self._sender(idx)
        ip = str(ipaddress.IPv4Address("198.18.0.0") + 1 + idx)
        links = (f"site{idx}a.com", f"site{idx}b.net", f"site{idx}c.org")
        if idx % 10 == 3:
            self.zones[f"{reverse_ip(ip)}.{DNSBL_ZONE}"] = {"A": ["127.0.0.2"]}
        if idx % 10 == 7:
            self.zones[f"{links[0]}.{URIBL_ZONE}"] = {"A": ["127.0.0.2"]}
        raw = sign_message(synthetic_message(target, idx, domain, links), domain, self.key)
        env = Envelope(mail_from=f"bounce@{domain}", rcpt_tos=("bob@example.test",),
                       client_ip=ip, helo=f"mx.{domain}")
        if self.arc_every and idx % self.arc_every == self.arc_every - 1:
            ar = (f"Authentication-Results: {LIST_DOMAIN}; spf=pass smtp.mailfrom={domain}; "
                  f"dkim=pass header.d={domain}; dmarc=pass header.from={domain}\n").encode()
            sealed = ar + raw
            arc = dkim.arc_sign(sealed, b"arc", LIST_DOMAIN.encode(), self.arc_key,
                                LIST_DOMAIN.encode(), linesep=b"\n")
            raw = b"".join(arc) + sealed
            env = Envelope(mail_from=f"bounce@{LIST_DOMAIN}", rcpt_tos=("bob@example.test",),
                           client_ip=LIST_IP, helo=f"mail.{LIST_DOMAIN}")
        return raw, env


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summarise(times: list[float]) -> dict[str, float]:
    total = sum(times)
    return {
        "p50_ms": round(pct(times, 0.50) * 1000, 3),
        "p99_ms": round(pct(times, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(times) * 1000, 3),
        "msgs_per_s": round(len(times) / total, 1),
    }


EXPECTED_AUTH = ("SPF_PASS", "DKIM_PASS", "DMARC_PASS")


def sanity(symbols: Counter, n: int, sealed: int) -> list[str]:
    """What is wrong with the scans, if anything: then the bench measured an error path."""
    problems = [f"{name} on {symbols[name]}/{n} messages" for name in EXPECTED_AUTH
                if symbols[name] != n]
    if sealed and symbols["ARC_PASS"] != sealed:
        problems.append(f"ARC_PASS on {symbols['ARC_PASS']}/{sealed} sealed messages")
    problems += [f"{name} x{count}" for name, count in symbols.items()
                 if name.endswith(("_FAIL", "_TEMPERROR", "_PERMERROR"))]
    return problems


async def shares(scanner: Scanner, msgs: list) -> dict[str, dict[str, float]]:
    """Each check alone, in stage order, on freshly parsed messages: mean and p99 ms."""
    from mailmoat.scan.base import ScanResult

    pipe, cfg = scanner.pipeline, scanner.config.scan
    times: dict[str, list[float]] = defaultdict(list)
    for raw, env in msgs:
        t = time.perf_counter()
        msg = parse_message(raw, env, max_depth=cfg.max_parse_depth, max_parts=cfg.max_parts)
        times["(parse)"].append(time.perf_counter() - t)
        result = ScanResult(specs=pipe.specs, weight_overrides=pipe.weight_overrides)
        for stage in pipe.stages:
            for check in (c for c in pipe.checks if c.stage == stage):
                t = time.perf_counter()
                await check.run(msg, result)
                times[check.name].append(time.perf_counter() - t)
    total = sum(statistics.fmean(v) for v in times.values())
    return {name: {"mean_ms": round(statistics.fmean(v) * 1000, 3),
                   "p99_ms": round(pct(v, 0.99) * 1000, 3),
                   "share": round(statistics.fmean(v) / total, 3)}
            for name, v in sorted(times.items(), key=lambda kv: -sum(kv[1]))}


async def run(n: int, disable: list[str], clamd: str, network: bool, nameserver: str,
              messages: dict, share_msgs: list, database) -> dict:
    config = config_from_dict(
        {
            "scan": {"network": network, "disabled_checks": disable},
            "dns": {"nameservers": [nameserver] if nameserver else []},
            "antivirus": {"clamd": clamd},
            "policy": {
                "allow_senders": ["@trusted.test"],
                "block_senders": ["@blocked.test"],
                "block_ips": ["203.0.113.0/24"],
            },
            "reputation": {
                "dnsbl": [{"zone": DNSBL_ZONE, "codes": {"127.0.0.2": "listed spam source"}}],
                "uribl": [{"zone": URIBL_ZONE, "bitmask": True,
                           "codes": {"127.0.0.2": "listed spam domain"}}],
            },
        }
    )
    scanner = Scanner(BuildContext(config=config, network=network, database=database))
    checks = [c.name for c in scanner.pipeline.checks]
    rtt_resolver = None
    if network:
        from mailmoat.dns import DnsSettings, Resolver

        rtt_resolver = Resolver(DnsSettings(nameservers=[nameserver]))
    results = {}
    for label, (msgs, warm) in messages.items():
        for raw, env in warm:  # warm up imports, regex caches, libmagic, models
            parse_message(raw, env)
            await scanner.scan(raw, env)
        parse_t, scan_t, rtt_t = [], [], []
        symbols: Counter = Counter()
        for i, (raw, env) in enumerate(msgs):
            t = time.perf_counter()
            parse_message(
                raw, env, max_depth=config.scan.max_parse_depth, max_parts=config.scan.max_parts
            )
            parse_t.append(time.perf_counter() - t)
            if rtt_resolver is not None:
                t = time.perf_counter()
                await rtt_resolver.query(f"rtt{i}-{label.lower()}.bench.test", "A")
                rtt_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = await scanner.scan(raw, env)
            scan_t.append(time.perf_counter() - t)
            symbols.update({s.name for s in out.result.symbols})
        p, s = summarise(parse_t), summarise(scan_t)
        sealed = sum(1 for raw, _ in msgs if raw.startswith(b"ARC-"))
        results[label] = {
            "bytes_mean": round(statistics.fmean(len(m) for m, _ in msgs)),
            "n": n,
            "parse_only": p,
            "parse_and_scan": s,
            "scan_over_parse_p50": round(s["p50_ms"] / p["p50_ms"], 2),
            "dns_rtt": summarise(rtt_t) if rtt_t else None,
            "arc_sealed": sealed,
            "symbols": dict(symbols.most_common()),
            "problems": sanity(symbols, len(msgs), sealed) if network else [],
        }
    share = await shares(scanner, share_msgs) if share_msgs else {}
    await scanner.close()
    return {"checks": checks, "network": network, "results": results, "shares_100KB": share}


def build_messages(n: int, world: World | None, sizes: list[str]) -> dict:
    out = {}
    for label, size in SIZES:
        if label not in sizes:
            continue
        if world is None:
            msgs = [(synthetic_message(size, i), LOCAL_ENV) for i in range(n)]
            warm = msgs[:20]
        else:
            warm = [world.message(size) for _ in range(20)]  # its own senders: cache stays cold
            msgs = [world.message(size) for _ in range(n)]
        out[label] = (msgs, warm)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="messages per size")
    ap.add_argument("--with-clamd", action="store_true", help="start a private clamd and "
                    "scan with the antivirus family too")
    ap.add_argument("--disable", nargs="*", default=[], help="check names to leave out")
    ap.add_argument("--senders", type=int, default=0, help="distinct sender domains, cycled "
                    "(0: one per message, every DNS look-up goes to the server)")
    ap.add_argument("--arc-every", type=int, default=5, help="every k-th message is ARC-sealed "
                    "by a forwarding list (0: none)")
    ap.add_argument("--sizes", nargs="*", default=[label for label, _ in SIZES],
                    choices=[label for label, _ in SIZES], help="message sizes to measure")
    ap.add_argument("--share-n", type=int, default=100, help="100 KB messages for the "
                    "per-check shares (0: skip)")
    ap.add_argument("--no-network", action="store_true", help="no DNS checks (local only)")
    ap.add_argument("--no-database", action="store_true", help="no sender memory")
    ap.add_argument("--out", default=str(results_dir() / "scan_latency.json"))
    args = ap.parse_args()
    network = not args.no_network
    world = World(args.senders, args.arc_every) if network else None
    messages = build_messages(args.n, world, args.sizes)
    share_msgs = []
    if args.share_n:
        share_msgs = [world.message(100_000) if world else
                      (synthetic_message(100_000, 10**6 + i), LOCAL_ENV) for i in range(args.share_n)]

    with contextlib.ExitStack() as stack:
        nameserver = clamd = ""
        if network:
            from mailmoat.evaluation.dnsserver import DnsServerProcess

            nameserver = stack.enter_context(DnsServerProcess(world.zones)).nameserver
        if args.with_clamd:
            # A private clamd with test signatures only (the one the test suite starts).
            from mailmoat.evaluation.clamd import running_clamd

            clamd = stack.enter_context(running_clamd()).unix_address
        database = None
        if not args.no_database:
            from mailmoat.store.db import Database

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mm-bench-"))
            database = Database(f"sqlite:///{tmp}/bench.db")
            database.create_schema()
            stack.callback(database.dispose)
        load = os.getloadavg()
        report = asyncio.run(run(args.n, args.disable, clamd, network, nameserver, messages,
                                 share_msgs, database))
        load_after = os.getloadavg()

    argv = sys.argv[1:]
    if "--out" in argv:  # where the JSON went is not part of the measurement
        del argv[argv.index("--out"):argv.index("--out") + 2]
    report.update({
        "options": {"n": args.n, "with_clamd": args.with_clamd, "disable": args.disable,
                    "senders": args.senders, "sizes": args.sizes, "share_n": args.share_n,
                    "arc_every": args.arc_every if network else 0,
                    "database": not args.no_database},
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before_after": [round(x, 2) for x in (*load, *load_after)],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"PYTHONPATH=src python bench/scan_latency.py {' '.join(argv)}".strip(),
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print(f"checks: {', '.join(report['checks'])} (network {'on' if network else 'off'})")
    print(f"load average before/after (1, 5, 15 min): {report['loadavg_before_after']}")
    print(
        f"{'size':>6} {'bytes':>7} | {'parse p50':>9} {'p99':>7} | "
        f"{'scan p50':>9} {'p99':>7} {'msg/s':>7} | scan/parse | dns rtt p50"
    )
    for label, r in report["results"].items():
        p, s = r["parse_only"], r["parse_and_scan"]
        rtt = r["dns_rtt"]["p50_ms"] if r["dns_rtt"] else "-"
        print(
            f"{label:>6} {r['bytes_mean']:>7} | {p['p50_ms']:>9} {p['p99_ms']:>7} | "
            f"{s['p50_ms']:>9} {s['p99_ms']:>7} {s['msgs_per_s']:>7} | "
            f"{r['scan_over_parse_p50']:>10} | {rtt}"
        )
    if report["shares_100KB"]:
        print(f"100KB, each check alone ({args.share_n} messages; mean ms, share of the sum): "
              + ", ".join(f"{k} {v['mean_ms']} ({v['share']:.0%})"
                          for k, v in report["shares_100KB"].items()))
    problems = {k: r["problems"] for k, r in report["results"].items() if r["problems"]}
    if problems:
        sys.exit(f"the scans did not go as planned, so this measured an error path: {problems}")


if __name__ == "__main__":
    main()
