"""Fixtures for the auth tests: a loopback DNS server, signing keys, scan helpers."""

from __future__ import annotations

from typing import Any

import pytest

from mailmoat.dkimsign import dns_record_value, generate_private_key, load_private_key, sign_message
from mailmoat.evaluation.dnsserver import TestDnsServer
from mailmoat.message.model import Direction
from tests.conftest import make_config, scan_bytes
from tests.dnsserver import dns_server  # noqa: F401  (fixture)


@pytest.fixture(scope="session")
def rsa_pem() -> bytes:
    return generate_private_key("rsa", 1024)  # 1024 bits: fast to make, still accepted


@pytest.fixture(scope="session")
def ed_pem() -> bytes:
    return generate_private_key("ed25519")


def publish_key(server: TestDnsServer, selector: str, domain: str, pem: bytes) -> None:
    server.zones[f"{selector}._domainkey.{domain}"] = {"TXT": [dns_record_value(pem)]}


def sign(raw: bytes, domain: str, selector: str, pem: bytes) -> bytes:
    return sign_message(raw, domain, load_private_key(pem, selector))


def auth_config(server: TestDnsServer, **auth: Any):
    return make_config(dns={"nameservers": [server.nameserver], "timeout": 0.4,
                            "lifetime": 0.8},
                       auth={"spf_timeout": 3.0, **auth})


async def scan_auth(raw: bytes, server: TestDnsServer, *, auth: dict[str, Any] | None = None,
                    mail_from: str = "alice@sender.test", client_ip: str | None = "192.0.2.10",
                    helo: str = "mail.sender.test",
                    direction: Direction = Direction.INBOUND):
    from mailmoat.message.model import Envelope
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner

    cfg = auth_config(server, **(auth or {}))
    scanner = Scanner(BuildContext(config=cfg, network=True))
    try:
        env = Envelope(mail_from=mail_from, rcpt_tos=("bob@example.test",), client_ip=client_ip,
                       helo=helo, direction=direction)
        return await scanner.scan(raw, env)
    finally:
        await scanner.close()


def names(outcome: Any) -> set[str]:
    return {s.name for s in outcome.result.symbols}


__all__ = ["auth_config", "names", "publish_key", "scan_auth", "scan_bytes", "sign"]
