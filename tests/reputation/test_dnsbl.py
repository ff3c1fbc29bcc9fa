"""DNSBL and URIBL look-ups against a real DNS server on loopback."""

from __future__ import annotations

from typing import Any

from mailmoat.message.model import Direction, Envelope
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner
from mailmoat.scan.reputation import reverse_ip
from tests.conftest import make_config, make_email

ZEN = {"zone": "zen.example", "name": "Zen", "weight": 4.0,
       "codes": {"127.0.0.2": "listed spam source", "127.0.0.4": "exploited host"}}
URI = {"zone": "uri.example", "weight": 5.0, "bitmask": True,
       "codes": {"127.0.0.2": "phishing domain", "127.0.0.4": "malware domain"}}


async def _scan(server, raw: bytes, client_ip: str = "192.0.2.10", **rep: Any):
    cfg = make_config(dns={"nameservers": [server.nameserver], "timeout": 0.4, "lifetime": 0.8},
                      auth={"enabled": False},
                      reputation={"dnsbl": [ZEN], "uribl": [URI], **rep})
    scanner = Scanner(BuildContext(config=cfg, network=True))
    try:
        return await scanner.scan(raw, Envelope(mail_from="a@sender.test",
                                                rcpt_tos=("bob@example.test",),
                                                client_ip=client_ip))
    finally:
        await scanner.close()


def test_reverse_ip():
    assert reverse_ip("192.0.2.10") == "10.2.0.192"
    assert reverse_ip("2001:db8::1") == "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2"


async def test_listed_ip_with_return_code_meanings(dns_server):
    dns_server.zones["10.2.0.192.zen.example"] = {"A": ["127.0.0.2", "127.0.0.4"]}
    out = await _scan(dns_server, make_email())
    sym = out.result.get("DNSBL_LISTED")
    assert sym is not None and sym.score == 4.0
    assert "192.0.2.10" in sym.reason and "Zen" in sym.reason
    assert "listed spam source" in sym.reason and "exploited host" in sym.reason


async def test_unknown_code_and_weight_override(dns_server):
    dns_server.zones["10.2.0.192.zen.example"] = {"A": ["127.0.0.9"]}
    cfg_out = await _scan(dns_server, make_email())
    assert "listed (127.0.0.9)" in cfg_out.result.get("DNSBL_LISTED").reason


async def test_not_listed(dns_server):
    out = await _scan(dns_server, make_email())
    assert not out.result.has("DNSBL_LISTED")
    assert ("10.2.0.192.zen.example", "A") in dns_server.queries


async def test_ipv6_nibble_query(dns_server):
    name = reverse_ip("2001:db8::25") + ".zen.example"
    dns_server.zones[name] = {"A": ["127.0.0.2"]}
    out = await _scan(dns_server, make_email(), client_ip="2001:db8::25")
    assert out.result.has("DNSBL_LISTED")


async def test_private_ip_is_not_looked_up(dns_server):
    out = await _scan(dns_server, make_email(), client_ip="10.1.2.3")
    assert not out.result.has("DNSBL_LISTED")
    assert not [q for q in dns_server.queries if q[0].endswith("zen.example")]


async def test_answers_outside_loopback_are_ignored_and_refusal_is_temperror(dns_server):
    dns_server.zones["10.2.0.192.zen.example"] = {"A": ["203.0.113.1"]}
    out = await _scan(dns_server, make_email())
    assert not out.result.has("DNSBL_LISTED")
    dns_server.zones["11.2.0.192.zen.example"] = {"A": ["127.255.255.254"]}
    out = await _scan(dns_server, make_email(), client_ip="192.0.2.11")
    assert not out.result.has("DNSBL_LISTED")
    assert "refused" in out.result.get("DNSBL_TEMPERROR").reason


