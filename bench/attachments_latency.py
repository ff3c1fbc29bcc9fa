"""Per-message latency of the attachments and antivirus families on a 100 KB message.

The message carries a PDF and a zip (with a PDF and a text file inside) — the case the
families do real work on. A private clamd (`mailmoat.evaluation.clamd`, EICAR test
signatures only) runs locally. Every variant is measured in the same run against a
parse-only baseline:

    nice python bench/attachments_latency.py [--n 300]

Prints wall p50/p99 in ms per variant, the p50 ratio to the baseline and the added p50,
plus this process's CPU time (clamd's own CPU is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from mailmoat.config import config_from_dict
from mailmoat.evaluation import messages as fx
from mailmoat.evaluation.clamd import running_clamd
from mailmoat.evaluation.messages import make_email
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.scan.antivirus import AntivirusSettings, ClamavCheck
from mailmoat.scan.attachments import build as build_attachments
from mailmoat.scan.base import BuildContext
from mailmoat.scan.pipeline import Pipeline


def sample_message() -> bytes:
    import random
    import zlib

    rnd = random.Random(7)
    words = ["invoice", "meeting", "report", "quarter", "budget", "the", "and", "please",
             "attached", "review", "numbers", "team", "project", "deadline", "thanks"]
    text = " ".join(rnd.choice(words) for _ in range(3000))
    # A PDF with a compressed content stream (~35 KB) and a zip of a PDF + text (~25 KB).
    page = ("BT /F1 10 Tf 72 720 Td (" + text[:12000] + ") Tj ET").encode()
    noise = bytes(rnd.getrandbits(8) for _ in range(30000))
    packed = zlib.compress(page)
    pdf = fx.pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                  b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                  b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                  b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed
                  + b"\nendstream",
                  b"<< /Type /XObject /Subtype /Image /Length %d >>\nstream\n" % len(noise)
                  + noise + b"\nendstream"])
    zipped = fx.zip_bytes({"minutes.txt": text.encode(), "scan.pdf": fx.pdf_plain(),
                           "photo.bin": bytes(rnd.getrandbits(8) for _ in range(15000))})
    raw = make_email(subject="Quarterly report", body=text[:20000],
                     attachments=[("report.pdf", "application/pdf", pdf),
                                  ("documents.zip", "application/zip", zipped)])
    return raw


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def one(raw: bytes, pipeline: Pipeline | None) -> tuple[float, float]:
    """Wall and CPU (this process, all threads) milliseconds for parse + scan."""
    env = Envelope(mail_from="a@sender.test", rcpt_tos=("b@example.test",))
    t, c = time.perf_counter(), time.process_time()
    msg = parse_message(raw, env)
    if pipeline is not None:
        await pipeline.scan(msg)
    return (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    raw = sample_message()
    print(f"message: {len(raw)} bytes, 2 attachments (PDF + zip of 3 files); n={args.n}")
    ctx = BuildContext(config=config_from_dict({}))
    att = build_attachments(ctx)
    with running_clamd() as server:
        variants: dict[str, Pipeline | None] = {"parse only (baseline)": None}
        variants["attachments"] = Pipeline(att)
        for label, addr in (("clamd unix", server.unix_address), ("clamd tcp", server.tcp_address)):
            variants[f"antivirus ({label})"] = Pipeline(
                [ClamavCheck(AntivirusSettings(clamd=addr))])
        variants["attachments + antivirus (unix)"] = Pipeline(
            att + [ClamavCheck(AntivirusSettings(clamd=server.unix_address))])
        # Round-robin: every iteration runs each variant once, so load from other processes
        # on the machine hits all variants alike and the ratios stay meaningful.
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(args.n + args.warmup):
            for name, pipe in variants.items():
                w, c = await one(raw, pipe)
                if i >= args.warmup:
                    wall[name].append(w)
                    cpu[name].append(c)
        base = statistics.median(wall["parse only (baseline)"])
        base_cpu = statistics.median(cpu["parse only (baseline)"])
        print(f"{'variant':34} {'p50 ms':>7} {'p99 ms':>7} {'p50/base':>8} {'+p50 ms':>8} "
              f"{'cpu p50':>8} {'+cpu':>6}")
        for name in variants:
            med, cmed = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"{name:34} {med:7.2f} {pct(wall[name], 99):7.2f} {med / base:8.2f} "
                  f"{med - base:8.2f} {cmed:8.2f} {cmed - base_cpu:6.2f}")
        sample = await variants["attachments + antivirus (unix)"].scan(parse_message(raw))
        print("symbols on the sample:", sorted(s.name for s in sample.symbols) or "none")
        for pipe in variants.values():
            if pipe is not None:
                await pipe.close()


if __name__ == "__main__":
    asyncio.run(main())
