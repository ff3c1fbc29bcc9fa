"""ARC verification with chains sealed in the test, and the trusted-sealer override."""

from __future__ import annotations

import dkim

from mailmoat.dkimsign import load_private_key
from tests.auth.conftest import names, publish_key, scan_auth, sign
from tests.conftest import make_email

FOOTER = b"--\nlists.test: unsubscribe at https://lists.test/u\n"


def _forwarded(rsa_pem: bytes, *, sealer: str = "lists.test", aar: str | None = None) -> bytes:
    """alice@sender.test signs; the list adds a footer (breaking DKIM) and ARC-seals."""
    original = sign(make_email(body="Meeting at 10.\n"), "sender.test", "s1", rsa_pem)
    modified = original + FOOTER
    ar = aar or (f"{sealer}; spf=pass smtp.mailfrom=alice@sender.test; "
                 "dkim=pass header.d=sender.test header.s=s1; dmarc=pass header.from=sender.test")
    with_ar = b"Authentication-Results: " + ar.encode() + b"\n" + modified
    key = load_private_key(rsa_pem, "arc").private
    arc_set = dkim.arc_sign(with_ar, b"arc", sealer.encode(), key, sealer.encode(), linesep=b"\n")
    return b"".join(arc_set) + with_ar


def _zones(server, rsa_pem, sealer="lists.test"):
    publish_key(server, "s1", "sender.test", rsa_pem)
    publish_key(server, "arc", sealer, rsa_pem)
    server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    server.zones["lists.test"] = {"TXT": ["v=spf1 ip4:198.51.100.7 -all"]}


async def test_arc_pass_without_trust_leaves_dmarc_failure(dns_server, rsa_pem):
    _zones(dns_server, rsa_pem)
    out = await scan_auth(_forwarded(rsa_pem), dns_server, mail_from="bounce@lists.test",
                          client_ip="198.51.100.7")
    assert {"ARC_PASS", "DKIM_FAIL", "DMARC_POLICY_REJECT", "SPF_PASS"} <= names(out)
    assert "ARC_TRUSTED_OVERRIDE" not in names(out)
    assert "lists.test" in out.result.get("ARC_PASS").reason
    assert "arc=pass" in out.result.facts.auth.clauses
    assert out.result.get("ARC_PASS").options == ("lists.test",)


async def test_trusted_sealer_offsets_the_forwarding_failure(dns_server, rsa_pem):
    _zones(dns_server, rsa_pem)
    raw = _forwarded(rsa_pem)
    untrusted = await scan_auth(raw, dns_server, mail_from="bounce@lists.test",
                                client_ip="198.51.100.7")
    trusted = await scan_auth(raw, dns_server, mail_from="bounce@lists.test",
                              client_ip="198.51.100.7",
                              auth={"trusted_arc_sealers": ["lists.test"]})
    sym = trusted.result.get("ARC_TRUSTED_OVERRIDE")
    assert sym is not None and sym.score < 0
    assert "lists.test" in sym.reason and "dmarc=pass" in sym.reason
    failure = sum(s.score for s in untrusted.result.symbols
                  if s.name in ("DKIM_FAIL", "DMARC_POLICY_REJECT") and s.score > 0)
    assert abs(sym.score + failure) < 1e-6
    assert trusted.result.score < untrusted.result.score - 5
    assert trusted.result.facts.auth.dmarc == "pass"
    assert sym.options == ("lists.test",)  # the sealer that vouched


async def test_trusted_sealer_whose_results_show_failure_does_not_override(dns_server, rsa_pem):
    _zones(dns_server, rsa_pem)
    raw = _forwarded(rsa_pem, aar="lists.test; spf=fail smtp.mailfrom=alice@sender.test; "
                     "dkim=fail header.d=sender.test; dmarc=fail header.from=sender.test")
    out = await scan_auth(raw, dns_server, mail_from="bounce@lists.test", client_ip="198.51.100.7",
                          auth={"trusted_arc_sealers": ["lists.test"]})
    assert "ARC_PASS" in names(out)
    assert "ARC_TRUSTED_OVERRIDE" not in names(out)


async def test_arc_fail_when_modified_after_sealing(dns_server, rsa_pem):
    _zones(dns_server, rsa_pem)
    raw = _forwarded(rsa_pem).replace(b"Meeting at 10.", b"Meeting at 11.")
    out = await scan_auth(raw, dns_server, mail_from="bounce@lists.test", client_ip="198.51.100.7",
                          auth={"trusted_arc_sealers": ["lists.test"]})
    assert "ARC_FAIL" in names(out)
    assert "ARC_TRUSTED_OVERRIDE" not in names(out)
    assert "arc=fail" in out.result.facts.auth.clauses


async def test_arc_na_without_arc_headers(dns_server):
    out = await scan_auth(make_email(), dns_server)
    assert "ARC_NA" in names(out)


async def test_arc_temperror_when_seal_key_unreachable(dns_server, rsa_pem):
    _zones(dns_server, rsa_pem)
    dns_server.zones["arc._domainkey.lists.test"] = "SERVFAIL"
    out = await scan_auth(_forwarded(rsa_pem), dns_server, mail_from="bounce@lists.test",
                          client_ip="198.51.100.7")
    assert "ARC_TEMPERROR" in names(out)


async def test_our_arc_seal_lets_a_downstream_trust_us_after_we_changed_the_subject(
        dns_server, rsa_pem, tmp_path):
    from mailmoat.config import config_from_dict
    from mailmoat.dkimsign import ArcSealer
    from mailmoat.scan.auth import authentication_results_header

    publish_key(dns_server, "s1", "sender.test", rsa_pem)
    publish_key(dns_server, "gw", "gw.example.test", rsa_pem)
    dns_server.zones["_dmarc.sender.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    original = sign(make_email(subject="Invoice"), "sender.test", "s1", rsa_pem)
    ours = await scan_auth(original, dns_server)
    assert "DMARC_PASS" in names(ours)

    (tmp_path / "gw.pem").write_bytes(rsa_pem)
    sealer = ArcSealer.from_config(config_from_dict({
        "smtp": {"hostname": "mx.example.test"},
        "arc_sealing": {"enabled": True, "domain": "gw.example.test", "selector": "gw",
                        "key_file": str(tmp_path / "gw.pem")}}))
    tagged = original.replace(b"Subject: Invoice", b"Subject: [SPAM?] Invoice")
    sealed = sealer.seal(tagged, authentication_results_header("mx.example.test",
                                                               ours.result.facts.auth))
    assert sealed.startswith(b"ARC-Seal:")

    downstream = await scan_auth(sealed, dns_server, client_ip="198.51.100.20",
                                 auth={"trusted_arc_sealers": ["example.test"]})
    got = names(downstream)
    assert {"DKIM_FAIL", "DMARC_POLICY_REJECT", "ARC_PASS", "ARC_TRUSTED_OVERRIDE"} <= got
    assert "gw.example.test" in downstream.result.get("ARC_TRUSTED_OVERRIDE").reason
    assert downstream.result.score < 1
