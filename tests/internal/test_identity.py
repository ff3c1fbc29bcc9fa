"""Who sent it: SMTP AUTH, a trusted upstream's header (Postfix's Received comment too),
the envelope; malformed values; the raw header block read and stripped byte for byte."""

from __future__ import annotations

import logging

import pytest

from mailmoat.internal.identity import (
    IdentityProblem,
    agent_family,
    client_network,
    header_value,
    identity_from_received,
    parse_identity_value,
    resolve_identity,
    strip_header,
)
from mailmoat.message.model import Envelope

OURS = frozenset({"example.test"})


def headers(**fields: str):
    table = {k.replace("_", "-").lower(): v for k, v in fields.items()}
    return lambda name: table.get(name.lower())


def resolve(env: Envelope, trusted: bool = True, name: str = "X-Authenticated-Sender", **h):
    return resolve_identity(env, headers(**h), identity_header=name, trusted=trusted,
                            internal_domains=OURS)


@pytest.mark.parametrize("value, account", [
    ("alice@example.test", "alice@example.test"),
    ("<Alice@Example.TEST>", "alice@example.test"),
    ("Alice Smith <alice@example.test>", "alice@example.test"),
    ("host: alice@example.test", "alice@example.test"),  # cPanel/Exim writes it this way
    ("alice", "alice"),  # a bare SASL login
])
def test_identity_values(value, account):
    assert parse_identity_value(value) == account


@pytest.mark.parametrize("value", ["", "   ", "two words here", "a\x00b@example.test",
                                   "x" * 1200, "<>", f"{'a' * 260}@example.test"])
def test_malformed_identity_values_are_refused(value):
    with pytest.raises(IdentityProblem):
        parse_identity_value(value)


def test_postfix_received_comment():
    received = ("from laptop.example.test (laptop.example.test [192.0.2.7]) "
                "(Authenticated sender: alice) by mail.example.test (Postfix) with ESMTPSA "
                "id 4F1C2; Mon, 1 Jun 2026 10:00:00 +0000")
    assert identity_from_received(received) == "alice"
    with pytest.raises(IdentityProblem):
        identity_from_received("from a by b (Postfix) with ESMTP id 1")


def test_sources_in_order_of_trust():
    env = Envelope(mail_from="bob@example.test", rcpt_tos=("c@example.test",),
                   client_ip="127.0.0.1", auth_user="Carol@Example.test")
    assert resolve(env, x_authenticated_sender="alice@example.test").source == "smtp_auth"
    env = Envelope(mail_from="bob@example.test", rcpt_tos=("c@example.test",),
                   client_ip="127.0.0.1", helo="relay.example.test")
    got = resolve(env, x_authenticated_sender="alice@example.test",
                  user_agent="Microsoft Outlook 16.0.17328.20124")
    assert (got.account, got.source, got.network, got.agent, got.helo) == (
        "alice@example.test", "header", "127.0.0.0/24", "microsoft outlook", "relay.example.test")
    assert resolve(env).source == "envelope" and resolve(env).account == "bob@example.test"


def test_the_header_is_never_believed_from_an_untrusted_client():
    env = Envelope(mail_from="mallory@evil.test", rcpt_tos=("c@example.test",),
                   client_ip="198.51.100.9")
    assert resolve(env, trusted=False, x_authenticated_sender="ceo@example.test") is None
    env = Envelope(mail_from="ceo@example.test", rcpt_tos=("c@example.test",),
                   client_ip="198.51.100.9")
    assert resolve(env, trusted=False, x_authenticated_sender="ceo@example.test") is None


def test_no_account_for_foreign_or_null_senders():
    for sender in ("", "someone@partner.test"):
        env = Envelope(mail_from=sender, rcpt_tos=("c@example.test",), client_ip="127.0.0.1")
        assert resolve(env) is None


def test_a_malformed_header_is_logged_and_the_envelope_used(caplog):
    env = Envelope(mail_from="bob@example.test", rcpt_tos=("c@example.test",),
                   client_ip="127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="mailmoat.internal.identity"):
        got = resolve(env, x_authenticated_sender="not an address at all")
    assert got.source == "envelope" and got.account == "bob@example.test"
    assert "X-Authenticated-Sender from 127.0.0.1 ignored" in caplog.text


def test_received_as_the_identity_header():
    env = Envelope(mail_from="alice@example.test", rcpt_tos=("c@example.test",),
                   client_ip="127.0.0.1")
    got = resolve(env, name="Received", received="from x (x [192.0.2.7]) (Authenticated "
                  "sender: alice.smith) by mail.example.test (Postfix) with ESMTPSA id 1")
    assert (got.account, got.source) == ("alice.smith", "header")


def test_agents_and_networks():
    assert agent_family("Mozilla/5.0 (Windows NT 10.0; rv:102.0) Gecko/20100101 "
                        "Thunderbird/102.8.0") == "mozilla gecko thunderbird"
    assert agent_family("iPhone Mail (20D67)") == "iphone mail"
    assert agent_family(None) == ""
    assert client_network("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert client_network("not-an-ip") == ""


def test_header_block_is_read_and_stripped_byte_for_byte():
    raw = (b"From: a@example.test\r\nX-Authenticated-Sender: ceo@example.test\r\n"
           b"x-authenticated-sender: folded\r\n\tcontinued\r\nSubject: hi\r\n\r\n"
           b"X-Authenticated-Sender: in the body stays\r\n")
    assert header_value(raw, "X-AUTHENTICATED-SENDER") == "ceo@example.test"
    out, n = strip_header(raw, "X-Authenticated-Sender")
    assert n == 2
    assert out == (b"From: a@example.test\r\nSubject: hi\r\n\r\n"
                   b"X-Authenticated-Sender: in the body stays\r\n")
    last = b"From: a@example.test\nX-Authenticated-Sender: x\n\nbody"
    assert strip_header(last, "x-authenticated-sender") == (b"From: a@example.test\n\nbody", 1)
    assert strip_header(b"no header block at all", "X-A") == (b"no header block at all", 0)


def test_the_device_address_from_the_trusted_servers_received_field():
    from mailmoat.internal.identity import received_client_ip

    postfix = ("from LAPTOP-1 (unknown [203.0.113.9])\r\n\t(Authenticated sender: alice)\r\n\t"
               "by mail.example.test (Postfix) with ESMTPSA id 4F1C2")
    assert received_client_ip(postfix) == "203.0.113.9"
    assert received_client_ip("from WS-7 (10.1.2.3) by EXCH01.corp.test (15.2.1118.40)") \
        == "10.1.2.3"
    assert received_client_ip("from [IPv6:2001:db8::5] (x [IPv6:2001:db8::5]) by m") \
        == "2001:db8::5"
    assert received_client_ip("by mail.example.test with LMTP id 9") == ""
    assert received_client_ip("from a (no address here) by b") == ""
    assert received_client_ip(None) == ""
    env = Envelope(mail_from="bob@example.test", rcpt_tos=("c@example.test",),
                   client_ip="127.0.0.1", helo="relay.example.test")
    got = resolve(env, x_authenticated_sender="alice@example.test", received=postfix)
    assert (got.client_ip, got.network) == ("203.0.113.9", "203.0.113.0/24")
