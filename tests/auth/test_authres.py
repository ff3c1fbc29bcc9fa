"""A trusted upstream's Authentication-Results: believed from the topmost field of a trusted
authserv-id only, everyone else's ignored and removed on delivery, garbage never raised on."""

from __future__ import annotations

import json
import subprocess
from email import message_from_bytes
from typing import Any

import pytest

from mailmoat.message.model import Direction
from mailmoat.policy.decide import Verdict
from mailmoat.policy.headers import rewrite_for_delivery
from mailmoat.scan.authres import read_authentication_results
from mailmoat.scan.base import Action, Category
from tests.auth.conftest import names, scan_auth
from tests.conftest import (make_config, make_email, mailmoat_cmd, scan_bytes,
                            subprocess_env)

UPSTREAM = "mx.upstream.test"
PAYPAL = make_email(sender="PayPal <service@paypal.test>", subject="Your account")


def with_ar(raw: bytes, *values: str | bytes) -> bytes:
    """`raw` with Authentication-Results fields on top, in the order given (first = top)."""
    return b"".join(b"Authentication-Results: " + (v if isinstance(v, bytes) else v.encode())
                    + b"\n" for v in values) + raw


def config(**auth: Any):
    return make_config(auth={"trusted_authserv_ids": [UPSTREAM], **auth})


async def scan(raw: bytes, **kw: Any):
    # network=False: the offline `mailmoat scan`, where the network auth check is dropped
    return await scan_bytes(raw, kw.pop("cfg", None) or config(), mail_from="bounce@paypal.test",
                            **kw)


async def test_trusted_upstream_dmarc_pass_is_believed_offline():
    out = await scan(with_ar(PAYPAL, f"{UPSTREAM}; spf=pass smtp.mailfrom=bounce@paypal.test; "
                             "dkim=pass header.d=paypal.test header.s=s1; "
                             "dmarc=pass header.from=paypal.test"))
    sym = out.result.get("UPSTREAM_DMARC_PASS")
    assert sym is not None and sym.score == -1.0
    assert sym.reason == (f"Authentication-Results of {UPSTREAM} (trusted upstream): "
                          "dmarc=pass for paypal.test")
    facts = out.result.facts.auth
    assert facts is not None and facts.source == f"upstream:{UPSTREAM}"
    assert (facts.spf, facts.spf_domain, facts.dkim_pass, facts.dmarc, facts.from_domain) == (
        "pass", "paypal.test", ("paypal.test",), "pass", "paypal.test")
    assert facts.aligned() and not facts.failed
    assert facts.spf_identity == "mailfrom"
    assert facts.clauses is None and not facts.verified_here  # we verified nothing ourselves


async def test_forged_authentication_results_of_an_untrusted_id_are_ignored_and_removed():
    raw = with_ar(PAYPAL, "mx.forger.test; dmarc=pass header.from=paypal.test",
                  f"{UPSTREAM}.evil.test; dkim=pass header.d=paypal.test")
    out = await scan(raw)
    assert not {"UPSTREAM_DMARC_PASS", "UPSTREAM_AUTH_PASS"} & names(out)
    assert out.result.facts.auth is None
    info = out.result.get("UPSTREAM_UNTRUSTED_AUTHRES")
    assert info is not None and info.score == 0 and info.category is Category.POLICY
    assert info.options == ("mx.forger.test", f"{UPSTREAM}.evil.test")

    delivered = rewrite_for_delivery(
        raw, mailmoat_id="m1", verdict=out.verdict, result=out.result, hostname="gw.test",
        trusted_authserv_ids=[UPSTREAM])
    assert message_from_bytes(delivered).get_all("Authentication-Results") is None


async def test_only_the_topmost_trusted_field_counts():
    # The upstream adds its field on top; the one below was written by the sender.
    raw = with_ar(PAYPAL, f"{UPSTREAM}; dmarc=fail policy.published-domain-policy=reject "
                  "header.from=paypal.test",
                  f"{UPSTREAM}; dmarc=pass header.from=paypal.test")
    out = await scan(raw)
    assert "UPSTREAM_DMARC_PASS" not in names(out)
    sym = out.result.get("UPSTREAM_DMARC_FAIL")
    assert sym is not None and sym.score == 6.0 and sym.category is Category.PHISHING
    assert "dmarc=fail for paypal.test (policy reject)" in sym.reason
    assert out.result.facts.auth.dmarc == "fail" and out.result.facts.auth.failed


async def test_an_untrusted_field_above_the_trusted_one_does_not_hide_it():
    raw = with_ar(PAYPAL, "relay.internal.test; dmarc=pass header.from=paypal.test",
                  f"{UPSTREAM}; dmarc=fail header.from=paypal.test")
    out = await scan(raw)
    assert {"UPSTREAM_DMARC_FAIL_UNENFORCED", "UPSTREAM_UNTRUSTED_AUTHRES"} <= names(out)
    assert out.result.facts.auth.dmarc == "fail"


