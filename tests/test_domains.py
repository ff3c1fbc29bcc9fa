"""One reading of domain names for every check: the Public Suffix List with its private
section, so hosted names (github.io, onmicrosoft.com, blogspot.com) are their own domains."""

from __future__ import annotations

import pytest

from mailmoat.domains import is_ip, org_domain, registrable, split_domain
from mailmoat.scan import auth, lookalike, urls


@pytest.mark.parametrize("host,expected", [
    ("evil.github.io", "evil.github.io"),
    ("login.evil.github.io", "evil.github.io"),
    ("corp.onmicrosoft.com", "corp.onmicrosoft.com"),
    ("corp.mail.onmicrosoft.com", "corp.mail.onmicrosoft.com"),
    ("myblog.blogspot.com", "myblog.blogspot.com"),
    ("www.bbc.co.uk", "bbc.co.uk"),
    ("a.b.example.com", "example.com"),
    ("WWW.Example.COM.", "example.com"),
    ("mx.a.example.test", "example.test"),  # not in the list: the default rule "*"
    ("co.uk", "co.uk"),  # a public suffix is its own answer
    ("192.0.2.1", "192.0.2.1"),
    ("", ""),
])
def test_registrable_and_org_domain_agree_on_the_classic_cases(host, expected):
    assert registrable(host) == expected
    assert org_domain(host) == expected


def test_every_family_reads_names_the_same_way():
    # auth (DMARC alignment), urls and lookalike used to disagree on evil.github.io
    # (evil.github.io, github.io, github.io).
    assert auth.org_domain is org_domain
    assert lookalike.registrable is registrable and urls.registrable is registrable
    assert lookalike.split_domain is split_domain
    assert not auth.aligned("evil.github.io", "github.io", "r")
    assert auth.aligned("eu.corp.onmicrosoft.com", "corp.onmicrosoft.com", "r")


def test_one_tenant_is_not_another():
    assert registrable("corp.onmicrosoft.com") != registrable("other.onmicrosoft.com")


def test_idn_is_split_in_unicode_and_org_domain_keeps_a_labels():
    punycode = "login.xn--pypal-4ve.com"  # pаypal.com with a Cyrillic а
    parts = split_domain(punycode)
    assert parts.label == "p\u0430ypal" and parts.suffix == "com" and parts.subdomain == "login"
    assert org_domain(punycode) == "xn--pypal-4ve.com"


@pytest.mark.parametrize("host,ip", [("203.0.113.7", True), ("[2001:db8::1]", True),
                                     ("3405803783", True), ("0xCB.0x0.0x71.7".lower(), True),
                                     ("example.com", False), ("1.example", False)])
def test_is_ip(host, ip):
    assert is_ip(host) is ip
