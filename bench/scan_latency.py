#!/usr/bin/env python3
"""Parse + scan latency of the whole pipeline, next to a parse-only baseline in the same run.

    nice -n 10 env PYTHONPATH=src .venv/bin/python bench/scan_latency.py [--n 200]

Generated messages of about 2 KB, 20 KB and 100 KB (text + HTML + a PDF-like attachment, a
few links) go through `Scanner.scan()` exactly as the SMTP intake does: parse once, every
check family registered at the time of the run, policy. Network look-ups are off (DNS-based
checks are skipped; their latency is the resolver's, not ours), and allow/block lists are
configured so the lists family runs. The baseline times `parse_message()` alone on the same
messages, so `scan/parse` says what the checks add on top of parsing on this machine.

Writes bench/results/scan_latency.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailmoat.config import config_from_dict  # noqa: E402
from mailmoat.message.model import Envelope  # noqa: E402
from mailmoat.message.parse import parse_message  # noqa: E402
from mailmoat.scan.base import BuildContext  # noqa: E402
from mailmoat.scan.engine import Scanner  # noqa: E402

WORDS = (
    "invoice payment account meeting report please review attached schedule quarter "
    "budget team update project customer order shipping delivery confirm password "
    "security notice thanks regards tomorrow office"
).split()


def make_message(target: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    text_len = max(300, target // 4)
    words = []
    while sum(len(w) + 1 for w in words) < text_len:
        words.append(rnd.choice(WORDS))
    text = " ".join(words)
    links = [
        f"https://{rnd.choice(['shop', 'mail', 'docs'])}{rnd.randrange(99)}.example.com/p/{rnd.randrange(10**6)}"
        for _ in range(5)
    ]
    html = (
        "<html><body><p>"
        + text.replace(" please ", " <b>please</b> ")
        + "</p>"
        + "".join(f'<p><a href="{u}">{u.split("/")[2]}</a></p>' for u in links)
        + "</body></html>"
    )
    msg = EmailMessage()
    msg["From"] = f"Sender {seed} <sender{seed}@partner.test>"
    msg["To"] = "bob@example.test"
    msg["Subject"] = f"Quarterly {rnd.choice(WORDS)} #{seed}"
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<bench-{seed}@partner.test>"
    msg.set_content(text + "\n" + "\n".join(links) + "\n")
    msg.add_alternative(html, subtype="html")
    so_far = len(msg.as_bytes())
    attach = max(64, int((target - so_far) * 0.74))  # base64 grows 4/3
    msg.add_attachment(
        b"%PDF-1.4\n" + rnd.randbytes(attach),
        maintype="application",
        subtype="pdf",
        filename=f"report-{seed}.pdf",
    )
    return msg.as_bytes()


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


async def run(n: int, disable: list[str], clamd: str = "") -> dict:
    config = config_from_dict(
        {
            "scan": {"network": False, "disabled_checks": disable},
            "antivirus": {"clamd": clamd},
            "policy": {
                "allow_senders": ["@trusted.test"],
                "block_senders": ["@blocked.test"],
                "block_ips": ["203.0.113.0/24"],
            },
        }
    )
    scanner = Scanner(BuildContext(config=config, network=False))
    checks = [c.name for c in scanner.pipeline.checks]
    env = Envelope(
        mail_from="bounce@partner.test", rcpt_tos=("bob@example.test",), client_ip="192.0.2.10"
    )
    results = {}
    for label, size in (("2KB", 2_000), ("20KB", 20_000), ("100KB", 100_000)):
        msgs = [make_message(size, i) for i in range(n)]
        for raw in msgs[:20]:  # warm up imports, regex caches, libmagic
            parse_message(raw, env)
            await scanner.scan(raw, env)
        parse_t, scan_t = [], []
        for raw in msgs:
            t = time.perf_counter()
            parse_message(
                raw, env, max_depth=config.scan.max_parse_depth, max_parts=config.scan.max_parts
            )
            parse_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            await scanner.scan(raw, env)
            scan_t.append(time.perf_counter() - t)
        p, s = summarise(parse_t), summarise(scan_t)
        results[label] = {
            "bytes_mean": round(statistics.fmean(len(m) for m in msgs)),
            "n": n,
            "parse_only": p,
            "parse_and_scan": s,
            "scan_over_parse_p50": round(s["p50_ms"] / p["p50_ms"], 2),
        }
    await scanner.close()
    return {
        "checks": checks,
        "network": False,
        "results": results,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "nice -n 10 env PYTHONPATH=src python bench/scan_latency.py --n %d" % n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="messages per size")
    ap.add_argument("--with-clamd", action="store_true", help="start a private clamd and "
                    "scan with the antivirus family too")
    ap.add_argument("--disable", nargs="*", default=[], help="check names to leave out")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scan_latency.json"))
    args = ap.parse_args()
    if args.with_clamd:
        # A private clamd with test signatures only (the one the test suite starts).
        sys.path.insert(0, str(ROOT))
        from tests.clamd import running_clamd

        with running_clamd() as server:
            report = asyncio.run(run(args.n, args.disable, server.unix_address))
    else:
        report = asyncio.run(run(args.n, args.disable))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"checks: {', '.join(report['checks'])} (network off)")
    print(
        f"{'size':>6} {'bytes':>7} | {'parse p50':>9} {'p99':>7} {'msg/s':>7} | "
        f"{'scan p50':>9} {'p99':>7} {'msg/s':>7} | scan/parse"
    )
    for label, r in report["results"].items():
        p, s = r["parse_only"], r["parse_and_scan"]
        print(
            f"{label:>6} {r['bytes_mean']:>7} | {p['p50_ms']:>9} {p['p99_ms']:>7} {p['msgs_per_s']:>7} | "
            f"{s['p50_ms']:>9} {s['p99_ms']:>7} {s['msgs_per_s']:>7} | {r['scan_over_parse_p50']}"
        )


if __name__ == "__main__":
    main()
