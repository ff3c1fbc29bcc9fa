from __future__ import annotations

from email import message_from_bytes

from mailmoat.policy.decide import Verdict
from mailmoat.relay.dsn import status_code
from mailmoat.relay.headers import add_gateway_headers, split_message
from mailmoat.scan.base import Action, Category, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts


def _result() -> ScanResult:
    r = ScanResult(specs={"TEST_SPAMMY": SymbolSpec(6.0, "d", Category.SPAM, "test"),
                          "TEST_OK": SymbolSpec(-1.0, "d", Category.CLEAN, "test")})
    r.add("TEST_SPAMMY", reason="looks spammy")
    r.add("TEST_OK", reason="fine")
    r.facts.auth = AuthFacts(source="gateway", spf="pass", spf_domain="sender.test",
                             dmarc="fail", clauses=("spf=pass smtp.mailfrom=sender.test",
                                                    "dkim=none",
                                                    "dmarc=fail header.from=sender.test"))
    return r


def test_strips_forged_headers_even_folded_and_adds_ours():
    raw = (b"From: a@sender.test\r\nX-MAILMOAT-Verdict: action=accept;\r\n\tscore=-50\r\n"
           b"x-mailmoat-id: fake\r\nSubject: Cheap pills\r\n\r\nbody\r\n")
    v = Verdict(Action.TAG, 5.0, Category.SPAM, "score 5", subject_prefix="[SPAM]")
    out = add_gateway_headers(raw, mailmoat_id="abc123", verdict=v, result=_result(),
                              hostname="mx.test")
    msg = message_from_bytes(out)
    assert msg.get_all("X-Mailmoat-ID") == ["abc123"]
    assert msg.get_all("X-Mailmoat-Verdict") == ["action=tag; score=5; category=spam"]
    assert "score=-50" not in out.decode()
    assert msg["Subject"] == "[SPAM] Cheap pills"
    assert msg["X-Mailmoat-Symbols"] == "TEST_SPAMMY(6), TEST_OK(-1)"
    ar = " ".join(msg["Authentication-Results"].split())
    assert ar == "mx.test; spf=pass smtp.mailfrom=sender.test; dkim=none; dmarc=fail header.from=sender.test"
    assert out.endswith(b"\r\n\r\nbody\r\n")  # body untouched
    # prefix is not doubled when a message passes twice
    again = add_gateway_headers(out, mailmoat_id="x", verdict=v, result=None, hostname="mx.test")
    assert message_from_bytes(again)["Subject"] == "[SPAM] Cheap pills"


def test_lf_only_message_and_no_body():
    head, eol, body = split_message(b"Subject: a\nX-Mailmoat-ID: z\n\nhello\n")
    assert eol == b"\n" and body == b"hello\n"
    out = add_gateway_headers(b"Subject: a\nX-Mailmoat-ID: z\n\nhello\n", mailmoat_id="m1",
                              verdict=None, result=None, hostname="h")
    assert out == b"X-Mailmoat-ID: m1\nSubject: a\n\nhello\n"
    out = add_gateway_headers(b"Subject: only headers", mailmoat_id="m2", verdict=None,
                              result=None, hostname="h")
    assert message_from_bytes(out)["X-Mailmoat-ID"] == "m2"


def test_long_symbol_list_is_folded():
    specs = {f"TEST_SYMBOL_NUMBER_{i}": SymbolSpec(1.0, "d") for i in range(30)}
    r = ScanResult(specs=specs)
    for name in specs:
        r.add(name, reason="x")
    out = add_gateway_headers(b"Subject: s\r\n\r\nb", mailmoat_id="m", verdict=None, result=r,
                              hostname="h")
    assert all(len(line) <= 78 for line in out.split(b"\r\n"))
    assert "TEST_SYMBOL_NUMBER_29(1)" in message_from_bytes(out)["X-Mailmoat-Symbols"]


def test_status_code_from_replies():
    assert status_code("127.0.0.1:25: 550 5.1.1 no such user") == "5.1.1"
    assert status_code("550 mailbox unavailable") == "5.0.0"
    assert status_code("connection refused") == "5.0.0"
