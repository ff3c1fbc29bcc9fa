"""DKIM verification (RSA, Ed25519) and DMARC against a real DNS server on loopback."""

from __future__ import annotations

import pytest

from tests.auth.conftest import names, publish_key, scan_auth, sign
from tests.conftest import make_email


def _msg(sender: str = "Alice <alice@sender.test>") -> bytes:
    return make_email(sender=sender, subject="Quarterly numbers", body="Numbers attached.\n")


@pytest.mark.parametrize("crlf", [False, True])
async def test_dkim_rsa_pass(dns_server, rsa_pem, crlf):
    publish_key(dns_server, "s1", "sender.test", rsa_pem)
    raw = _msg().replace(b"\n", b"\r\n") if crlf else _msg()
    out = await scan_auth(sign(raw, "sender.test", "s1", rsa_pem), dns_server)
    assert "DKIM_PASS" in names(out)
    assert "sender.test" in out.result.get("DKIM_PASS").reason
    assert "dkim=pass header.d=sender.test header.s=s1" in out.result.facts.auth.clauses
    assert out.result.facts.auth.dkim_pass == ("sender.test",)


async def test_dkim_ed25519_pass(dns_server, ed_pem):
    publish_key(dns_server, "ed", "sender.test", ed_pem)
    raw = sign(_msg(), "sender.test", "ed", ed_pem)
    assert b"a=ed25519-sha256" in raw
    out = await scan_auth(raw, dns_server)
    assert "DKIM_PASS" in names(out)


async def test_dkim_body_modified_fails(dns_server, rsa_pem):
    publish_key(dns_server, "s1", "sender.test", rsa_pem)
    raw = sign(_msg(), "sender.test", "s1", rsa_pem).replace(b"Numbers attached.", b"Pay invoice now.")
    out = await scan_auth(raw, dns_server)
    assert "DKIM_FAIL" in names(out) and "DKIM_PASS" not in names(out)
    assert "sender.test" in out.result.get("DKIM_FAIL").reason
    assert "dkim=fail header.d=sender.test header.s=s1" in out.result.facts.auth.clauses


async def test_dkim_wrong_key_fails(dns_server, rsa_pem, ed_pem):
    from mailmoat.dkimsign import generate_private_key

    publish_key(dns_server, "s1", "sender.test", generate_private_key("rsa", 1024))
    out = await scan_auth(sign(_msg(), "sender.test", "s1", rsa_pem), dns_server)
    assert "DKIM_FAIL" in names(out)


async def test_dkim_missing_key_is_permerror(dns_server, rsa_pem):
    out = await scan_auth(sign(_msg(), "sender.test", "gone", rsa_pem), dns_server)
    assert "DKIM_PERMERROR" in names(out)
    assert "gone._domainkey.sender.test" in out.result.get("DKIM_PERMERROR").reason


async def test_dkim_dns_failure_is_temperror(dns_server, rsa_pem):
    dns_server.zones["s1._domainkey.sender.test"] = "SERVFAIL"
    out = await scan_auth(sign(_msg(), "sender.test", "s1", rsa_pem), dns_server)
    assert "DKIM_TEMPERROR" in names(out)
    assert "DKIM_FAIL" not in names(out)


async def test_dkim_none_without_signature(dns_server):
    out = await scan_auth(_msg(), dns_server)
    assert "DKIM_NONE" in names(out)
    assert "dkim=none" in out.result.facts.auth.clauses


# DMARC -------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, symbol", [
    ("reject", "DMARC_POLICY_REJECT"),
    ("quarantine", "DMARC_POLICY_QUARANTINE"),
    ("none", "DMARC_POLICY_NONE"),
])
async def test_dmarc_fail_follows_the_published_policy(dns_server, policy, symbol):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:198.51.100.0/24 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": [f"v=DMARC1; p={policy}; rua=mailto:d@sender.test"]}
    out = await scan_auth(_msg(), dns_server)
    assert symbol in names(out)
    assert out.result.facts.auth.dmarc == "fail"
    assert f"dmarc=fail (p={policy}) header.from=sender.test" in out.result.facts.auth.clauses
    assert "sender.test" in out.result.get(symbol).reason


