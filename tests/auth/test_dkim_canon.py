"""mailmoat.dkimfast: what it installs in dkimpy gives dkimpy's own results."""

from __future__ import annotations

import random

import dkim
import dkim.canonicalization as canon

from mailmoat import dkimfast
from mailmoat.dkimsign import dns_record_value, generate_private_key, load_private_key, sign_message
from tests.conftest import make_email


def test_installed_in_dkimpy():
    assert canon.compress_whitespace is dkimfast.compress_whitespace
    assert canon.strip_trailing_whitespace is dkimfast.strip_trailing_whitespace
    assert dkimfast.original_compress_whitespace.__module__ == "dkim.canonicalization"
    assert dkim.rfc822_parse is dkimfast.rfc822_parse
    assert dkimfast.original_rfc822_parse.__module__ == "dkim"


def _outcome(fn, message: bytes):
    try:
        return fn(message)
    except Exception as exc:  # the same error for the same broken header
        return type(exc).__name__


def test_message_split_like_dkimpy_on_random_input():
    rnd = random.Random(9)
    pieces = [b"\r", b"\n", b"\r\n", b"\r\r\n", b"\n\r", b"Subject: x", b"From a", b"From: b",
              b" folded", b"\tfolded", b"body ", b"\xff", b"bad line"]
    for _ in range(5000):
        message = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(14)))
        assert (_outcome(dkimfast.rfc822_parse, message)
                == _outcome(dkimfast.original_rfc822_parse, message)), message


def test_same_bytes_as_dkimpy_on_random_input():
    rnd = random.Random(5)
    pieces = [b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b" \r\n", b"\t\r\n", b"a", b"Z",
              b"\xe6\x97\xa5", b"\x00", b"\x0b", b"\x0c"]
    for _ in range(5000):
        body = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(30)))
        assert (dkimfast.strip_trailing_whitespace(body)
                == dkimfast.original_strip_trailing_whitespace(body)), body
        assert (dkimfast.compress_whitespace(body)
                == dkimfast.original_compress_whitespace(body)), body
        relaxed = canon.Relaxed.canonicalize_body(body)
        expected = canon.correct_empty_body(canon.strip_trailing_lines(
            dkimfast.original_compress_whitespace(
                dkimfast.original_strip_trailing_whitespace(body))))
        assert relaxed == expected, body


def test_signatures_still_verify_and_tampering_is_caught():
    pem = generate_private_key("rsa", 1024)
    record = dns_record_value(pem).encode()
    raw = sign_message(make_email(body="a  b \t c   \nsecond line\t \n\n\n"), "sender.test",
                       load_private_key(pem, "s1"))
    assert dkim.verify(raw, dnsfunc=lambda *_a, **_k: record)
    # relaxed: blank runs may change, words may not
    assert dkim.verify(raw.replace(b"a  b", b"a b"), dnsfunc=lambda *_a, **_k: record)
    assert not dkim.verify(raw.replace(b"a  b", b"a  c"), dnsfunc=lambda *_a, **_k: record)
