#!/usr/bin/env python3
"""DKIM verification time of one signature, dkimpy's own functions next to mailmoat.dkimfast's.

    nice env PYTHONPATH=src .venv/bin/python bench/dkim_verify.py [--n 50]

Messages are the generated ones of bench/scan_latency.py (`synthetic_message`: about 2, 20
and 100 KB of text, HTML and a base64 attachment), signed relaxed/relaxed with RSA-2048. The same messages are verified
with dkimpy as shipped (its canonicalization and message split) and with the functions
mailmoat.dkimfast installs, alternating round by round; the best round of each is reported
(milliseconds of process CPU time per verification), and every verification must pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import dkim
import dkim.canonicalization as canon

from mailmoat import dkimfast
from mailmoat.dkimsign import dns_record_value, generate_private_key, load_private_key, sign_message
from mailmoat.evaluation.messages import SIZES, synthetic_message

VARIANTS = {
    "dkimpy": (dkimfast.original_strip_trailing_whitespace,
               dkimfast.original_compress_whitespace, dkimfast.original_rfc822_parse),
    "dkimfast": (dkimfast.strip_trailing_whitespace, dkimfast.compress_whitespace,
                 dkimfast.rfc822_parse),
}


def install(name: str) -> None:
    canon.strip_trailing_whitespace, canon.compress_whitespace, dkim.rfc822_parse = VARIANTS[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="messages per size")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pem = generate_private_key("rsa", 2048)
    key = load_private_key(pem, "s1")
    record = dns_record_value(pem).encode()

    def dnsfunc(_name: object, timeout: float = 5) -> bytes:
        return record

    print(f"load average {os.getloadavg()}")
    print(f"{'size':>6} {'bytes':>7} | {'dkimpy ms':>9} {'dkimfast ms':>11} | speed-up")
    for label, size in SIZES:
        msgs = [sign_message(synthetic_message(size, i, "sender.test"), "sender.test", key)
                for i in range(args.n)]
        best = {name: float("inf") for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                install(name)
                t = time.process_time()
                ok = all(dkim.verify(m, dnsfunc=dnsfunc) for m in msgs)
                best[name] = min(best[name], (time.process_time() - t) / len(msgs) * 1000)
                if not ok:
                    sys.exit(f"a signature did not verify with {name}")
        install("dkimfast")
        mean_bytes = sum(map(len, msgs)) // len(msgs)
        print(f"{label:>6} {mean_bytes:>7} | {best['dkimpy']:>9.2f} {best['dkimfast']:>11.2f} | "
              f"{best['dkimpy'] / best['dkimfast']:.1f}x")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