async def test_dmarc_reject_is_a_weight_not_a_hard_reject(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    out = await scan_auth(_msg(), dns_server)
    assert out.result.forced is None
    sym = out.result.get("DMARC_POLICY_REJECT")
    assert sym.score > 5 and sym.category.value == "phishing"
    # the admin can tune it: the weight comes from config
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner
    from mailmoat.message.model import Envelope
    from tests.auth.conftest import auth_config

    cfg = auth_config(dns_server)
    cfg.policy.scores["DMARC_POLICY_REJECT"] = 0.5
    scanner = Scanner(BuildContext(config=cfg, network=True))
    out2 = await scanner.scan(_msg(), Envelope(mail_from="a@sender.test", rcpt_tos=("b@example.test",),
                                               client_ip="192.0.2.10", helo="h.test"))
    await scanner.close()
    assert out2.result.get("DMARC_POLICY_REJECT").score == 0.5


async def test_dmarc_pass_by_aligned_dkim(dns_server, rsa_pem):
    publish_key(dns_server, "s1", "sender.test", rsa_pem)
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    out = await scan_auth(sign(_msg(), "sender.test", "s1", rsa_pem), dns_server)
    assert {"DMARC_PASS", "DKIM_PASS", "SPF_FAIL"} <= names(out)
    assert out.result.facts.auth.dmarc == "pass"
    assert "dmarc=pass header.from=sender.test" in out.result.facts.auth.clauses


async def test_dmarc_pass_by_aligned_spf(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    out = await scan_auth(_msg(), dns_server)
    assert "DMARC_PASS" in names(out)
    assert "SPF" in out.result.get("DMARC_PASS").reason


async def test_dmarc_spf_pass_for_unrelated_domain_is_not_aligned(dns_server):
    dns_server.zones["bulk.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=quarantine"]}
    out = await scan_auth(_msg(), dns_server, mail_from="bounce@bulk.test")
    assert {"SPF_PASS", "DMARC_POLICY_QUARANTINE"} <= names(out)


async def test_dmarc_relaxed_alignment_uses_the_public_suffix_list(dns_server, rsa_pem):
    publish_key(dns_server, "s1", "mail.sub.example.co.uk", rsa_pem)
    dns_server.zones["_dmarc.example.co.uk"] = {"TXT": ["v=DMARC1; p=reject"]}
    raw = sign(_msg("Bank <info@example.co.uk>"), "mail.sub.example.co.uk", "s1", rsa_pem)
    out = await scan_auth(raw, dns_server, mail_from="b@other.test")
    assert "DMARC_PASS" in names(out)
    # strict DKIM alignment: d= must equal the From domain exactly
    dns_server.zones["_dmarc.example.co.uk"] = {"TXT": ["v=DMARC1; p=reject; adkim=s"]}
    out = await scan_auth(raw, dns_server, mail_from="b@other.test", auth={"dkim_verify": True})
    # new scanner, new resolver cache: the strict record is seen
    assert "DMARC_POLICY_REJECT" in names(out)


async def test_dmarc_co_uk_is_not_an_organisation(dns_server, rsa_pem):
    # d=other.co.uk must not align with example.co.uk just because both end in co.uk
    publish_key(dns_server, "s1", "other.co.uk", rsa_pem)
    dns_server.zones["_dmarc.example.co.uk"] = {"TXT": ["v=DMARC1; p=reject"]}
    raw = sign(_msg("Bank <info@example.co.uk>"), "other.co.uk", "s1", rsa_pem)
    out = await scan_auth(raw, dns_server, mail_from="b@other.test")
    assert {"DKIM_PASS", "DMARC_POLICY_REJECT"} <= names(out)


async def test_dmarc_policy_discovery_falls_back_to_org_domain_and_uses_sp(dns_server):
    dns_server.zones["_dmarc.example.co.uk"] = {"TXT": ["v=DMARC1; p=reject; sp=quarantine"]}
    out = await scan_auth(_msg("News <news@mail.sub.example.co.uk>"), dns_server,
                          mail_from="x@other.test")
    assert "DMARC_POLICY_QUARANTINE" in names(out)
    # p=reject, sp=quarantine: the organisational domain's record, as a subdomain's policy
    assert ("_dmarc.example.co.uk", "TXT") in dns_server.queries
    assert ("_dmarc.mail.sub.example.co.uk", "TXT") in dns_server.queries


async def test_dmarc_no_record(dns_server):
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=dmarc1; p=reject", "some text"]}
    out = await scan_auth(_msg(), dns_server)  # not exactly v=DMARC1: not a DMARC record
    assert "DMARC_NA" in names(out)
    assert out.result.facts.auth.dmarc == "none"
    assert "dmarc=none header.from=sender.test" in out.result.facts.auth.clauses


async def test_dmarc_temperror_and_permerror(dns_server):
    dns_server.zones["_dmarc.sender.test"] = "SERVFAIL"
    out = await scan_auth(_msg(), dns_server)
    assert "DMARC_TEMPERROR" in names(out)
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]}
    out = await scan_auth(_msg(), dns_server)
    assert "DMARC_PERMERROR" in names(out)
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=bogus"]}
    out = await scan_auth(_msg(), dns_server)
    assert "DMARC_PERMERROR" in names(out)


