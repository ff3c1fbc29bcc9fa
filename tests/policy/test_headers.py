"""Delivery headers: ours added, forgeable ones stripped, the body never touched."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailmoat.policy.decide import Verdict
from mailmoat.policy.headers import rewrite_for_delivery, split_header_block
from mailmoat.scan.base import Action, Category, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts
from tests.conftest import make_email

SPECS = {
    "BIG": SymbolSpec(6.0, "big", Category.SPAM, "t"),
    "SMALL": SymbolSpec(0.5, "small", Category.SPAM, "t"),
    "GOOD": SymbolSpec(-2.0, "good", Category.CLEAN, "t"),
}
HOST = "mx.example.test"


def _result(*names: str, auth: list[str] | None = None) -> ScanResult:
    r = ScanResult(specs=SPECS)
    for n in names:
        r.add(n, reason="r")
    if auth is not None:
        r.facts.auth = AuthFacts(source="gateway", clauses=tuple(auth))
    return r


def _verdict(action: Action = Action.ACCEPT, score: float = 0.0, prefix: str = "") -> Verdict:
    cat = Category.CLEAN if action is Action.ACCEPT else Category.SPAM
    return Verdict(action=action, score=score, category=cat, reason="r", subject_prefix=prefix)


def _rewrite(
    raw: bytes,
    result: ScanResult | None = None,
    verdict: Verdict | None = None,
    mid: str = "0190abcdef0123456789abcdef",
) -> bytes:
    return rewrite_for_delivery(
        raw,
        mailmoat_id=mid,
        verdict=verdict or _verdict(),
        result=result or _result(),
        hostname=HOST,
    )


def _headers(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _body(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        if sep in raw:
            return raw.split(sep, 1)[1]
    return b""


@pytest.mark.parametrize(
    "forged",
    [
        b"X-Mailmoat-ID: forged123\r\n",
        b"x-mailmoat-id: forged123\r\n",
        b"X-MAILMOAT-VERDICT: action=accept; score=-100\r\n",
        b"X-Mailmoat-ID : forged123\r\n",  # blank before the colon
        b"X-Mailmoat-Symbols: ALLOW(-100),\r\n\tMORE(-1)\r\n",  # folded
        b"X-Mailmoat-Whatever: anything\r\n",
    ],
)
def test_incoming_mailmoat_headers_are_stripped(forged):
    raw = forged + make_email().replace(b"\n", b"\r\n")
    out = _rewrite(raw)
    msg = _headers(out)
    assert msg.get_all("X-Mailmoat-ID") == ["0190abcdef0123456789abcdef"]
    assert len(msg.get_all("X-Mailmoat-Verdict")) == 1
    assert b"forged" not in out and b"-100" not in out and b"Whatever" not in out
    assert b"MORE(-1)" not in out


_TRUSTED = ["mx.upstream.test", "Relay.Partner.Test."]


@pytest.mark.parametrize(
    "ar,kept",
    [
        (b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=evil.test\r\n", False),
        (b"Authentication-Results: MX.Example.Test.; dkim=pass\r\n", False),
        (b"Authentication-Results: (forged) mx.example.test (comment);\r\n dmarc=pass\r\n", False),
        (b"Authentication-Results: mx.example.test 1; spf=pass\r\n", False),  # with a version
        (b"Authentication-Results: mx.other.test; spf=pass smtp.mailfrom=a.test\r\n", False),
        (b"Authentication-Results: mx.example.test.evil; spf=pass\r\n", False),
        (b"Authentication-Results: mx.upstream.test.evil; spf=pass\r\n", False),
        (b"Authentication-Results: spf=pass smtp.mailfrom=a.test\r\n", False),  # no authserv-id
        (b"Authentication-Results: mx.upstream.test; dmarc=pass header.from=a.test\r\n", True),
        (b"Authentication-Results: (c) MX.UPSTREAM.TEST 1; spf=pass\r\n", True),
        (b"Authentication-Results: relay.partner.test;\r\n dkim=pass header.d=a.test\r\n", True),
        (b"Authentication-Results: mx.upstream.test; ;;garbage\r\n", True),  # theirs, broken
    ],
)
def test_authentication_results_are_kept_only_for_trusted_authserv_ids(ar, kept):
    raw = ar + make_email().replace(b"\n", b"\r\n")
    out = rewrite_for_delivery(raw, mailmoat_id="m1", verdict=_verdict(), result=_result(),
                               hostname=HOST, trusted_authserv_ids=_TRUSTED)
    assert (ar in out) is kept
    assert b"mx.upstream.test" not in _rewrite(raw)  # no trusted list: none is kept


def test_our_own_hostname_is_stripped_even_when_listed_as_trusted():
    ar = b"Authentication-Results: mx.example.test; dmarc=pass header.from=a.test\r\n"
    out = rewrite_for_delivery(ar + make_email(), mailmoat_id="m1", verdict=_verdict(),
                               result=_result(), hostname=HOST, trusted_authserv_ids=[HOST])
    assert ar not in out


def test_trusted_fields_stay_where_they_were_below_ours():
    raw = (b"Authentication-Results: mx.forger.test; dmarc=pass\n"
           b"Authentication-Results: mx.upstream.test; dmarc=fail header.from=a.test\n"
           + make_email())
    out = rewrite_for_delivery(raw, mailmoat_id="m1", verdict=_verdict(),
                               result=_result(auth=["spf=pass"]), hostname=HOST,
                               trusted_authserv_ids=_TRUSTED)
    values = [" ".join(v.split()) for v in _headers(out).get_all("Authentication-Results")]
    assert values == [f"{HOST}; spf=pass", "mx.upstream.test; dmarc=fail header.from=a.test"]


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b.test\nFrom mallory Sat Nov 28 10:00:00 2026\nX-Mailmoat-ID: forged\n\nbody\n",
        b"From: a@b.test\n: empty name\nX-Mailmoat-ID: forged\n\nbody\n",
        b"From: a@b.test\nX-Mailmoat-Verdict : forged-accept\nX-Mailmoat-ID: forged\n\nbody\n",
        b"From: a@b.test\rX-Mailmoat-ID: forged\r\n\nbody\n",  # a bare CR ends a line for parsers
    ],
)
def test_forgeries_behind_odd_lines_are_stripped(raw):
    out = _rewrite(raw)
    assert b"forged" not in out
    assert out.endswith(b"\n\nbody\n")
    import email as _email

    assert _email.message_from_bytes(out).get_all("X-Mailmoat-ID") == ["0190abcdef0123456789abcdef"]


def test_leading_continuation_cannot_fold_into_our_headers():
    raw = b" , FAKE_GOOD(-100)\nFrom: a@b.test\n\nbody\n"
    out = _rewrite(raw, _result("BIG"))
    assert b"FAKE_GOOD" not in out
    assert " ".join(_headers(out)["X-Mailmoat-Symbols"].split()) == "BIG(6)"
    assert out.endswith(b"From: a@b.test\n\nbody\n")


def test_verdict_id_and_symbols_headers():
    out = _rewrite(
        make_email(), _result("BIG", "SMALL", "GOOD"), _verdict(Action.TAG, 4.5, "[SPAM]")
    )
    msg = _headers(out)
    assert msg["X-Mailmoat-Verdict"] == "action=tag; score=4.5; category=spam"
    assert msg["X-Mailmoat-ID"] == "0190abcdef0123456789abcdef"
    symbols = " ".join(msg["X-Mailmoat-Symbols"].split())
    assert symbols == "BIG(6), GOOD(-2), SMALL(0.5)"
    assert "Authentication-Results" not in msg  # no auth checks ran


def test_symbols_header_is_folded():
    specs = {f"SYMBOL_NUMBER_{i}": SymbolSpec(1.0 + i, "s", Category.SPAM, "t") for i in range(20)}
    r = ScanResult(specs=specs)
    for name in specs:
        r.add(name, reason="r")
    out = _rewrite(make_email(), r)
    block = out.split(b"\n\n", 1)[0]
    assert all(len(line) <= 78 for line in block.split(b"\n") if not line.startswith(b"Message-ID"))
    msg = _headers(out)
    unfolded = " ".join(msg["X-Mailmoat-Symbols"].split())
    assert unfolded.count("SYMBOL_NUMBER_") == 20
    assert unfolded.startswith("SYMBOL_NUMBER_19(20), SYMBOL_NUMBER_18(19)")


@pytest.mark.parametrize(
    "clauses,expected",
    [
        (
            ["spf=pass smtp.mailfrom=a.test", "dkim=pass header.d=a.test"],
            "mx.example.test; spf=pass smtp.mailfrom=a.test; dkim=pass header.d=a.test",
        ),
        (
            ["dmarc=fail (p=reject) header.from=b.test;"],
            "mx.example.test; dmarc=fail (p=reject) header.from=b.test",
        ),
        ([], "mx.example.test; none"),
        (
            ["spf=pass\r\nX-Mailmoat-ID: injected"],
            "mx.example.test; spf=pass X-Mailmoat-ID: injected",
        ),
    ],
)
def test_authentication_results_summary(clauses, expected):
    out = _rewrite(make_email(), _result(auth=clauses))
    msg = _headers(out)
    assert " ".join(msg["Authentication-Results"].split()) == expected
    assert out.startswith(b"Authentication-Results: mx.example.test;")
    assert msg.get_all("X-Mailmoat-ID") == ["0190abcdef0123456789abcdef"]  # no injection


@pytest.mark.parametrize(
    "subject_line,prefix,action,expected",
    [
        (b"Subject: Hello", "[SPAM]", Action.TAG, "[SPAM] Hello"),
        (b"Subject: [SPAM] Hello", "[SPAM]", Action.TAG, "[SPAM] Hello"),  # not twice
        (b"Subject: =?utf-8?q?=5BSPAM=5D_Gr=C3=BC=C3=9Fe?=", "[SPAM]", Action.TAG, "[SPAM] Grüße"),
        (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "[SPAM]", Action.TAG, "[SPAM] Grüße"),
        (b"Subject: Hello", "", Action.TAG, "Hello"),  # no prefix configured
        (b"Subject: Hello", "[SPAM]", Action.ACCEPT, "Hello"),  # only tagged mail
        (b"Subject:Hello", "[SPAM]", Action.TAG, "[SPAM] Hello"),
        (
            b"Subject:\n folded onto the next line",
            "[SPAM]",
            Action.TAG,
            "[SPAM] folded onto the next line",
        ),
        (b"Subject: caf\xe9 8-bit", "[SPAM]", Action.TAG, "[SPAM] caf\xe9 8-bit"),
    ],
)
def test_subject_prefix(subject_line, prefix, action, expected):
    raw = b"From: a@b.test\n" + subject_line + b"\nTo: c@example.test\n\nbody\n"
    out = _rewrite(raw, verdict=_verdict(action, 6, prefix))
    from mailmoat.message.parse import parse_message

    assert " ".join(parse_message(out).subject.split()) == expected
    assert out.endswith(b"\n\nbody\n")


def test_subject_added_when_missing():
    out = _rewrite(b"From: a@b.test\n\nbody\n", verdict=_verdict(Action.TAG, 6, "[SPAM]"))
    assert _headers(out)["Subject"] == "[SPAM]"


# Raw inputs where the body (everything after the header block) must survive byte for byte.
BODY_CASES = [
    make_email(),
    make_email().replace(b"\n", b"\r\n"),
    b"From: a@b.test\r\nSubject: s\r\n\r\n\xff\xfe binary \x00 body\r\n.\r\n",
    b"From: \xe4\xf6\xfc <a@b.test>\nSubject: \xc3\xa9t\xc3\xa9\n\nbody with \xe9\n",
    b"From: a@b.test\nSubject: no separator\nthis line is not a header\nmore body\n",
    b"From: a@b.test\nSubject: no final newline",
    b"no headers at all, just text\n",
    b"\nbody after an empty header block\n",
    b"",
    b"From sender@x.test Sat Nov 28 10:00:00 2026\nFrom: a@b.test\n\nbody\n",
    b" continuation first\nFrom: a@b.test\n\nbody\n",
    b"From: a@b.test\nX-Mailmoat-ID: evil\n\nX-Mailmoat-ID: in the body stays\n",
]


@pytest.mark.parametrize("raw", BODY_CASES)
def test_body_is_never_changed(raw):
    out = _rewrite(raw, _result("BIG", auth=["spf=pass"]), _verdict(Action.TAG, 6, "[SPAM]"))
    prefix, fields, rest = split_header_block(raw)
    assert prefix + b"".join(b"".join(f.lines) for f in fields) + rest == raw  # lossless split
    body_in = rest.lstrip(b"\r\n") if rest[:1] in (b"\r", b"\n") else rest
    assert out.endswith(body_in)
    msg = _headers(out[len(prefix) :])
    assert msg.get_all("X-Mailmoat-ID") == ["0190abcdef0123456789abcdef"]
    assert msg["X-Mailmoat-Verdict"].startswith("action=tag")


def test_line_endings_follow_the_message():
    crlf = _rewrite(make_email().replace(b"\n", b"\r\n"))
    lf = _rewrite(make_email())
    assert b"X-Mailmoat-ID: 0190abcdef0123456789abcdef\r\n" in crlf
    assert b"X-Mailmoat-ID: 0190abcdef0123456789abcdef\n" in lf and b"\r" not in lf


def test_other_headers_are_kept_verbatim_and_in_order():
    raw = (
        b"Received: from a by b;\r\n\tSat, 28 Nov 2026 10:00:00 +0000\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=b.test;\r\n b=abc\r\n"
        b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n"
    )
    out = _rewrite(raw)
    assert raw.split(b"\r\n\r\n")[0] in out


@pytest.mark.parametrize("bad_id", ["", "a\r\nX-Evil: 1", "x" * 200, "a b"])
def test_invalid_ids_are_refused(bad_id):
    with pytest.raises(ValueError):
        _rewrite(make_email(), mid=bad_id)


def test_huge_header_block_is_fast():
    import time

    raw = (
        b"From: a@b.test\n"
        + b"X-Junk: "
        + b"a" * 1_000_000
        + b"\n"
        + b"Subject: s\n" * 5000
        + b"\nbody\n"
    )
    t = time.perf_counter()
    out = _rewrite(raw, verdict=_verdict(Action.TAG, 6, "[SPAM]"))
    assert time.perf_counter() - t < 2.0
    assert out.endswith(b"\nbody\n")


# --- properties over generated header blocks --------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.sampled_from(
    [
        b"From",
        b"Subject",
        b"X-Mailmoat-ID",
        b"x-mailmoat-verdict",
        b"X-Mailmoat-ID ",
        b"Authentication-Results",
        b"Received",
        b"To",
        b"X-Other",
        b"",
    ]
)
_values = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    st.sampled_from([b"mx.example.test; spf=pass", b" (c) MX.EXAMPLE.TEST ; x", b"[SPAM] hi"]),
)
_line = st.one_of(
    st.tuples(_names, _values).map(lambda t: t[0] + b": " + t[1]),
    st.binary(max_size=30).map(lambda b: b" " + b.replace(b"\n", b"")),
    st.just(b"From someone else"),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_line, max_size=10), st.sampled_from([b"\n", b"\r\n", b"\r"]), st.binary(max_size=200)
)
def test_generated_header_blocks(lines, eol, body):
    raw = eol.join(lines) + eol + eol + body
    verdict = _verdict(Action.TAG, 6, "[SPAM]")
    out = _rewrite(raw, _result("BIG", auth=["spf=pass"]), verdict)
    assert out.endswith(eol + body)  # the body, byte for byte
    _prefix, fields, _rest = split_header_block(out)
    ours = [f for f in fields if f.lname.startswith(b"x-mailmoat-")]
    assert [f.lname for f in ours] == [
        b"x-mailmoat-id",
        b"x-mailmoat-verdict",
        b"x-mailmoat-symbols",
    ]
    claims = [
        f
        for f in fields
        if f.lname == b"authentication-results"
        and b"mx.example.test" in f.value.lower().split(b";")[0]
    ]
    assert len(claims) == 1  # only ours
    again = _rewrite(out, _result("BIG", auth=["spf=pass"]), verdict)
    assert again == out  # rewriting delivered mail changes nothing (prefix not doubled)


def test_received_goes_first_and_is_folded():
    received = (
        "from mail.sender.test ([192.0.2.10]) by mx.example.test (mailmoat) with ESMTPS "
        "id 0190abcdef0123456789abcdef for <bob@example.test>;\r\n Sat, 28 Nov 2026 10:00:00 +0000"
    )
    out = rewrite_for_delivery(
        make_email(),
        mailmoat_id="0190abcdef0123456789abcdef",
        verdict=_verdict(),
        result=_result(auth=["spf=pass"]),
        hostname=HOST,
        received=received,
    )
    assert out.startswith(b"Received: from mail.sender.test ([192.0.2.10]) by mx.example.test")
    first = out.split(b"\nAuthentication-Results:")[0]
    assert all(len(line) <= 78 for line in first.split(b"\n"))
    assert " ".join(_headers(out)["Received"].split()) == " ".join(received.split())
    assert (
        out.index(b"Received:")
        < out.index(b"Authentication-Results:")
        < out.index(b"X-Mailmoat-ID:")
    )


def test_without_a_scan_only_the_id_is_written():
    raw = b"X-Mailmoat-Verdict: forged\nSubject: bounce\n\nbody\n"
    out = rewrite_for_delivery(
        raw, mailmoat_id="0190abcdef0123456789abcdef", verdict=None, result=None, hostname=HOST
    )
    assert out == b"X-Mailmoat-ID: 0190abcdef0123456789abcdef\nSubject: bounce\n\nbody\n"


def test_bulk_mail_carries_its_level_and_kind():
    from mailmoat.config import PolicySettings
    from mailmoat.policy.decide import decide
    from mailmoat.scan.base import ScanResult as _Result
    from mailmoat.scan.facts import BulkFacts

    result = _Result(specs={})
    result.facts.bulk = BulkFacts(kind="newsletter", markers=("one-click unsubscribe",))
    result.facts.bulk_level = 8
    raw = b"From: a@news.example\r\nSubject: Deals\r\n\r\nbody\r\n"
    out = rewrite_for_delivery(raw, mailmoat_id="abc123", verdict=decide(result, PolicySettings()),
                               result=result, hostname="mx.example.test")
    assert b"X-Mailmoat-Bulk: level=8; kind=newsletter; bulk=yes\r\n" in out
    assert b"category=bulk" in out
    result.facts.bulk_level = 3  # below the threshold: level told, not marked bulk
    out = rewrite_for_delivery(raw, mailmoat_id="abc123", verdict=decide(result, PolicySettings()),
                               result=result, hostname="mx.example.test")
    assert b"X-Mailmoat-Bulk: level=3; kind=newsletter; bulk=no\r\n" in out
    plain = rewrite_for_delivery(raw, mailmoat_id="abc123",
                                 verdict=decide(_Result(specs={}), PolicySettings()),
                                 result=_Result(specs={}), hostname="mx.example.test")
    assert b"X-Mailmoat-Bulk" not in plain