@pytest.mark.parametrize("clause, symbol", [
    ("dmarc=fail policy.published-domain-policy=quarantine header.from=paypal.test",
     "UPSTREAM_DMARC_FAIL"),
    ("dmarc=fail (p=REJECT sp=REJECT dis=REJECT) header.from=paypal.test",  # Gmail
     "UPSTREAM_DMARC_FAIL"),
    ("dmarc=fail action=oreject header.from=paypal.test", "UPSTREAM_DMARC_FAIL"),  # M365
    ("dmarc=fail (p=NONE sp=NONE dis=NONE) header.from=paypal.test",
     "UPSTREAM_DMARC_FAIL_UNENFORCED"),
    ("dmarc=fail header.from=paypal.test", "UPSTREAM_DMARC_FAIL_UNENFORCED"),  # not stated
])
async def test_dmarc_fail_weight_follows_the_stated_policy(clause, symbol):
    out = await scan(with_ar(PAYPAL, f"{UPSTREAM}; spf=none; {clause}"))
    assert {n for n in names(out) if n.startswith("UPSTREAM_DMARC")} == {symbol}


async def test_aligned_pass_without_dmarc_and_failures():
    out = await scan(with_ar(PAYPAL, f"{UPSTREAM}; dkim=pass header.i=@mail.paypal.test"))
    assert out.result.get("UPSTREAM_AUTH_PASS").reason == (
        f"Authentication-Results of {UPSTREAM} (trusted upstream): dkim=pass by "
        "mail.paypal.test, aligned with paypal.test")

    out = await scan(with_ar(PAYPAL, f"{UPSTREAM}; spf=fail smtp.mailfrom=paypal.test; "
                             "dkim=fail header.d=paypal.test"))
    assert {"UPSTREAM_SPF_FAIL", "UPSTREAM_DKIM_FAIL"} <= names(out)
    assert "UPSTREAM_AUTH_PASS" not in names(out)
    assert out.result.facts.auth.dkim_fail == ("paypal.test",)


async def test_dmarc_about_another_from_domain_does_not_apply():
    out = await scan(with_ar(PAYPAL, f"{UPSTREAM}; dmarc=pass header.from=other.test"))
    assert "UPSTREAM_DMARC_PASS" not in names(out)
    assert "does not apply" in out.result.get("UPSTREAM_AUTHRES_UNUSABLE").reason
    assert out.result.facts.auth.dmarc == "none"


@pytest.mark.parametrize("value", [
    f"{UPSTREAM}; " + "(" * 4000 + "dmarc=pass header.from=paypal.test",  # RecursionError
    f"{UPSTREAM}; ;;; == dmarc",
    f"{UPSTREAM}",
    f"{UPSTREAM}; dmarc=pass header.from=paypal.test; " + "dkim=pass header.d=x.test; " * 400,
    f"{UPSTREAM}; dmarc=pass \xff\xfe header.from=paypal.test".encode("latin-1"),
])
async def test_a_broken_trusted_field_is_ignored_with_a_reason(value):
    out = await scan(with_ar(PAYPAL, value))
    assert "AUTH_FAIL" not in names(out)
    assert "UPSTREAM_DMARC_PASS" not in names(out)
    assert out.result.facts.auth is None
    assert UPSTREAM in out.result.get("UPSTREAM_AUTHRES_UNUSABLE").reason


def test_reading_tolerates_garbage_header_blocks():
    for raw in (b"", b"\x00\xff", b"Authentication-Results:\n\n", b" folded\nA: b\n\n",
                b"Authentication-Results: (((\n\n"):
        assert read_authentication_results(raw, frozenset({UPSTREAM})).upstream is None


@pytest.mark.parametrize("direction, auth_user", [
    (Direction.OUTBOUND, None), (Direction.INTERNAL, None), (Direction.INBOUND, "alice")])
async def test_our_own_users_mail_is_not_judged(direction, auth_user):
    from mailmoat.message.model import Envelope
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner

    scanner = Scanner(BuildContext(config=config(), network=False))
    env = Envelope(mail_from="a@paypal.test", rcpt_tos=("b@example.test",),
                   direction=direction, auth_user=auth_user)
    out = await scanner.scan(with_ar(PAYPAL, f"{UPSTREAM}; dmarc=fail header.from=paypal.test"),
                             env)
    await scanner.close()
    assert not {n for n in names(out) if n.startswith("UPSTREAM_")}
    assert out.result.facts.auth is None


async def test_our_own_hostname_is_never_trusted():
    cfg = make_config(smtp={"hostname": "gw.example.test"},
                      auth={"trusted_authserv_ids": ["gw.example.test", UPSTREAM]})
    out = await scan(with_ar(PAYPAL, "gw.example.test; dmarc=pass header.from=paypal.test"),
                     cfg=cfg)
    assert "UPSTREAM_DMARC_PASS" not in names(out)
    assert out.result.get("UPSTREAM_UNTRUSTED_AUTHRES").options == ("gw.example.test",)