async def test_dmarc_pct_zero_applies_the_next_weaker_policy(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject; pct=0"]}
    out = await scan_auth(_msg(), dns_server)
    assert "DMARC_POLICY_QUARANTINE" in names(out)
    assert "pct=0" in out.result.get("DMARC_POLICY_QUARANTINE").reason


async def test_dmarc_undecided_without_client_ip(dns_server):
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    out = await scan_auth(_msg(), dns_server, client_ip=None)
    assert "DMARC_POLICY_REJECT" not in names(out)
    assert "DMARC_NA" in names(out)


def test_org_domain():
    from mailmoat.scan.auth import aligned, org_domain

    assert org_domain("mail.sub.example.co.uk") == "example.co.uk"
    assert org_domain("a.b.sender.test") == "sender.test"
    assert org_domain("EXAMPLE.COM.") == "example.com"
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert not aligned("evil.co.uk", "example.co.uk", "r")


async def test_authentication_results_header_value(dns_server):
    from mailmoat.scan.auth import authentication_results_header

    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=none"]}
    out = await scan_auth(_msg(), dns_server)
    value = authentication_results_header("mx.example.test", out.result.facts.auth)
    assert value.startswith("mx.example.test; spf=pass smtp.mailfrom=sender.test;")
    assert "dkim=none" in value and "dmarc=pass header.from=sender.test" in value
    assert "arc=none" in value
    assert authentication_results_header("mx.example.test", None) is None
    import authres

    parsed = authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + value.replace("\r\n\t", " "))
    assert parsed.authserv_id == "mx.example.test"
    assert {r.method for r in parsed.results} == {"spf", "dkim", "dmarc", "arc"}


async def test_garbled_headers_are_judged_not_crashed_on(dns_server):
    raw = (b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=s1; h=from; bh=eA==; b=eQ==\n"
           b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=lists.test; s=arc; b=eQ==\n"
           b"From: a@sender.test\n"
           b"this line is not a header\n"
           b"\nbody\n")
    out = await scan_auth(raw, dns_server)
    assert "AUTH_FAIL" not in names(out)
    assert names(out) & {"DKIM_PERMERROR", "DKIM_FAIL"}
    assert "ARC_FAIL" in names(out)
