"""SPF (RFC 7208) against a real DNS server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from tests.auth.conftest import names, scan_auth
from tests.conftest import make_email

RAW = make_email()

# sender.test authorises its provider's outgoing host (include + a:) and its own MX host.
INCLUDE_AND_MX = {
    "sender.test": {"TXT": ["v=spf1 include:_spf.provider.test mx -all"],
                    "MX": ["10 mx1.sender.test"]},
    "mx1.sender.test": {"A": ["203.0.113.5"]},
    "_spf.provider.test": {"TXT": ["v=spf1 a:out.provider.test -all"]},
    "out.provider.test": {"A": ["192.0.2.10"]},
}


@pytest.mark.parametrize("record, symbol, clause", [
    ("v=spf1 ip4:192.0.2.0/24 -all", "SPF_PASS", "spf=pass smtp.mailfrom=sender.test"),
    ("v=spf1 ip4:198.51.100.1 -all", "SPF_FAIL", "spf=fail smtp.mailfrom=sender.test"),
    ("v=spf1 ip4:198.51.100.1 ~all", "SPF_SOFTFAIL", "spf=softfail smtp.mailfrom=sender.test"),
    ("v=spf1 ip4:198.51.100.1 ?all", "SPF_NEUTRAL", "spf=neutral smtp.mailfrom=sender.test"),
    ("v=spf1 ip4:192.0.2.x -all", "SPF_PERMERROR", "spf=permerror smtp.mailfrom=sender.test"),
    ("v=spf1 frobnicate:1 -all", "SPF_PERMERROR", "spf=permerror smtp.mailfrom=sender.test"),
])
async def test_spf_results(dns_server, record, symbol, clause):
    dns_server.zones["sender.test"] = {"TXT": [record, "google-site-verification=abc"]}
    out = await scan_auth(RAW, dns_server)
    assert symbol in names(out)
    assert clause in out.result.facts.auth.clauses
    sym = out.result.get(symbol)
    assert "sender.test" in sym.reason
    if symbol != "SPF_PERMERROR":
        assert "192.0.2.10" in sym.reason


async def test_spf_none_when_domain_has_no_record(dns_server):
    dns_server.zones["sender.test"] = {"A": ["192.0.2.10"], "TXT": ["some other text"]}
    out = await scan_auth(RAW, dns_server)
    assert "SPF_NONE" in names(out)
    assert out.result.facts.auth.spf == "none"


async def test_spf_two_records_is_permerror(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 -all", "v=spf1 +all"]}
    out = await scan_auth(RAW, dns_server)
    assert "SPF_PERMERROR" in names(out)
    assert "Two or more" in out.result.get("SPF_PERMERROR").reason


@pytest.mark.parametrize("failure", ["SERVFAIL", "REFUSED", "TIMEOUT"])
async def test_spf_temperror_on_dns_failure(dns_server, failure):
    dns_server.zones["sender.test"] = failure
    out = await scan_auth(RAW, dns_server)
    assert "SPF_TEMPERROR" in names(out)
    assert "AUTH_FAIL" not in names(out)  # a DNS failure is a result, not a crash


async def test_spf_include_mx_and_a_mechanisms(dns_server):
    dns_server.zones.update(INCLUDE_AND_MX)
    out = await scan_auth(RAW, dns_server)
    assert "SPF_PASS" in names(out)
    out = await scan_auth(RAW, dns_server, client_ip="203.0.113.5")
    assert "SPF_PASS" in names(out)
    out = await scan_auth(RAW, dns_server, client_ip="203.0.113.6")
    assert "SPF_FAIL" in names(out)


async def test_spf_ipv6_client(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip6:2001:db8::/32 -all"]}
    out = await scan_auth(RAW, dns_server, client_ip="2001:db8::25")
    assert "SPF_PASS" in names(out)


async def test_spf_uses_helo_identity_for_null_sender(dns_server):
    dns_server.zones["mail.sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 -all"]}
    out = await scan_auth(RAW, dns_server, mail_from="")
    assert "SPF_PASS" in names(out)
    assert "spf=pass smtp.helo=mail.sender.test" in out.result.facts.auth.clauses
    assert out.result.facts.auth.spf_identity == "helo"


async def test_spf_answers_are_cached_between_messages(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    from mailmoat.dns import DnsSettings, Resolver
    from mailmoat.scan.auth import AuthCheck, AuthSettings
    from mailmoat.scan.pipeline import Pipeline
    from mailmoat.message.model import Envelope
    from mailmoat.message.parse import parse_message

    resolver = Resolver(DnsSettings(nameservers=[dns_server.nameserver]))
    pipe = Pipeline([AuthCheck(AuthSettings(dkim_verify=False, dmarc=False, arc=False), resolver)])
    env = Envelope(mail_from="alice@sender.test", rcpt_tos=("b@example.test",),
                   client_ip="192.0.2.10", helo="x.test")
    for _ in range(3):
        res = await pipe.scan(parse_message(RAW, env))
        assert res.has("SPF_PASS")
    assert dns_server.queries.count(("sender.test", "TXT")) == 1


async def test_outbound_and_authenticated_mail_is_skipped(dns_server):
    from mailmoat.message.model import Direction

    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 -all"]}
    out = await scan_auth(RAW, dns_server, direction=Direction.OUTBOUND)
    assert not {n for n in names(out) if n.startswith(("SPF", "DKIM", "DMARC", "ARC"))}
    assert out.result.facts.auth is None
    assert dns_server.queries == []


async def test_spf_macros_and_exists(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 exists:%{i}.%{l}._spf.sender.test -all"]}
    dns_server.zones["192.0.2.10.alice._spf.sender.test"] = {"A": ["127.0.0.2"]}
    out = await scan_auth(RAW, dns_server)
    assert "SPF_PASS" in names(out)
    out = await scan_auth(RAW, dns_server, mail_from="mallory@sender.test")
    assert "SPF_FAIL" in names(out)


async def test_spf_redirect_and_lookup_limit(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 redirect=_spf.sender.test"]}
    dns_server.zones["_spf.sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    out = await scan_auth(RAW, dns_server)
    assert "SPF_PASS" in names(out)
    chain = {f"l{i}.sender.test": {"TXT": [f"v=spf1 include:l{i + 1}.sender.test -all"]}
             for i in range(12)}
    dns_server.zones.update(chain)
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 include:l0.sender.test -all"]}
    out = await scan_auth(RAW, dns_server)
    assert "SPF_PERMERROR" in names(out)


async def test_spf_prefetches_the_lookups_a_record_leads_to(dns_server):
    """The include's TXT and the mx term's MX (and its exchanges' A) are asked as soon as
    the record arrives, not one round trip after another; nothing is asked twice."""
    dns_server.zones.update(INCLUDE_AND_MX)
    out = await scan_auth(RAW, dns_server)
    assert "SPF_PASS" in names(out)
    # pyspf stops at the include's pass and never needs the MX: only the prefetch asks it
    # (the exchange's A follows the MX answer, possibly after the verdict: wait for it)
    for _ in range(100):
        if ("mx1.sender.test", "A") in dns_server.queries:
            break
        await asyncio.sleep(0.02)
    asked = [q for q in dns_server.queries if not q[0].startswith("_dmarc")]
    assert ("sender.test", "MX") in asked and ("mx1.sender.test", "A") in asked
    assert len(asked) == len(set(asked))


async def test_spf_starts_before_the_parse_from_the_envelope(dns_server, monkeypatch):
    """SPF needs only the envelope: the scanner starts it before parsing the message, and
    the check uses that evaluation instead of running a second one."""
    from mailmoat.message.model import Direction, Envelope
    from mailmoat.scan.auth import SpfOutcome
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner
    from tests.auth.conftest import auth_config

    dns_server.zones.update(INCLUDE_AND_MX)
    scanner = Scanner(BuildContext(config=auth_config(dns_server), network=True))
    try:
        env = Envelope(mail_from="alice@sender.test", rcpt_tos=("bob@example.test",),
                       client_ip="192.0.2.10", helo="mail.sender.test")
        early = scanner.pipeline.start_early(RAW, env)
        assert set(early) == {"auth"}
        outcome = await early["auth"]
        assert isinstance(outcome, SpfOutcome) and outcome.result == "pass"
        # Our own users' mail is not SPF-checked, so nothing starts for it.
        for skipped in (Envelope(mail_from="a@example.test", rcpt_tos=("x@y.test",),
                                 client_ip="10.0.0.1", direction=Direction.OUTBOUND),
                        Envelope(mail_from="a@example.test", rcpt_tos=("x@y.test",),
                                 client_ip="10.0.0.1", auth_user="a")):
            assert scanner.pipeline.start_early(RAW, skipped) == {}
        import mailmoat.scan.auth as auth_mod

        evaluations: list[str] = []
        real = auth_mod._run_spf
        monkeypatch.setattr(auth_mod, "_run_spf",
                            lambda ip, *a: evaluations.append(ip) or real(ip, *a))
        out = await scanner.scan(RAW, env)
        assert "SPF_PASS" in names(out)
        assert evaluations == ["192.0.2.10"]  # the early one, not a second in run()
    finally:
        await scanner.close()


def test_spf_prefetch_targets():
    from mailmoat.scan.auth import spf_prefetch_targets

    txt = [[b"v=spf1 ip4:192.0.2.0/24 include:_spf.example.net ", b"a mx:mail.example.org/24 "
            b"-exists:%{i}.bl.example.com ?a:web.example.com redirect=_r.example.com"],
           [b"google-site-verification=abc"]]
    assert spf_prefetch_targets("Example.COM", txt, "A") == [
        ("_spf.example.net", "TXT"), ("example.com", "A"), ("mail.example.org", "MX"),
        ("web.example.com", "A"), ("_r.example.com", "TXT")]
    assert spf_prefetch_targets("example.com", [[b"v=spf1 a -all"]], "AAAA") == [
        ("example.com", "AAAA")]
    assert spf_prefetch_targets("example.com", [[b"not spf"]], "A") == []
    many = [[(" ".join(f"include:i{i}.example.net" for i in range(20))).join(
        [b"v=spf1 ".decode(), ""]).encode()]]
    assert len(spf_prefetch_targets("example.com", many, "A")) == 10


async def test_spf_failure_reaches_the_allow_list_when_dmarc_never_answers(dns_server):
    """The DMARC policy look-up hangs (a sender's own DNS can do that on purpose) and the
    auth check runs out of time: the SPF failure it already found still keeps a forged
    envelope sender off the allow list, and no Authentication-Results is claimed."""
    from mailmoat.dns import DnsSettings, Resolver
    from mailmoat.message.model import Envelope
    from mailmoat.message.parse import parse_message
    from mailmoat.scan.auth import AuthCheck, AuthSettings
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.lists import build as build_lists
    from mailmoat.scan.pipeline import Pipeline
    from tests.conftest import make_config

    class HangingDmarc(AuthCheck):
        async def _dmarc_policy(self, msg):
            await asyncio.Event().wait()  # never set: only the check's budget ends it

    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:198.51.100.1 -all"]}
    resolver = Resolver(DnsSettings(nameservers=[dns_server.nameserver]))
    auth = HangingDmarc(AuthSettings(dkim_verify=False, arc=False, timeout=0.5), resolver)
    lists = build_lists(BuildContext(make_config(policy={"allow_senders": ["alice@sender.test"]})))
    env = Envelope(mail_from="alice@sender.test", rcpt_tos=("bob@example.test",),
                   client_ip="192.0.2.10", helo="x.test")
    res = await Pipeline([auth, *lists]).scan(parse_message(RAW, env))
    assert res.has("SPF_FAIL") and "did not finish" in res.get("AUTH_FAIL").reason
    assert res.facts.auth is not None and res.facts.auth.spf == "fail"
    assert res.facts.auth.clauses is None
    assert not res.has("POLICY_ALLOW_SENDER")