async def test_without_a_trusted_list_nothing_changes():
    out = await scan(with_ar(PAYPAL, f"{UPSTREAM}; dmarc=pass header.from=paypal.test"),
                     cfg=make_config())
    assert not {n for n in names(out) if n.startswith("UPSTREAM_")}
    assert out.result.facts.auth is None


# --- With the network: the gateway's own auth check stands aside -----------------------------

SENDER = make_email()  # From alice@sender.test


async def test_gateway_check_stands_aside_behind_a_trusted_upstream(dns_server):
    # Our SPF would see the upstream's address and fail; the upstream's verdict counts.
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:198.51.100.1 -all"]}
    raw = with_ar(SENDER, f"{UPSTREAM}; spf=pass smtp.mailfrom=sender.test; "
                  "dmarc=pass header.from=sender.test")
    out = await scan_auth(raw, dns_server, auth={"trusted_authserv_ids": [UPSTREAM]})
    assert not {n for n in names(out) if n.startswith(("SPF_", "DKIM_", "DMARC_", "ARC_"))}
    assert "UPSTREAM_DMARC_PASS" in names(out)
    assert out.result.facts.auth.source == f"upstream:{UPSTREAM}"


async def test_gateway_facts_without_an_upstream(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    raw = with_ar(SENDER, "mx.forger.test; dmarc=pass header.from=sender.test")
    out = await scan_auth(raw, dns_server, auth={"trusted_authserv_ids": [UPSTREAM]})
    assert {"SPF_PASS", "UPSTREAM_UNTRUSTED_AUTHRES"} <= names(out)
    facts = out.result.facts.auth
    assert (facts.source, facts.spf, facts.spf_domain, facts.from_domain) == (
        "gateway", "pass", "sender.test", "sender.test")


async def test_a_broken_upstream_field_leaves_the_gateway_to_verify(dns_server):
    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    raw = with_ar(SENDER, f"{UPSTREAM}; ;;garbage")
    out = await scan_auth(raw, dns_server, auth={"trusted_authserv_ids": [UPSTREAM]})
    assert {"SPF_PASS", "UPSTREAM_AUTHRES_UNUSABLE"} <= names(out)
    assert out.result.facts.auth.source == "gateway"


async def test_disabling_the_upstream_check_gives_the_gateway_its_verdict_back(dns_server):
    from mailmoat.message.model import Envelope
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner

    dns_server.zones["sender.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    cfg = make_config(dns={"nameservers": [dns_server.nameserver], "lifetime": 0.8},
                      auth={"trusted_authserv_ids": [UPSTREAM]},
                      scan={"network": True, "disabled_checks": ["upstream_auth"]})
    scanner = Scanner(BuildContext(config=cfg, network=True))
    env = Envelope(mail_from="alice@sender.test", rcpt_tos=("bob@example.test",),
                   client_ip="192.0.2.10", helo="mail.sender.test")
    out = await scanner.scan(with_ar(SENDER, f"{UPSTREAM}; dmarc=pass header.from=sender.test"),
                             env)
    await scanner.close()
    assert "SPF_PASS" in names(out) and "UPSTREAM_DMARC_PASS" not in names(out)
    assert out.result.facts.auth.source == "gateway"


# --- Delivery and the offline command --------------------------------------------------------

def test_delivery_keeps_the_trusted_upstreams_field_only():
    raw = with_ar(PAYPAL, f"{UPSTREAM}; dmarc=pass header.from=paypal.test",
                  "mx.forger.test; dmarc=pass header.from=paypal.test")
    verdict = Verdict(action=Action.ACCEPT, score=0, category=Category.CLEAN, reason="r")
    out = rewrite_for_delivery(raw, mailmoat_id="m1", verdict=verdict, result=None,
                               hostname="gw.test", trusted_authserv_ids=[UPSTREAM.upper()])
    assert message_from_bytes(out).get_all("Authentication-Results") == [
        f"{UPSTREAM}; dmarc=pass header.from=paypal.test"]


def test_mailmoat_scan_reads_the_key_from_its_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[auth]\ntrusted_authserv_ids = ["{UPSTREAM}"]\n'
                   '[content]\nenabled = false\n[deep]\nmode = "off"\n')
    (tmp_path / "m.eml").write_bytes(with_ar(
        PAYPAL, f"{UPSTREAM}; dmarc=fail (p=REJECT) header.from=paypal.test"))
    proc = subprocess.run(mailmoat_cmd("scan", "--config", str(cfg), str(tmp_path / "m.eml")),
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert "UPSTREAM_DMARC_FAIL" in {s["name"] for s in row["symbols"]}
    assert row["category"] == "phishing"