async def test_dns_failure_is_temperror_not_exception(dns_server):
    dns_server.zones["10.2.0.192.zen.example"] = "SERVFAIL"
    out = await _scan(dns_server, make_email())
    assert out.result.has("DNSBL_TEMPERROR")
    assert not out.result.has("REPUTATION_FAIL")


async def test_uribl_registrable_domains_deduplicated_and_capped(dns_server):
    dns_server.zones["evil.co.uk.uri.example"] = {"A": ["127.0.0.6"]}  # bits 2 and 4
    html = ('<a href="https://login.evil.co.uk/a">x</a> <a href="http://www.evil.co.uk/b">y</a>'
            '<a href="https://fine.test/">z</a> <a href="https://example.test/">ours</a>'
            + "".join(f'<a href="https://d{i}.test/">{i}</a>' for i in range(30)))
    out = await _scan(dns_server, make_email(html=html), uribl_max_lookups=5)
    sym = out.result.get("URIBL_LISTED")
    assert sym is not None and sym.score == 5.0
    assert "evil.co.uk" in sym.reason
    assert "phishing domain" in sym.reason and "malware domain" in sym.reason
    uri_queries = [q for q, _t in dns_server.queries if q.endswith(".uri.example")]
    assert uri_queries.count("evil.co.uk.uri.example") == 1
    assert len(uri_queries) == 5
    assert "example.test.uri.example" not in uri_queries  # our own domain


async def test_outbound_mail_is_not_looked_up(dns_server):
    cfg = make_config(dns={"nameservers": [dns_server.nameserver]}, auth={"enabled": False},
                      reputation={"dnsbl": [ZEN]})
    scanner = Scanner(BuildContext(config=cfg, network=True))
    await scanner.scan(make_email(), Envelope(mail_from="u@example.test", rcpt_tos=("x@far.test",),
                                              client_ip="192.0.2.10",
                                              direction=Direction.OUTBOUND))
    await scanner.close()
    assert dns_server.queries == []


async def test_offline_scan_builds_no_network_check(dns_server):
    cfg = make_config(dns={"nameservers": [dns_server.nameserver]}, reputation={"dnsbl": [ZEN]})
    scanner = Scanner(BuildContext(config=cfg, network=False))
    assert not {c.name for c in scanner.pipeline.checks} & {"dnsbl", "auth"}
    await scanner.close()


def test_bad_return_code_in_config_is_a_clear_error():
    import pytest

    from mailmoat.errors import ConfigError

    # Family sections are validated when the config loads, not when the family asks.
    with pytest.raises(ConfigError, match="127.0.0.0/8"):
        make_config(reputation={"dnsbl": [{"zone": "z.example", "codes": {"10.0.0.2": "x"}}]})


async def test_client_ip_lookups_start_before_the_parse(dns_server):
    """The client IP is known from the envelope: its DNSBL look-ups go out before the parse."""
    dns_server.zones["10.2.0.192.zen.example"] = {"A": ["127.0.0.2"]}
    cfg = make_config(dns={"nameservers": [dns_server.nameserver], "timeout": 0.4,
                           "lifetime": 0.8},
                      auth={"enabled": False}, reputation={"dnsbl": [ZEN], "uribl": [URI]})
    scanner = Scanner(BuildContext(config=cfg, network=True))

    def env(ip: str, direction: Direction = Direction.INBOUND) -> Envelope:
        return Envelope(mail_from="a@sender.test", rcpt_tos=("bob@example.test",),
                        client_ip=ip, direction=direction)
    try:
        early = scanner.pipeline.start_early(make_email(), env("192.0.2.10"))
        assert set(early) == {"dnsbl"}
        assert await early["dnsbl"] == [["127.0.0.2"]]  # one answer list per zone
        assert scanner.pipeline.start_early(make_email(), env("10.1.2.3")) == {}
        assert scanner.pipeline.start_early(
            make_email(), env("192.0.2.10", Direction.OUTBOUND)) == {}
    finally:
        await scanner.close()
