"""The cached async resolver against the loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat.dns import DnsSettings, DnsTempError, Resolver, parse_nameserver


def _resolver(server, **kw) -> Resolver:
    return Resolver(DnsSettings(nameservers=[server.nameserver], timeout=0.4, lifetime=0.8, **kw))


def test_parse_nameserver():
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_nameserver("[::1]:5300") == ("::1", 5300)
    assert parse_nameserver("::1") == ("::1", 53)


async def test_answers_nxdomain_nodata_and_long_txt(dns_server):
    dns_server.zones.update({"a.test": {"TXT": ["x" * 600], "A": ["192.0.2.1"]},
                             "deep.sub.test": {"A": ["192.0.2.2"]}})
    r = _resolver(dns_server)
    assert await r.txt("a.test") == [b"x" * 600]  # 3 character-strings joined
    assert await r.addresses("A.TEST.") == ["192.0.2.1"]
    nx = await r.query("missing.test", "TXT")
    assert not nx and nx.nxdomain
    nodata = await r.query("sub.test", "TXT")  # exists (a name below it does), no data
    assert not nodata and not nodata.nxdomain


async def test_cache_keeps_positive_and_negative_answers(dns_server):
    dns_server.zones["a.test"] = {"TXT": ["one"]}
    r = _resolver(dns_server)
    for _ in range(3):
        assert await r.txt("a.test") == [b"one"]
        assert await r.txt("nope.test") == []
    assert dns_server.queries.count(("a.test", "TXT")) == 1
    assert dns_server.queries.count(("nope.test", "TXT")) == 1
    assert r.stats.hits == 4


async def test_expired_entries_are_fetched_again(dns_server):
    dns_server.zones["a.test"] = {"TXT": ["one"]}
    r = _resolver(dns_server, min_ttl=0, max_ttl=0)
    await r.txt("a.test")
    dns_server.zones["a.test"] = {"TXT": ["two"]}
    await asyncio.sleep(0.01)
    assert await r.txt("a.test") == [b"two"]


async def test_lru_bound(dns_server):
    r = _resolver(dns_server, cache_size=2)
    for n in ("a", "b", "c"):
        await r.query(f"{n}.test", "A")
    await r.query("a.test", "A")
    assert dns_server.queries.count(("a.test", "A")) == 2


async def test_concurrent_identical_questions_share_one_query(dns_server):
    dns_server.zones["a.test"] = {"A": ["192.0.2.1"]}
    r = _resolver(dns_server)
    results = await asyncio.gather(*(r.addresses("a.test") for _ in range(10)))
    assert all(x == ["192.0.2.1"] for x in results)
    assert dns_server.queries.count(("a.test", "A")) == 1


@pytest.mark.parametrize("failure", ["SERVFAIL", "REFUSED", "TIMEOUT"])
async def test_temporary_failures_raise_and_are_not_cached(dns_server, failure):
    dns_server.zones["bad.test"] = failure
    r = _resolver(dns_server)
    with pytest.raises(DnsTempError):
        await r.txt("bad.test")
    dns_server.zones["bad.test"] = {"TXT": ["ok now"]}
    assert await r.txt("bad.test") == [b"ok now"]


async def test_invalid_names_are_answered_not_sent(dns_server):
    r = _resolver(dns_server)
    assert (await r.query("foo..bar.test", "TXT")).nxdomain
    assert (await r.query("x" * 70 + ".test", "A")).nxdomain
    assert dns_server.queries == []


async def test_zone_edits_while_serving_are_seen(dns_server):
    """The server indexes its names; the index follows keys added and removed while it runs."""
    r = _resolver(dns_server, min_ttl=0, max_ttl=0, negative_ttl=0)
    assert (await r.query("x.sub.test", "A")).nxdomain
    dns_server.zones["X.Sub.Test."] = {"A": ["192.0.2.7"]}
    assert await r.addresses("x.sub.test") == ["192.0.2.7"]
    nodata = await r.query("sub.test", "A")
    assert not nodata and not nodata.nxdomain
    del dns_server.zones["X.Sub.Test."]
    assert (await r.query("sub.test", "A")).nxdomain


async def test_server_process_serves_a_published_sender():
    from mailmoat.dkimsign import generate_private_key, load_private_key, sign_message
    from tests.auth.conftest import names, scan_auth
    from tests.conftest import make_email
    from mailmoat.evaluation.dnsserver import DnsServerProcess, publish_sender

    pem = generate_private_key("rsa", 1024)
    zones: dict = {}
    publish_sender(zones, "sender.test", spf="v=spf1 ip4:192.0.2.10 -all", dkim_pem=pem)
    raw = sign_message(make_email(), "sender.test", load_private_key(pem, "s1"))
    with DnsServerProcess(zones) as server:
        out = await scan_auth(raw, server)
    assert {"SPF_PASS", "DKIM_PASS", "DMARC_PASS"} <= names(out)
