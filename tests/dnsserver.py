"""The `dns_server` fixture: a loopback DNS server (mailmoat.evaluation.dnsserver) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat.evaluation.dnsserver import TestDnsServer


@pytest.fixture
def dns_server() -> Iterator[TestDnsServer]:
    """A running test DNS server with empty zones; tests fill `dns_server.zones`."""
    with TestDnsServer() as server:
        yield server
