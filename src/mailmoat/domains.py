"""What mailmoat knows about domain names, in one place for checks, learning and recall.

One Public Suffix List reading for the gateway, and the free-mail providers.

`split_domain` cuts a host into label, public suffix and subdomain; `registrable` and
`org_domain` (RFC 7489 section 3.2, what DMARC aligns on) are one label under the public
suffix. The list is read *with* its private section: `evil.github.io` is its own registrable
domain, not GitHub's, and `corp.onmicrosoft.com` is one tenant, not every Microsoft 365
customer — so a release or a reputation credit given to one never reaches the others, and
a lookalike label under a hosting suffix (`paypal.github.io`) is seen as the label it is.

The bundled snapshot only: a gateway must not fetch the list at scan time. The tier-1
content model's domain tokens (`ml/features.py`) read domains here too.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import tldextract

from mailmoat.message.parse import idna_to_unicode

__all__ = ["FREEMAIL", "DomainParts", "has_known_suffix", "is_freemail", "is_ip",
           "is_public_suffix", "listed", "org_domain", "registrable",
           "split_domain"]


# Shared-tenant names the list does not carry but mail treats as one tenant each: every
# Microsoft 365 customer gets <tenant>.onmicrosoft.com (and <tenant>.mail.onmicrosoft.com
# for routing), so onmicrosoft.com is no one's organisational domain.
EXTRA_SUFFIXES = ("onmicrosoft.com", "mail.onmicrosoft.com")


@lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                 include_psl_private_domains=True,
                                 extra_suffixes=EXTRA_SUFFIXES)


@dataclass(frozen=True)
class DomainParts:
    host: str
    registrable: str  # "paypal.co.uk"; the host itself for IPs and suffix-less names
    label: str  # "paypal"
    suffix: str  # "co.uk"
    subdomain: str  # "www.login"


_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}")


def is_ip(host: str) -> bool:
    if not host or not (host[-1].isdigit() or host[-1] == "]" or ":" in host):
        return False  # a name ends in a letter (its TLD); only addresses end in a digit
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        pass
    # Dotless or hex/octal IPv4 forms browsers still accept (http://3405803783/, 0xCB.0x0.0x71.7)
    return bool(_NUMERIC_HOST.fullmatch(h)) and any(c.isdigit() for c in h)


@lru_cache(maxsize=65536)
def split_domain(host: str) -> DomainParts:
    """Label, suffix and subdomain of `host`; IDN labels come back in Unicode (what the
    lookalike checks compare)."""
    host = host.lower().rstrip(".")
    if not host or is_ip(host):
        return DomainParts(host, host, host, "", "")
    if "xn--" in host:
        host = idna_to_unicode(host)
    r = _extractor()(host)
    if not r.suffix and "." in host:
        # Not under a known public suffix (.test, .local, .corp): the PSL's default rule "*"
        # makes the last label the suffix.
        rest, _, suffix = host.rpartition(".")
        sub, _, label = rest.rpartition(".")
        return DomainParts(host, f"{label}.{suffix}", label, suffix, sub)
    if not r.suffix or not r.domain:
        return DomainParts(host, host, r.domain or host, r.suffix, r.subdomain)
    return DomainParts(host, f"{r.domain}.{r.suffix}", r.domain, r.suffix, r.subdomain)


def registrable(host: str) -> str:
    return split_domain(host).registrable


def listed(host: str, names: frozenset[str] | set[str]) -> str | None:
    """The first of `host` and its parent domains that is in `names` (a table of hosting
    platforms, shorteners...), or None. Tables name platforms (github.io), and a platform is
    a public suffix of its own, so the host's registrable domain alone would miss it."""
    name = host.lower().rstrip(".")
    while name:
        if name in names:
            return name
        name = name.partition(".")[2]
    return None


def has_known_suffix(host: str) -> bool:
    """Does `host` end in a suffix the list knows (not .test, .local, .corp)?"""
    return bool(_extractor()(host.lower().rstrip(".")).suffix)


def is_public_suffix(domain: str) -> bool:
    """Is `domain` a suffix under which unrelated parties register names (co.uk, github.io,
    onmicrosoft.com), rather than anyone's domain?"""
    domain = domain.lower().rstrip(".")
    if not domain or is_ip(domain):
        return False
    r = _extractor()(domain)
    return not r.domain and r.suffix == domain


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organisational domain (example.co.uk), in the form it was given (A-labels stay
    A-labels, so it compares with DKIM's d= and SPF's domains as they are written)."""
    domain = domain.lower().rstrip(".")
    if not domain or is_ip(domain):
        return domain
    ext = _extractor()(domain)
    top = ext.top_domain_under_public_suffix
    if top:
        return top
    if not ext.suffix:
        labels = domain.split(".")
        return ".".join(labels[-2:])
    return domain  # the domain is itself a public suffix


FREEMAIL = frozenset("""
gmail.com googlemail.com outlook.com hotmail.com hotmail.co.uk hotmail.fr hotmail.de live.com
live.co.uk msn.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de yahoo.co.jp yahoo.com.cn
yahoo.com.hk yahoo.com.tw ymail.com rocketmail.com aol.com icloud.com me.com mac.com mail.com
email.com gmx.com gmx.de gmx.net web.de yandex.ru yandex.com ya.ru mail.ru inbox.ru bk.ru
list.ru protonmail.com proton.me pm.me zoho.com zohomail.com tutanota.com tuta.io hushmail.com
fastmail.com inbox.com rediffmail.com libero.it orange.fr free.fr laposte.net t-online.de
qq.com foxmail.com 163.com 126.com yeah.net sina.com sina.cn sohu.com 139.com 189.cn
aliyun.com 21cn.com tom.com naver.com daum.net hanmail.net seznam.cz wp.pl o2.pl interia.pl
""".split())
_FREEMAIL_LABELS = frozenset({"hotmail", "yahoo", "outlook", "live", "gmx", "yandex"})


def is_freemail(domain: str, extra: frozenset[str] | set[str] = frozenset()) -> bool:
    """A domain where anyone can open a mailbox (the built-in list, `extra`, or a
    hotmail./yahoo./… label under any suffix). The BEC checks, the URL checks, the evidence
    gate and online learning share it."""
    if not domain:
        return False
    reg = registrable(domain)
    return reg in FREEMAIL or domain in FREEMAIL or reg in extra or domain in extra or \
        split_domain(domain).label in _FREEMAIL_LABELS
