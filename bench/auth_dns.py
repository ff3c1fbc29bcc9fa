"""Throughput of the auth check (SPF + DKIM + DMARC + ARC) over a loopback DNS server.

Compares a cold resolver cache (a new resolver per message: every look-up hits DNS)
with the shared, warm cache the gateway uses, in the same run. Messages are DKIM-signed
(RSA-2048) by one of a few sender domains, each with SPF and DMARC records.

    nice python bench/auth_dns.py [--messages 300] [--domains 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from mailmoat.dkimsign import generate_private_key, load_private_key, sign_message
from mailmoat.dns import DnsSettings, Resolver
from mailmoat.evaluation.dnsserver import TestDnsServer, publish_sender
from mailmoat.evaluation.messages import make_email
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.scan.auth import AuthCheck, AuthSettings
from mailmoat.scan.pipeline import Pipeline


async def run(server: TestDnsServer, msgs: list, shared: bool) -> float:
    settings = DnsSettings(nameservers=[server.nameserver])
    resolver = Resolver(settings)
    started = time.perf_counter()
    for msg in msgs:
        if not shared:
            resolver = Resolver(settings)
        pipe = Pipeline([AuthCheck(AuthSettings(), resolver)])
        res = await pipe.scan(msg)
        assert res.has("DMARC_PASS") and res.has("DKIM_PASS"), [s.name for s in res.symbols]
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--domains", type=int, default=10)
    args = ap.parse_args()
    pem = generate_private_key("rsa", 2048)
    key = load_private_key(pem, "s1")
    zones: dict = {}
    msgs = []
    for i in range(args.domains):
        d = f"sender{i}.test"
        publish_sender(zones, d, dkim_pem=pem)
    for n in range(args.messages):
        d = f"sender{n % args.domains}.test"
        raw = sign_message(make_email(sender=f"A <a@{d}>", body="hello\n" * 50), d, key)
        msgs.append(parse_message(raw, Envelope(mail_from=f"a@{d}", rcpt_tos=("b@example.test",),
                                                client_ip="192.0.2.10", helo=f"mx.{d}")))
    with TestDnsServer(zones) as server:
        cold = asyncio.run(run(server, msgs, shared=False))
        warm = asyncio.run(run(server, msgs, shared=True))
    n = len(msgs)
    print(f"messages={n} domains={args.domains}")
    print(f"cold cache: {n / cold:8.1f} msg/s  ({cold * 1000 / n:.2f} ms/msg)")
    print(f"warm cache: {n / warm:8.1f} msg/s  ({warm * 1000 / n:.2f} ms/msg)")
    print(f"warm/cold speed-up: {cold / warm:.2f}x")


if __name__ == "__main__":
    main()
