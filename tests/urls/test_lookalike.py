"""Skeletons, edit distance and the lookalike index shared by the urls and BEC families."""

from __future__ import annotations

import pytest

from mailmoat.scan.lookalike import (LookalikeIndex, Protected, damerau_levenshtein, is_ip,
                                     is_mixed_script, registrable, skeleton, split_domain)


@pytest.mark.parametrize("a,b", [("pаypal", "paypal"), ("PayPaI", "paypal"), ("exarnple", "example"),
                                 ("examp1e", "example"), ("micrоsоft", "microsoft"), ("vvells", "wells")])
def test_confusable_spellings_share_a_skeleton(a, b):
    assert skeleton(a) == skeleton(b)


def test_distinct_words_keep_distinct_skeletons():
    assert skeleton("paypal") != skeleton("paypai1x")
    assert skeleton("amazon") != skeleton("amazing")


@pytest.mark.parametrize("a,b,d", [("paypal", "paypal", 0), ("paypal", "paypall", 1),
                                   ("paypal", "payapl", 1), ("paypal", "pypal", 1),
                                   ("paypal", "paxpel", 2), ("paypal", "google", 4)])
def test_damerau_levenshtein(a, b, d):
    assert damerau_levenshtein(a, b, limit=3) == min(d, 4)


def test_registrable_domains_use_the_bundled_suffix_list():
    assert registrable("a.b.paypal.co.uk") == "paypal.co.uk"
    assert registrable("mail.example.test") == "example.test"  # .test: last label as suffix
    assert registrable("xn--pypal-4ve.com") == "pаypal.com"
    assert split_domain("203.0.113.7").registrable == "203.0.113.7"


def test_ip_forms():
    assert is_ip("203.0.113.7") and is_ip("[2001:db8::1]") and is_ip("3405803783")
    assert not is_ip("123.com") and not is_ip("example.test")


def test_mixed_script():
    assert is_mixed_script("pаypal")  # Latin + Cyrillic
    assert not is_mixed_script("paypal") and not is_mixed_script("пейпал")
    assert not is_mixed_script("中文abc")  # Han with Latin is ordinary in Chinese names


def test_index_answers_and_spares_the_owner():
    idx = LookalikeIndex([
        Protected("paypal", "brand", ("paypal",), frozenset({"paypal.com"})),
        Protected("example.test", "company", ("example",), frozenset({"example.test"}),
                  ("example.test",)),
    ])
    assert idx.match("paypal.com") is None
    assert idx.match("paypal.de") is None  # brands own their country domains
    assert idx.match("example.com") is None  # RFC 2606 names are never attackers'
    assert idx.match("example.net") is None
    assert idx.match("example.org") is None
    assert idx.match("example.co").how == "other-tld"  # for the company it is a lookalike
    assert idx.match("example-test.com").how == "hyphenated"
    assert idx.match("paypal-login.com").how == "embedded"
    assert idx.match("purchase.com") is None
    assert idx.names_in_subdomain("paypal.com.evil.test").name == "paypal"
    assert idx.names_in_subdomain("www.paypal.com") is None
