"""Check family `urls`: phishing signs in links, forms and brand use.

Runs on the parsed model only (no network), except for refreshing configured phishing URL
lists. What it looks for, each with its own symbol so an administrator can see and weigh it:

- links whose visible text shows one domain while the href goes to another;
- IP-literal hosts, non-standard ports, punycode and mixed-script hosts;
- hosts that imitate a protected brand, the company's own domains or a partner's
  (skeleton and edit-distance comparison, see `lookalike.py`), or carry a brand as a
  subdomain of a foreign domain (`paypal.com.account-verify.xyz`);
- URL shorteners, open redirectors, `data:` and `javascript:` links;
- credential-harvesting forms in HTML bodies and HTML attachments;
- a brand named in the From display name, or named next to account-lure language, while
  the sender's domain does not belong to that brand;
- URLs, hosts or domains on a configured phishing list.

It records which brands the message names and which brand its sender belongs to
(`ScanResult.facts.brands`); `link_occurrences` reads the links' domains for it and for the
evidence gate. A second check of
the family, `urls_brand_auth` in stage 1, weighs those facts against the sender's
authentication (`facts.auth`, stage 0): a brand named in mail authenticated for one of its
own domains is the brand's own mail, one whose own domain fails authentication is forged.

The brand table is data (`data/brands.toml`), loaded and validated once at import.
Everything else that does not depend on the message (regexes, the lookalike index) is built
once in `build()`; per message the work is a pass over its URLs with memoised per-host
answers.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field

from mailmoat.config import Section
from mailmoat.domains import FREEMAIL, has_known_suffix, is_freemail, listed, org_domain
from mailmoat.message.model import ParsedMessage, Url
from mailmoat.message.parse import decode_bytes, html_over_budget, html_to_text_and_urls, make_url
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts, BrandFacts
from mailmoat.scan.impersonation import BecSettings
from mailmoat.scan.lookalike import (LookalikeIndex, Protected, is_ip, is_mixed_script, registrable,
                                     skeleton, split_domain)
from mailmoat.scan.phishlist import PhishList

_G = "urls"
_P = Category.PHISHING


@dataclass(frozen=True)
class Brand:
    name: str
    domains: tuple[str, ...]  # registrable domains it legitimately sends from and links to
    keywords: tuple[str, ...] = ()  # how it is named in display names and text
    labels: tuple[str, ...] = ()  # extra domain labels to protect ("95559", "office365")
    # Names that are also surnames or words ("Norton", "Chase"): only a display name that is
    # exactly this names the brand.
    exact: tuple[str, ...] = ()
    strict: bool = False  # the name is an ordinary word: only homoglyph lookalikes count
    # Keywords that are also everyday words ("apple"): in text they name the brand only when
    # written with a capital ("Apple", "APPLE"), not in "find an apple, click on it".
    cased: tuple[str, ...] = ()
    group: str = ""  # parcel, shop, bank, … (data/brands.toml)
    # Its domains where anyone gets an address or a page (gmail.com, myshopify.com): no
    # impersonation of the brand, but no proof of it either.
    hosted: tuple[str, ...] = ()
    # Globs for domains of independent members ("*sparkasse*.de"): like `hosted`.
    patterns: tuple[str, ...] = ()


# The built-in table is data, maintained apart from the code (see its header comment).
_BRANDS_FILE = "brands.toml"
BRAND_GROUPS = frozenset({"parcel", "shop", "bank", "payment", "mail", "social", "telco",
                          "government", "crypto", "security", "travel"})
_LIST_FIELDS = ("domains", "keywords", "labels", "exact", "cased", "hosted", "patterns")
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_PATTERN = re.compile(r"^[a-z0-9*.-]*\*[a-z0-9*.-]*\.[a-z]{2,63}$")
_KEY = re.compile(r"^[a-z0-9]+$")


class BrandTableError(ValueError):
    """The brand table is broken; the message names the entry."""


def _str_list(entry: dict[str, Any], name: str) -> tuple[str, ...]:
    values = entry.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"{name} must be a list of non-empty strings")
    return tuple(values)


def _brand_from_entry(entry: Any) -> Brand:
    """One [[brand]] table, checked field by field (ValueError says what is wrong)."""
    if not isinstance(entry, dict):
        raise ValueError("not a table")
    unknown = set(entry) - {"key", "group", "strict", *_LIST_FIELDS}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    key = entry.get("key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError("key must be lower-case letters and digits")
    if entry.get("group") not in BRAND_GROUPS:
        raise ValueError(f"group must be one of {', '.join(sorted(BRAND_GROUPS))}")
    if not isinstance(entry.get("strict", False), bool):
        raise ValueError("strict must be true or false")
    lists = {name: _str_list(entry, name) for name in _LIST_FIELDS}
    if not lists["domains"]:
        raise ValueError("domains is empty")
    bad = [d for d in lists["domains"] if not _DOMAIN.match(d)]
    if bad:
        raise ValueError(f"not a lower-case domain name: {bad[0]!r}")
    if len(set(lists["domains"])) != len(lists["domains"]):
        raise ValueError("a domain is listed twice")
    for name in ("keywords", "exact", "cased"):
        if any(k != k.lower() or k != k.strip() for k in lists[name]):
            raise ValueError(f"{name} must be lower-case and trimmed")
    for name, within in (("cased", "keywords"), ("hosted", "domains")):
        stray = [v for v in lists[name] if v not in lists[within]]
        if stray:
            raise ValueError(f"{name} entry {stray[0]!r} is not in {within}")
    bad = [p for p in lists["patterns"] if not _PATTERN.match(p)]
    if bad:
        raise ValueError(f"pattern {bad[0]!r} must be a domain glob with '*' ending in a suffix")
    return Brand(key, lists["domains"], lists["keywords"], lists["labels"], lists["exact"],
                 entry.get("strict", False), lists["cased"], entry["group"], lists["hosted"],
                 lists["patterns"])


def parse_brands(text: str, where: str) -> tuple[Brand, ...]:
    """The brands of a table in the format of data/brands.toml; BrandTableError names the
    first broken entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BrandTableError(f"{where}: not valid TOML: {exc}") from exc
    entries = data.get("brand")
    if set(data) != {"brand"} or not isinstance(entries, list) or not entries:
        raise BrandTableError(f"{where}: expected only [[brand]] tables")
    brands: list[Brand] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries, 1):
        label = f"{where}: brand #{i}"
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            label += f" ({entry['key']!r})"
        try:
            brand = _brand_from_entry(entry)
        except ValueError as exc:
            raise BrandTableError(f"{label}: {exc}") from None
        if brand.name in seen:
            raise BrandTableError(f"{label}: key {brand.name!r} is used twice")
        seen.add(brand.name)
        brands.append(brand)
    return tuple(brands)


def _load_builtin_brands() -> tuple[Brand, ...]:
    text = resources.files("mailmoat").joinpath("data", _BRANDS_FILE).read_text(encoding="utf-8")
    return parse_brands(text, f"data/{_BRANDS_FILE}")


# Commonly phished brands (APWG / vendor reports), Western, German and Chinese; loaded once.
BUILTIN_BRANDS: tuple[Brand, ...] = _load_builtin_brands()
_BRAND_DOMAINS = {b.name: b.domains for b in BUILTIN_BRANDS}

# Public URL shorteners: the target is hidden until clicked.
SHORTENERS = frozenset("""
bit.ly bitly.com bit.do tinyurl.com goo.gl ow.ly is.gd buff.ly cutt.ly rebrand.ly t.ly
shorturl.at rb.gy tiny.cc s.id v.gd bl.ink short.io shorte.st adf.ly clck.ru qr.net
t.cn dwz.cn url.cn suo.im sina.lt u.to x.co lnkd.in db.tt y2u.be trib.al tiny.one
urlz.fr 2.gp soo.gd clicky.me t2m.io shrtco.de gg.gg inx.lv u.nu smarturl.it hyperurl.co
t.co mcaf.ee qrco.de l.ead.me""".split())

# Free web hosting and app platforms where phishing pages are put up in minutes. Honest mail
# links there too (a project page on github.io), so alone this weighs little.
FREE_HOSTING = frozenset("""
firebaseapp.com web.app run.app appspot.com azurewebsites.net windows.net r2.dev pages.dev
workers.dev netlify.app vercel.app herokuapp.com github.io glitch.me weebly.com wixsite.com
000webhostapp.com ipfs.io dweb.link fleek.co repl.co replit.app onrender.com surge.sh
firebasestorage.googleapis.com storage.googleapis.com sites.google.com forms.gle
blogspot.com godaddysites.com square.site webflow.io framer.app""".split())
# Sender domains that are hosting defaults nobody runs a business from.
FREE_HOSTING_SENDERS = frozenset({"firebaseapp.com", "web.app", "onmicrosoft.com", "run.app",
                                  "appspot.com", "azurewebsites.net", "herokuapp.com"})

# Services that forward to any URL given in a parameter, as (registrable domain, path prefix).
KNOWN_REDIRECTORS: tuple[tuple[str, str], ...] = (
    ("google.com", "/url"), ("google.com", "/amp/"), ("google.co.uk", "/url"),
    ("youtube.com", "/redirect"), ("facebook.com", "/l.php"), ("bing.com", "/ck/a"),
    ("linkedin.com", "/redir"), ("tumblr.com", "/redirect"), ("vk.com", "/away"),
    ("baidu.com", "/link"), ("yandex.ru", "/redirect"), ("doubleclick.net", "/"),
    ("slack-redir.net", "/link"), ("mandrillapp.com", "/track"), ("adnxs.com", "/"),
    # The web mails of GMX, WEB.DE and 1&1 send every clicked link through a dereferrer;
    # copied out of a mailbox, its links forward anyone to anywhere.
    ("deref-gmx.net", "/mail/client/"), ("deref-web.de", "/mail/client/"),
    ("deref-mail.com", "/mail/client/"), ("deref-1und1.de", "/mail/client/"),
    # Web proxies that show any page under their own name.
    ("google.com", "/translate"), ("googleweblight.com", "/"),
)
_REDIRECT_PARAMS = frozenset({"url", "u", "q", "redirect", "redirect_uri", "redirect_url",
                              "redirecturl", "redirecturi", "redir",
                              "target", "dest", "destination", "next", "goto", "link", "return",
                              "returnurl", "return_url", "r", "to", "out", "continue", "rurl",
                              "location", "go", "site", "adurl", "lite_url"})
# URL wrappers of security gateways: look through them at the real target.
_WRAPPERS = {"safelinks.protection.outlook.com": "url", "urldefense.proofpoint.com": "u",
             "linkprotect.cudasvc.com": "a"}

_DOMAIN_IN_TEXT = re.compile(
    r"(?i)(?:https?://)?(?:[a-z0-9\u00a1-\uffff](?:[a-z0-9\u00a1-\uffff-]{0,62})\.)+"
    r"(?:[a-z\u00a1-\uffff]{2,63}|xn--[a-z0-9-]{2,59})(?![a-z0-9-])")
_FORM_MARKS = ("<form", "<FORM", "<Form", "<input", "<INPUT", "<Input")
_SCRIPT_TRICKS = re.compile(
    r"(?i)\b(?:atob\s*\(|unescape\s*\(|eval\s*\(|String\.fromCharCode|document\.write\s*\(|"
    r"window\.location|location\.(?:href|replace|assign)|decodeURIComponent\s*\(\s*escape)|"
    r"http-equiv\s*=\s*['\"]?refresh")
_EMAIL_FIELD = re.compile(r"(?i)e-?mail|user|login|account|userid|邮箱|账号|帐号|用户名")
_PASS_FIELD = re.compile(r"(?i)pass|pwd|passwd|密码|口令")
# Combosquatting (Kintis et al., "Hiding in Plain Sight", CCS 2017): a name plus a keyword,
# paypal-update.com. These are the keywords; the name is the sender's own display name.
_SQUAT_WORDS = ("update", "download", "desktop", "extension", "wallet", "install", "secure",
                "security", "login", "signin", "verify", "verification", "support", "help",
                "service", "account", "official", "online", "portal", "connect", "auth",
                "recovery", "restore", "sync", "claim", "airdrop", "reward", "bonus", "app",
                "get", "web")
# Display-name words too generic to stand for who is writing ("Support Team", "News").
_GENERIC_NAME_WORDS = frozenset(
    "team support service services info information news newsletter community wallet mail "
    "email admin administrator notification notifications update updates security account "
    "accounts customer customers help desk helpdesk office group official online noreply "
    "reply from your with the and department billing sales center centre alert alerts "
    "system systems message messages manager staff user users members member contact "
    "digest daily weekly announce announcement announcements list lists via".split())
_NAME_WORD = re.compile(r"[a-z0-9]{4,}")
_FILLER_RUN = re.compile(r"([._=*~#+])\1{149,}")
_FILLER_SCAN_CHARS = 200_000

# Account-lure words, found by plain substring search (cheap on long bodies).
_LURE_WORDS = ("verify", "verification", "suspend", "locked", "unlock", "unusual activity",
               "unusual sign", "confirm your", "update your", "validate", "sign in", "sign-in",
               "log in", "login", "password", "billing information", "payment information",
               "account access", "account review", "limited access", "restricted", "security alert",
               "expire", "reactivate", "账户", "账号", "帐户", "验证", "冻结", "登录", "密码", "异常",
               "过期", "bestätigen sie", "verifizieren", "gesperrt", "eingeschränkt", "passwort",
               "zugangsdaten", "ungewöhnliche aktivität", "sicherheitsüberprüfung",
               "aktualisieren sie")


# Common English words (and the words lures are made of) whose accented spelling gives away
# filter evasion; two-letter words that are also words of Romance languages once their
# accents are dropped ("às", "é", "à") are left out.
_ENGLISH_COMMON = frozenset("""
the be to of and in that have it for not on with he you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go
me when make can like time no just him know take people into year your good some could them
see other than then now look only come its over think also back after use two how our work
first well way even new want because any these give day most us is was are been has had were
said did am here click link today email mail account password verify login log sign confirm
update secure security bank payment invoice order phrase bitcoin wallet crypto usd dollar
price free offer sale deal win winner prize money cash card""".split())
_WORD = re.compile(r"[^\W\d_]+")
_LATIN_ACCENTED = re.compile("[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]")
_ACCENT_TEXT_CHARS = 6000
# Brands named beyond the body's start are mentions in passing (footers, signatures).
_BRAND_TEXT_CHARS = 2000
_CALLBACK_TEXT_CHARS = 8000
# North-American numbers ("+1 (866) 955-9506", "1-888-343-5062") and international ones with
# a country code ("+44 20 7946 0958").
_PHONE = re.compile(r"(?:\+?1[\s.-]?)?\(?\b[2-9]\d{2}\)?[\s.-]{1,2}\d{3}[\s.-]\d{4}\b|"
                    r"\+\d{1,3}[\s.-]\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4}\b")
_AMOUNT = re.compile(r"(?i)(?:\$|usd\s?|€|£)\s?\d{1,4}(?:,\d{3})?[.,]\d{2}\b")
_CHARGE = re.compile(r"(?i)\b(?:charged|renew(?:al|ed)|auto[- ]?renew\w*|subscription|debited|"
                     r"deducted|billed|order (?:number|id|no)|invoice (?:number|no|id)|"
                     r"transaction (?:id|number))\b")
_DISPUTE = re.compile(r"(?i)\b(?:cancel\w*|refund\w*|dispute|did ?n[o']t (?:authori[sz]e|make|"
                      r"place|recogni[sz]e)|not authori[sz]ed|unauthori[sz]ed|call (?:us|our)|"
                      r"contact (?:us|our)|helpline|toll[- ]?free|customer (?:care|support))\b")

_OBFUSCATION_WORDS = ("log in", "login", "sign in", "sign-in", "account", "verify", "password",
                      "security", "suspended", "unusual", "payment", "invoice", "urgent",
                      "user id", "mailbox", "storage", "cloud", "alert", "update")


def _brand_from_config(entry: str, builtin: dict[str, Brand]) -> Brand:
    """`paypal` picks a built-in; `Acme Bank: acmebank.com, acme.com` defines one."""
    name, sep, rest = entry.partition(":")
    name = name.strip()
    if not sep:
        b = builtin.get(name.lower())
        if b is None:
            raise ValueError(f"unknown built-in brand {name!r}; write it as "
                             f"'{name}: domain.example, other.example'")
        return b
    domains = tuple(d.strip().lower() for d in rest.split(",") if d.strip())
    if not domains:
        raise ValueError(f"brand {name!r} lists no domains")
    return Brand(name.lower(), domains, (name.lower(),))


class PhishingSettings(Section):
    enabled: bool = Field(True, description="run the phishing URL checks")
    brands: list[str] | None = Field(
        None, description="brands to protect: built-in names (`paypal`) or `Name: dom1, dom2`; "
        "unset: the built-in list")
    brands_extra: list[str] = Field(default_factory=list, description="added to `brands`")
    lists: list[str] = Field(
        default_factory=list, description="phishing URL lists: file paths, file:… or http(s) URLs")
    refresh_interval: float = Field(3600.0, description="seconds between list refreshes")
    fetch_timeout: float = Field(30.0, description="seconds allowed for one list download")
    shorteners_extra: list[str] = Field(default_factory=list, description="more shortener domains")


@dataclass
class _Hits:
    """First evidence per symbol, plus how many more, so each symbol fires once per message."""

    first: dict[str, tuple[str, float]] = field(default_factory=dict)
    more: dict[str, int] = field(default_factory=dict)
    # Brands the message presents itself as (display name, or named beside account-lure
    # words): a link whose text shows one of them and goes elsewhere is an impersonation.
    claimed: frozenset[str] = frozenset()

    def add(self, name: str, reason: str, factor: float = 1.0) -> None:
        if name in self.first:
            prev = self.first[name]
            if factor > prev[1]:
                self.first[name] = (reason, factor)
            self.more[name] = self.more.get(name, 0) + 1
        else:
            self.first[name] = (reason, factor)

    def emit(self, result: ScanResult) -> None:
        for name, (reason, factor) in self.first.items():
            n = self.more.get(name, 0)
            if n:
                reason += f" (and {n} more)"
            result.add(name, reason=reason, factor=factor)


SYMBOLS: dict[str, SymbolSpec] = {
    "URL_HREF_MISMATCH": SymbolSpec(
        1.5, "A link's visible text shows one domain but the link goes to another.", _P, _G),
    "URL_HREF_MISMATCH_BRAND": SymbolSpec(
        5.0, "A link's text shows a protected brand's or the company's domain but the link goes "
        "elsewhere (not when it goes to the sender's own domain in mail that does not present "
        "itself as the brand: a newsletter naming a shop; that is URL_HREF_MISMATCH).", _P, _G),
    "URL_IP_HOST": SymbolSpec(2.5, "A link points to a bare IP address instead of a name.", _P, _G),
    "URL_IP_HOSTNAME": SymbolSpec(
        2.5, "A link's host is a provider's generic name for an IP address "
        "(ec2-3-138-125-44.compute.amazonaws.com, 61-30-80-157.static.example.net): a bare "
        "server, not a website.", _P, _G),
    "HTML_IMAGE_ONLY": SymbolSpec(
        2.0, "The message is only pictures and links: an HTML body without readable text and "
        "no text part beyond those links, so word filters have nothing to read.",
        Category.SPAM, _G),
    "TEXT_FILLER_RUN": SymbolSpec(
        2.5, "The body carries a run of hundreds of the same punctuation character (dots, "
        "underscores): filler that pushes the real text out of view or dilutes it for word "
        "filters (\"salting\").", Category.SPAM, _G),
    "URL_NONSTANDARD_PORT": SymbolSpec(1.0, "A web link uses an unusual port.", _P, _G),
    "URL_PUNYCODE": SymbolSpec(0.5, "A link's host is an internationalised (punycode) name.", _P, _G),
    "URL_MIXED_SCRIPT": SymbolSpec(
        4.0, "A link's host mixes letters of different scripts (e.g. Latin and Cyrillic).", _P, _G),
    "URL_LOOKALIKE_BRAND": SymbolSpec(
        5.0, "A link's domain imitates a protected brand's domain.", _P, _G),
    "URL_LOOKALIKE_COMPANY": SymbolSpec(
        6.0, "A link's domain imitates the company's own or a partner's domain.", _P, _G),
    "URL_BRAND_IN_SUBDOMAIN": SymbolSpec(
        3.0, "A link puts a brand's name in front of an unrelated domain.", _P, _G),
    "URL_FREE_HOSTING": SymbolSpec(
        0.5, "A link goes to a free web-hosting or app platform often used for phishing pages.",
        _P, _G),
    "PHISH_SENDER_FREE_HOSTING": SymbolSpec(
        1.0, "The From address is on a hosting platform's default domain.", _P, _G),
    "URL_SHORTENER": SymbolSpec(1.0, "A link goes through a URL shortener that hides its target.",
                                _P, _G),
    "URL_OPEN_REDIRECT": SymbolSpec(
        2.0, "A link goes through a redirector that forwards to another site.", _P, _G),
    "URL_DATA_URI": SymbolSpec(3.0, "A link or frame carries a data: URL with a page in it.", _P, _G),
    "URL_JAVASCRIPT": SymbolSpec(1.5, "A link runs javascript: code instead of opening a page.",
                                 _P, _G),
    "URL_PHISHLIST": SymbolSpec(8.0, "A link is on a configured phishing URL list.", _P, _G),
    "PHISH_FORM_PASSWORD": SymbolSpec(
        5.0, "The HTML body holds a form with a password field.", _P, _G),
    "PHISH_FORM_CREDENTIALS": SymbolSpec(
        3.0, "The HTML body holds a form asking for login or email with a password.", _P, _G),
    "PHISH_FORM_FOREIGN_ACTION": SymbolSpec(
        1.5, "A form in the HTML body submits to a domain other than the sender's.", _P, _G),
    "PHISH_HTML_ATTACHMENT_FORM": SymbolSpec(
        6.0, "An HTML attachment holds a login form or posts data to another site.", _P, _G),
    "PHISH_HTML_ATTACHMENT_SCRIPT": SymbolSpec(
        3.0, "An HTML attachment redirects the browser or decodes hidden script.", _P, _G),
    "PHISH_BRAND_DISPLAY_NAME": SymbolSpec(
        3.0, "The From display name names a brand the sending domain does not belong to.", _P, _G),
    "PHISH_BRAND_LOOKALIKE_SENDER": SymbolSpec(
        5.0, "The From domain imitates a protected brand's domain.", _P, _G),
    "PHISH_BRAND_SENDER_FOREIGN_LINKS": SymbolSpec(
        2.0, "The From address claims a brand's domain but every link leads to other domains.",
        _P, _G),
    "PHISH_OBFUSCATED_WORD": SymbolSpec(
        2.0, "The subject or display name spells a lure word or brand with look-alike "
        "characters.", _P, _G),
    "PHISH_ACCENTED_ENGLISH": SymbolSpec(
        3.0, "Everyday English words are spelled with stray accents (\"wás\", \"emáil\", "
        "\"Bitčoin\") to slip past word filters.", _P, _G),
    "PHISH_CALLBACK": SymbolSpec(
        4.0, "Callback phishing: a charge, renewal or order with an amount and a phone number "
        "to call to cancel or dispute it, and (almost) no link.", _P, _G),
    "PHISH_BRAND_LURE": SymbolSpec(
        1.0, "The message names a brand next to account-lure words, but the sender is not that "
        "brand.", _P, _G),
    "URL_COMBOSQUAT_SENDER_NAME": SymbolSpec(
        5.0, "A link goes to a domain made of the sender's display name plus a word such as "
        "update, download or login (getmoneroupdate.org for \"Monero\"), and the mail does not "
        "come from a domain of that name.", _P, _G),
}


_C = Category.CLEAN

BRAND_AUTH_SYMBOLS: dict[str, SymbolSpec] = {
    "BRAND_AUTHENTICATED": SymbolSpec(
        -3.0, "The message names a brand and is authenticated (DMARC, or aligned DKIM or SPF) "
        "for the From domain, which is one of that brand's own domains: the brand's own mail, "
        "not an imitation of it.", _C, _G),
    "BRAND_AUTH_FAILED": SymbolSpec(
        4.0, "The message names a brand and its From address is on one of that brand's own "
        "domains, but authentication failed: the brand's domain forged.", _P, _G),
}


class UrlCheck(Check):
    name = "urls"
    family = "urls"
    symbols = SYMBOLS

    def __init__(self, brands: Iterable[Brand], company_domains: Iterable[str],
                 partner_domains: Iterable[str], shorteners: Iterable[str],
                 phishlist: PhishList | None = None) -> None:
        self.brands = list(brands)
        protected: list[Protected] = []
        self._brand_of: dict[str, Brand] = {}
        for b in self.brands:
            regs = frozenset(registrable(d) for d in b.domains)
            labels = tuple(dict.fromkeys([split_domain(d).label for d in b.domains[:1]]
                                         + list(b.labels)))
            protected.append(Protected(b.name, "brand", labels, regs, strict=b.strict))
        self.company = frozenset(registrable(d) for d in company_domains if d)
        self.partners = frozenset(registrable(d) for d in partner_domains if d) - self.company
        for kind, doms in (("company", self.company), ("partner", self.partners)):
            for d in sorted(doms):
                protected.append(Protected(d, kind, (split_domain(d).label,), frozenset({d}), (d,)))
        # Same name under another suffix is a lookalike only for the sender checks (BEC);
        # links to foo.com from mail about foo.org are normal.
        self.index = LookalikeIndex(protected, other_tld_kinds=())
        self._brand_by_name = {b.name: b for b in self.brands}
        # Per brand: the registrable domains it owns, and those of them that vouch for it
        # (not free mail or customer hosting). A domain may belong to several brands
        # (dhl.de: DHL and Deutsche Post); the first listed is its owner for reasons.
        self._brand_regs = {b.name: frozenset(registrable(d) for d in b.domains)
                            for b in self.brands}
        self._brand_vouching = {b.name: self._brand_regs[b.name]
                                - {registrable(d) for d in b.hosted} for b in self.brands}
        self._domain_brand: dict[str, Brand] = {}
        for b in self.brands:
            for reg in self._brand_regs[b.name]:
                self._domain_brand.setdefault(reg, b)
        self._brand_labels = {p.name: frozenset(p.labels) for p in protected if p.kind == "brand"}
        self.shorteners = frozenset(s.lower() for s in shorteners)
        self.phishlist = phishlist
        # Brand keywords: one regex over the skeleton of the text, whole words for Latin,
        # substrings for CJK and digits-only keywords.
        words: dict[str, Brand] = {}
        for b in self.brands:
            for k in b.keywords or (b.name,):
                words[skeleton(k)] = b
        self._kw_brand = words
        # A capital first letter, the rest in any case: "Apple", "APPLE", and the "UPs" of
        # filter evasion, but not "apple".
        self._cased = {skeleton(k): re.compile(
            rf"(?<![A-Za-z0-9]){re.escape(k[0].upper())}(?i:{re.escape(k[1:])})"
            r"(?![A-Za-z0-9])") for b in self.brands for k in b.cased}
        self._exact = {skeleton(k): b for b in self.brands for k in b.exact}
        lure_words = set(_OBFUSCATION_WORDS) | {k for b in self.brands for k in b.keywords
                                                if k.isascii() and len(k) >= 5}
        # skeleton -> word; one- and two-word phrases, looked up per token of the subject.
        self._obfuscation_words = {skeleton(w): w for w in sorted(lure_words)}
        latin = sorted((k for k in words if k.isascii()), key=len, reverse=True)
        other = sorted((k for k in words if not k.isascii()), key=len, reverse=True)
        parts = []
        if latin:
            parts.append(r"(?<![a-z0-9])(?:" + "|".join(re.escape(k) for k in latin) + r")(?![a-z0-9])")
        if other:
            parts.append("(?:" + "|".join(re.escape(k) for k in other) + ")")
        self._kw_re = re.compile("|".join(parts)) if parts else None

    async def close(self) -> None:
        if self.phishlist is not None:
            await self.phishlist.close()

    # -- helpers ---------------------------------------------------------------------------

    def _brands_named(self, text: str) -> list[Brand]:
        """The brands `text` names, in order of first mention."""
        if not text or self._kw_re is None:
            return []
        found: list[Brand] = []
        for m in self._kw_re.finditer(skeleton(text)):
            cased = self._cased.get(m.group(0))
            if cased is not None and cased.search(text) is None:
                continue  # the everyday word, not the brand
            brand = self._kw_brand[m.group(0)]
            if brand not in found:
                found.append(brand)
        return found

    def _display_brand(self, msg: ParsedMessage) -> Brand | None:
        """The brand the From display name names ("PayPal Service", or exactly "Chase")."""
        fa = msg.from_addr
        if fa is None or not fa.display_name:
            return None
        named = self._brands_named(fa.display_name)
        return named[0] if named else self._exact.get(
            skeleton(fa.display_name.strip().strip("'\"")))

    def _belongs(self, brand: Brand, domain_reg: str) -> bool:
        if "." not in domain_reg:
            return False  # "x@bradesco": a name no one can register, so no one's
        if domain_reg in self._brand_regs.get(brand.name, ()):
            return True
        if any(fnmatch.fnmatchcase(domain_reg, p) for p in brand.patterns):
            return True
        if self.index.owner(domain_reg) is not None:
            return False  # another brand's, or the company's or a partner's
        # A brand's name under another suffix (ebay.com.cn, paypal.de) is its country site,
        # as in the lookalike rules.
        return split_domain(domain_reg).label in self._brand_labels.get(brand.name, ())

    def brand(self, key: str) -> Brand | None:
        return self._brand_by_name.get(key)

    def owns(self, brand: Brand, domain: str) -> bool:
        """Is `domain` (any host) under one of the brand's listed domains?"""
        return registrable(domain) in self._brand_regs.get(brand.name, ())

    def vouches_for(self, brand: Brand, domain: str) -> bool:
        """Is mail from `domain`, once authenticated, the brand's own mail? Not on its free
        mail or customer-hosting domains, nor on a member domain matched by a pattern."""
        return registrable(domain) in self._brand_vouching.get(brand.name, ()) and \
            not is_freemail(domain)

    def _owner_brand(self, domain: str) -> Brand | None:
        """The brand that lists `domain` or a parent of it (org domains from the private
        part of the PSL, shop.myshopify.com, are under a listed domain)."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            brand = self._domain_brand.get(".".join(labels[i:]))
            if brand is not None:
                return brand
        return None

    def _own_shortener(self, reg: str, from_reg: str) -> bool:
        """t.co in mail from x.com, lnkd.in from linkedin.com: a brand's own short links
        hide nothing from its own mail (the shortener is listed among its domains)."""
        brand = self._domain_brand.get(reg)
        return brand is not None and bool(from_reg) and from_reg in self._brand_regs.get(
            brand.name, ())

    def _links_note(self, brand: Brand, link_domains: tuple[str, ...]) -> str:
        """Where the links go, for a brand symbol's reason: to domains other than the
        brand's, or to its own."""
        if not link_domains:
            return ""
        foreign = [d for d in link_domains if not self._belongs(brand, registrable(d))]
        if foreign:
            return (", link goes to " if len(foreign) == 1 else ", links go to ") + \
                ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        return f", links go to {brand.name}'s own {', '.join(link_domains[:2])}"

    def _brand_evidence(self, msg: ParsedMessage, from_reg: str,
                        link_domains: tuple[str, ...]) -> _BrandEvidence:
        """Which brands the message names, where it comes from and where it links.

        A brand in the display name is a claim to be that brand. A brand in the subject or
        body start is a mismatch only next to account-lure words, and only the first one
        named: shops name DHL and PayPal in every order confirmation, newsletters name
        Facebook in their footers."""
        display = self._display_brand(msg)
        sender_addr = msg.from_addr
        if sender_addr is not None and sender_addr.local_part == EXCHANGE_SYSTEM_MAILBOX:
            # Every Exchange server sends its own bounces as "Microsoft Outlook" from this
            # one fixed system mailbox in the organisation's domain: a product name, not a
            # claim to be Microsoft.
            display = None
        head = msg.subject + "\n" + msg.body_text[:_BRAND_TEXT_CHARS]
        in_text = self._brands_named(head)
        lower = head.lower()
        lures = tuple(w for w in _LURE_WORDS if w in lower)
        mismatched: list[Brand] = []
        if from_reg not in self.company:
            if display is not None and not (from_reg and self._belongs(display, from_reg)):
                mismatched.append(display)
            lure = in_text[0] if len(lures) >= 2 and in_text else None
            if lure is not None and lure not in mismatched and not (
                    from_reg and self._belongs(lure, from_reg)):
                mismatched.append(lure)
        named = list(dict.fromkeys(([display] if display else []) + in_text))
        sender = self._owner_brand(org_domain(msg.from_domain)) if msg.from_domain else None
        if sender is not None and not self.vouches_for(sender, msg.from_domain or ""):
            sender = None  # a free mailbox or a customer's shop: anyone's
        facts = BrandFacts(named=tuple(b.name for b in named),
                           sender_brand=sender.name if sender else "",
                           mismatched=tuple(b.name for b in mismatched))
        return _BrandEvidence(facts, display, in_text[0] if in_text else None, lures)

    def _protected_owner(self, domain_reg: str) -> str:
        """Name of the brand/company a registrable domain belongs to, '' if none."""
        owner = self.index.owner(domain_reg)
        return owner.name if owner else ""

    # -- the check -------------------------------------------------------------------------

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        if self.phishlist is not None:
            self.phishlist.start()
        hits = _Hits()
        from_reg = registrable(msg.from_domain) if msg.from_domain else ""
        link_domains = _link_domains(msg)
        evidence = self._brand_evidence(msg, from_reg, link_domains)
        result.facts.brands = evidence.facts
        hits.claimed = evidence.claimed
        urls: list[Url] = list(msg.urls)
        for att, html in self._html_attachments(msg):
            self._check_html_attachment(att, html, from_reg, hits)
            urls.extend(replace(u, source="attachment")
                        for u in html_to_text_and_urls(html)[1][:200])
        seen: set[str] = set()
        for u in urls:
            if u.url in seen:
                # The same href again: only its anchor text is new.
                if u.tag == "a" and u.display_text and u.host:
                    self._check_mismatch(u, split_domain(u.host).registrable, from_reg, hits)
                continue
            seen.add(u.url)
            self._check_url(u, from_reg, hits)
        self._check_brand_sender_links(msg, from_reg, hits)
        self._check_combosquat(msg, from_reg, hits)
        if msg.html and _has_form(msg.html):
            self._check_forms(msg.html, from_reg, hits)
        self._check_image_only(msg, hits)
        self._check_filler(msg, hits)
        self._check_sender(msg, from_reg, evidence, link_domains, hits)
        hits.emit(result)

    def _check_url(self, u: Url, from_reg: str, hits: _Hits, depth: int = 0) -> None:
        where = "attached HTML" if u.source == "attachment" else "link"
        if u.scheme == "javascript":
            hits.add("URL_JAVASCRIPT", f"{where} runs code: {u.url[:80]}")
            return
        if u.scheme == "data":
            head = u.url[5:40].lower()
            if u.tag in ("a", "area", "form", "iframe", "meta") or head.startswith(
                    ("text/html", "application/", "text/javascript")):
                hits.add("URL_DATA_URI", f"{u.tag or where} carries a data: URL ({u.url[:40]}…)")
            return
        if u.scheme not in ("http", "https", "ftp") or not u.host:
            return
        host = u.host
        if self.phishlist is not None:
            hit = self.phishlist.match(u)
            if hit is not None:
                hits.add("URL_PHISHLIST", f"{u.url[:120]} is on phishing list {hit.source} "
                                          f"({hit.kind} {hit.entry})")
        parts = split_domain(host)
        reg = parts.registrable
        # Look through security-gateway wrappers at the real target.
        wrapped = next((param for key, param in _WRAPPERS.items()
                        if host == key or host.endswith("." + key)), None)
        if wrapped and depth == 0:
            inner = _param_url(u.url, (wrapped,))
            if inner:
                iu = make_url(inner, u.source, u.display_text, u.tag)
                if iu is not None:
                    self._check_url(iu, from_reg, hits, depth=1)
            return
        if host.endswith(_TRANSLATE_PROXY) and depth == 0:
            # Google Translate's proxy serves any site under <site-with-dashes>.translate.goog:
            # the link shows a Google name while the page is someone else's.
            inner_host = _untranslate(host)
            if inner_host:
                hits.add("URL_OPEN_REDIRECT",
                         f"{where} on {host} is Google Translate's proxy for {inner_host}")
                iu = make_url(f"{u.scheme}://{inner_host}{u.path}", u.source, u.display_text,
                              u.tag)
                if iu is not None:
                    self._check_url(iu, from_reg, hits, depth=1)
                return
        if is_ip(host):
            if _public_ip(host):
                hits.add("URL_IP_HOST", f"{where} points to the IP address {host}: {u.url[:100]}")
        elif "." not in host:
            return  # intranet names, localhost: not a phishing target
        elif _ip_hostname(host):
            hits.add("URL_IP_HOSTNAME", f"{where} goes to {host}, a generic name for an IP address")
        if u.port is not None and u.port not in (80, 443, 8080, 8443) and not (
                u.scheme == "ftp" and u.port == 21) and (not is_ip(host) or _public_ip(host)):
            hits.add("URL_NONSTANDARD_PORT", f"{where} to {host} uses port {u.port}")
        if "xn--" in u.raw_host:
            hits.add("URL_PUNYCODE", f"{where} host {u.raw_host} is punycode for {host}")
        if not host.isascii() and any(is_mixed_script(lab) for lab in host.split(".")):
            hits.add("URL_MIXED_SCRIPT", f"{where} host {host} mixes scripts")
        lk = self.index.match(reg)
        if lk is not None:
            sym = "URL_LOOKALIKE_BRAND" if lk.protected.kind == "brand" else "URL_LOOKALIKE_COMPANY"
            factor = 0.6 if lk.how == "embedded" else 1.0
            hits.add(sym, f"{where} domain {lk.describe()}"
                          f" ({lk.protected.kind} {lk.protected.name})", factor)
        else:
            p = self.index.names_in_subdomain(host)
            if p is not None and reg != from_reg:
                hits.add("URL_BRAND_IN_SUBDOMAIN",
                         f"{where} host {host} puts {p.name} in front of unrelated {reg}")
        if listed(host, FREE_HOSTING):
            hits.add("URL_FREE_HOSTING", f"{where} goes to {host} on free hosting")
        if (reg in self.shorteners or host in self.shorteners) \
                and not self._own_shortener(reg, from_reg):
            hits.add("URL_SHORTENER", f"{where} goes through the shortener {host}")
        target = _param_url(u.url, _REDIRECT_PARAMS)
        if target:
            t_reg = registrable(_host_of(target))
            known = any(reg == dom and u.path.startswith(prefix)
                        for dom, prefix in KNOWN_REDIRECTORS)
            # A sender's own click tracker (news.example/links/…?url=shop.test) is how
            # newsletters count clicks; only known open redirectors count on the sender's
            # own domain.
            if t_reg and t_reg != reg and t_reg != from_reg and (known or reg != from_reg):
                # Tracking links of mailing services also carry url=…; only known open
                # redirectors get the full weight.
                hits.add("URL_OPEN_REDIRECT",
                         f"{where} on {host} redirects to {t_reg}: {u.url[:100]}",
                         1.0 if known else 0.5)
        if u.tag == "a" and u.display_text:
            self._check_mismatch(u, reg, from_reg, hits)

    def _check_mismatch(self, u: Url, reg: str, from_reg: str, hits: _Hits) -> None:
        text = u.display_text.strip()
        if len(text) > 200 or "@" in text:
            return
        m = _DOMAIN_IN_TEXT.search(text)
        if not m:
            return
        shown = m.group(0)
        shown_host = shown.split("://", 1)[-1].lower().rstrip(".")
        sparts = split_domain(shown_host)
        if not has_known_suffix(shown_host):
            return  # "file.pdf", "readme.txt": not a domain
        shown_reg = sparts.registrable
        if shown_reg == reg or sparts.label == split_domain(reg).label:
            return
        target = _param_url(u.url, _REDIRECT_PARAMS)
        if target and registrable(_host_of(target)) == shown_reg:
            return  # a click tracker whose target is the domain the text shows
        owner = self.index.owner(shown_reg)
        shown_owner = owner.name if owner else ""
        if shown_owner and shown_owner == self._protected_owner(reg):
            return  # apple.com text linking to icloud.com
        dest = u.host
        if owner is not None and owner.kind == "brand" and reg and reg == from_reg \
                and shown_owner not in hits.claimed:
            # A newsletter listing walmart.com through its own click tracker names a brand
            # without claiming to be it, and sends the reader to itself: the plain mismatch,
            # not an impersonation.
            hits.add("URL_HREF_MISMATCH",
                     f"link text shows {shown_host} ({shown_owner}, a brand the message does "
                     f"not present itself as) but points to the sender's own {dest}")
        elif owner is not None:
            hits.add("URL_HREF_MISMATCH_BRAND",
                     f"link text shows {shown_host} ({shown_owner}) but points to {dest}")
        else:
            hits.add("URL_HREF_MISMATCH", f"link text shows {shown_host} but points to {dest}")

    # -- forms and HTML attachments -----------------------------------------------------------

    def _forms(self, html: str, from_reg: str) -> tuple[list[str], list[str], list[str]]:
        """(password evidence, credential-field evidence, foreign-action evidence)."""
        from selectolax.lexbor import LexborHTMLParser

        over = html_over_budget(html)
        if over is not None:
            # A hostile attachment (a form inside 30,000 nested divs) would take the tree
            # builder seconds: read only the part within the parse budget.
            html = html[:over[1]]
        try:
            tree = LexborHTMLParser(html)
        except Exception:
            return [], [], []
        password, creds, foreign = [], [], []
        inputs = tree.css("input")
        names = []
        for node in inputs:
            a = node.attributes
            itype = (a.get("type") or "text").lower()
            label = " ".join(filter(None, (a.get("name"), a.get("id"), a.get("placeholder"))))
            if itype == "password":
                password.append(label or "password")
            elif itype in ("hidden", "submit", "button", "image", "checkbox", "radio"):
                continue
            names.append((itype, label))
        has_user = any(t == "email" or _EMAIL_FIELD.search(lbl) for t, lbl in names)
        has_pass = password or any(_PASS_FIELD.search(lbl) for _, lbl in names)
        if has_user and has_pass:
            creds.append(", ".join(lbl for _, lbl in names if lbl)[:120] or "login fields")
        for form in tree.css("form"):
            action = (form.attributes.get("action") or "").strip()
            if not action.lower().startswith(("http://", "https://", "//")):
                continue
            fields = [" ".join(filter(None, (i.attributes.get("type"), i.attributes.get("name"),
                                             i.attributes.get("id"),
                                             i.attributes.get("placeholder"))))
                      for i in form.css("input")]
            if not any(_EMAIL_FIELD.search(f) or _PASS_FIELD.search(f) for f in fields):
                continue  # a search box or a survey, not a credential form
            a_reg = registrable(_host_of(action if "://" in action else "http:" + action))
            if a_reg and a_reg != from_reg:
                foreign.append(a_reg)
        return password, creds, foreign

    def _check_forms(self, html: str, from_reg: str, hits: _Hits) -> None:
        password, creds, foreign = self._forms(html, from_reg)
        if password:
            hits.add("PHISH_FORM_PASSWORD", f"the HTML body has a password field ({password[0]})")
        if creds:
            hits.add("PHISH_FORM_CREDENTIALS", f"the HTML body asks for credentials ({creds[0]})")
        if foreign:
            hits.add("PHISH_FORM_FOREIGN_ACTION",
                     f"a form in the body submits to {foreign[0]}, not the sender's "
                     f"{from_reg or 'domain'}")

    def _check_html_attachment(self, att: str, html: str, from_reg: str, hits: _Hits) -> None:
        if _has_form(html):
            password, creds, foreign = self._forms(html, from_reg)
            if password or creds or foreign:
                what = ("a password field" if password else "login fields" if creds
                        else f"a form posting to {foreign[0]}")
                hits.add("PHISH_HTML_ATTACHMENT_FORM", f"attachment {att} holds {what}")
        m = _SCRIPT_TRICKS.search(html)
        if m:
            hits.add("PHISH_HTML_ATTACHMENT_SCRIPT",
                     f"attachment {att} uses {m.group(0).strip()[:40]!r} to redirect or decode "
                     "hidden content")

    @staticmethod
    def _html_attachments(msg: ParsedMessage) -> list[tuple[str, str]]:
        out = []
        for a in msg.attachments:
            ext = a.extension
            if ext in ("htm", "html", "shtml", "xhtml", "svg") or a.declared_type in (
                    "text/html", "application/xhtml+xml", "image/svg+xml") or \
                    a.detected_type == "text/html":
                out.append((a.filename or a.declared_type, decode_bytes(a.content[:2_000_000],
                                                                         None)))
            if len(out) >= 5:
                break
        return out

    # -- sender and brand names ---------------------------------------------------------------

    def _check_brand_sender_links(self, msg: ParsedMessage, from_reg: str, hits: _Hits) -> None:
        """Mail claiming a brand's domain whose clickable links all lead somewhere else."""
        owner = self.index.owner(from_reg) if from_reg else None
        if owner is None or owner.kind != "brand" or from_reg in FREEMAIL:
            return  # people write from gmail.com and link to anything
        foreign: list[str] = []
        own = 0
        for u in msg.urls:
            if u.tag != "a" or u.scheme not in ("http", "https") or not u.host:
                continue
            reg = split_domain(u.host).registrable
            o = self.index.owner(reg)
            if o is not None and o.name == owner.name:
                own += 1
            elif reg not in foreign:
                foreign.append(reg)
        if foreign and own == 0:
            hits.add("PHISH_BRAND_SENDER_FOREIGN_LINKS",
                     f"mail from {from_reg} ({owner.name}) links only to {', '.join(foreign[:3])}")

    def _check_combosquat(self, msg: ParsedMessage, from_reg: str, hits: _Hits) -> None:
        """Mail signed "Monero" from an unrelated domain, linking to getmoneroupdate.org.

        A sender's own links go to its own name's domain, and so does its mail (or the
        domain of a mailing service, whose links then go to the sender's plain domain). A
        name plus a keyword on the link side only, with the mail from elsewhere, is the
        combosquatting pattern of fake wallet updates and fake login pages; no brand list
        is needed, the display name says what is imitated."""
        fa = msg.from_addr
        if fa is None or not fa.display_name or from_reg in self.company:
            return
        sender = (msg.from_domain or "").lower().replace("-", "")
        names = {w for w in _NAME_WORD.findall(fa.display_name.lower())
                 if w not in _GENERIC_NAME_WORDS and not w.isdigit() and w not in sender}
        if not names:
            return
        for u in msg.urls:
            # links and URLs written in the text; not images or style sheets
            if u.tag not in ("a", "") or u.scheme not in ("http", "https") or not u.host:
                continue
            parts = split_domain(u.host)
            if parts.registrable == from_reg or parts.registrable in self.company:
                continue
            label = parts.label.replace("-", "")
            for name in names:
                if name not in label or label == name:
                    continue
                rest = label.replace(name, " ", 1)
                word = next((w for w in _SQUAT_WORDS if w in rest), None)
                if word is not None:
                    hits.add("URL_COMBOSQUAT_SENDER_NAME",
                             f"link to {parts.registrable}: the display name's "
                             f"{name!r} plus {word!r}, but the mail comes from "
                             f"{msg.from_domain or 'no domain'}")
                    return

    def _check_sender(self, msg: ParsedMessage, from_reg: str, ev: _BrandEvidence,
                      link_domains: tuple[str, ...], hits: _Hits) -> None:
        fa = msg.from_addr
        self._check_obfuscated(msg, hits)
        self._check_accented_english(msg, hits)
        self._check_callback(msg, hits)
        if fa is None or not from_reg:
            self._check_lure(ev, "", link_domains, hits)
            return
        if from_reg in self.company:
            return  # our own mail is judged by the outbound and BEC checks
        platform = listed(from_reg, FREE_HOSTING_SENDERS)
        if platform:
            hits.add("PHISH_SENDER_FREE_HOSTING",
                     f"sender {fa.address} is on {platform}, a hosting default domain")
        lk = self.index.match(from_reg)
        if lk is not None and lk.protected.kind == "brand":
            imitated = self._brand_by_name[lk.protected.name]
            hits.add("PHISH_BRAND_LOOKALIKE_SENDER",
                     f"sender domain {lk.describe()} ({lk.protected.name})"
                     f"{self._links_note(imitated, link_domains)}",
                     0.6 if lk.how == "embedded" else 1.0)
        brand = ev.display
        if brand is not None and brand.name in ev.facts.mismatched:
            hits.add("PHISH_BRAND_DISPLAY_NAME",
                     f"display name {fa.display_name[:60]!r} names {brand.name} but the address "
                     f"is {fa.address}{self._links_note(brand, link_domains)}")
            return
        self._check_lure(ev, from_reg, link_domains, hits)

    def _check_lure(self, ev: _BrandEvidence, from_reg: str, link_domains: tuple[str, ...],
                    hits: _Hits) -> None:
        brand = ev.first_in_text
        if brand is not None and brand.name in ev.facts.mismatched and len(ev.lures) >= 2:
            hits.add("PHISH_BRAND_LURE",
                     f"names {brand.name} next to {', '.join(repr(w) for w in ev.lures[:3])} but "
                     f"comes from {from_reg or 'no sender domain'}"
                     f"{self._links_note(brand, link_domains)}")

    def _check_obfuscated(self, msg: ParsedMessage, hits: _Hits) -> None:
        """Lure words and brand names spelled with look-alike characters ("Iog in", "PayPaI",
        "Microsоft" with a Cyrillic о) in the subject or the From display name: honest senders
        have no reason to do that; filter evasion does."""
        fa = msg.from_addr
        for where, text in (("subject", msg.subject), ("display name", fa.display_name if fa else "")):
            if not text:
                continue
            tokens = [t.strip(".,:;!?()[]\"'") for t in text.split()]
            for i, tok in enumerate(tokens):
                if not tok:
                    continue
                for cand in (tok, f"{tok} {tokens[i + 1]}" if i + 1 < len(tokens) else ""):
                    if not cand:
                        continue
                    word = self._obfuscation_words.get(skeleton(cand))
                    if word is not None and cand.lower() != word:
                        hits.add("PHISH_OBFUSCATED_WORD",
                                 f"{where} {text[:60]!r} spells {word!r} as {cand!r}")
                        return

    @staticmethod
    def _check_image_only(msg: ParsedMessage, hits: _Hits) -> None:
        """Image spam: the HTML shows pictures (img tags or CSS backgrounds) wrapped in links,
        with no readable text, and the text/plain part, if any, is no more than those links
        and their alt text ("[HJAGSHSG]<http://…>")."""
        if not msg.html:
            return
        visible = sum(len(w) for w in msg.html_text.split())
        if visible >= _IMAGE_ONLY_MAX_TEXT:
            return
        if msg.text.strip() and sum(len(w) for w in _TEXT_URL.sub(" ", msg.text[:4000]).split()) \
                >= _IMAGE_ONLY_MAX_ALT_TEXT:
            return  # a real text alternative to read
        links = [u for u in msg.urls
                 if u.tag == "a" and u.scheme in ("http", "https") and u.source == "html"]
        if links:
            hits.add("HTML_IMAGE_ONLY",
                     f"the HTML body has {visible} characters of text and {len(links)} link(s), "
                     f"e.g. to {links[0].host}")

    @staticmethod
    def _check_filler(msg: ParsedMessage, hits: _Hits) -> None:
        """Hundreds of dots or underscores in a row. Separator lines in honest mail are a
        line wide; runs this long are what salting looks like (how often it fires on each
        corpus: the per-symbol table of bench/pipeline_accuracy.py)."""
        for where, text in (("text", msg.text), ("HTML", msg.html)):
            m = _FILLER_RUN.search(text[:_FILLER_SCAN_CHARS]) if text else None
            if m is not None:
                hits.add("TEXT_FILLER_RUN",
                         f"the {where} body has {len(m.group(0))} {m.group(1)!r} in a row")
                return

    @staticmethod
    def _check_accented_english(msg: ParsedMessage, hits: _Hits) -> None:
        """English text with accents sprinkled on common words ("Thiš emáil wás sent át…").

        Word filters and the content model see "emáil" as a word they never met; a reader
        sees "email". Honest text in French, Spanish or Portuguese has accents too, but its
        accented words are not English words once the accents are gone ("été", "está"), and
        mostly-English text has no reason to accent "was" or "your".
        """
        fa = msg.from_addr
        text = " ".join((msg.subject, fa.display_name if fa else "",
                         msg.body_text[:_ACCENT_TEXT_CHARS]))
        if text.isascii() or not _LATIN_ACCENTED.search(text):
            return  # no accented Latin letter at all (English, Chinese, Russian…)
        words = _WORD.findall(text)
        found: dict[str, str] = {}
        n_ascii = 0
        for w in words:
            if w.isascii():
                n_ascii += 1
                continue
            if len(found) >= 8 or len(w) > 12 or not _LATIN_ACCENTED.search(w):
                continue
            bare = "".join(c for c in unicodedata.normalize("NFD", w)
                           if not unicodedata.combining(c)).lower()
            if bare.isascii() and bare in _ENGLISH_COMMON:
                found.setdefault(bare, w)
        if len(found) >= 3 and n_ascii >= 0.7 * len(words):
            shown = ", ".join(f"{v!r} for {k!r}" for k, v in list(found.items())[:4])
            hits.add("PHISH_ACCENTED_ENGLISH", f"English words spelled with stray accents: {shown}")

    @staticmethod
    def _check_callback(msg: ParsedMessage, hits: _Hits) -> None:
        """Telephone-oriented attack delivery: a fake invoice or renewal ("you have been
        charged $299.95 … if you did not authorize this, call +1 (866) …") that carries no
        link for a filter to judge; the victim phones the scammer."""
        web = sum(1 for u in msg.urls if u.scheme in ("http", "https") and u.tag in ("a", ""))
        if web > 1:
            return
        text = (msg.subject + "\n" + msg.body_text[:_CALLBACK_TEXT_CHARS])
        # Cheapest test first: most mail names no amount of money.
        amount = _AMOUNT.search(text)
        if amount is None:
            return
        charge = _CHARGE.search(text)
        dispute = _DISPUTE.search(text) if charge else None
        phone = _PHONE.search(text) if dispute else None
        if phone is not None and charge is not None and dispute is not None:
            fa = msg.from_addr
            free = fa is not None and registrable(fa.domain) in FREEMAIL
            hits.add("PHISH_CALLBACK",
                     f"{charge.group(0)!r} of {amount.group(0).strip()!r}, "
                     f"{dispute.group(0)!r} at {phone.group(0).strip()!r}"
                     + (f", sent from free-mail {fa.address}" if free and fa else ""),
                     # A company's billing department does not write from a free-mail account.
                     1.25 if free else 1.0)


@dataclass(frozen=True)
class _BrandEvidence:
    facts: BrandFacts
    display: Brand | None  # the brand the From display name names
    first_in_text: Brand | None  # the first brand named in the subject or body start
    lures: tuple[str, ...]  # account-lure words in the subject or body start

    @property
    def claimed(self) -> frozenset[str]:
        """The brands the message presents itself as: the display name's, and the first one
        named in the subject or body start beside two or more account-lure words."""
        names = {self.display.name} if self.display is not None else set()
        if self.first_in_text is not None and len(self.lures) >= 2:
            names.add(self.first_in_text.name)
        return frozenset(names)


# The system mailbox Exchange sends non-delivery reports from, the same GUID in every
# organisation ("Microsoft Outlook" <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@…>).
EXCHANGE_SYSTEM_MAILBOX = "microsoftexchange329e71ec88ae4615bbc36ab6ce41109e"


def brand_domains(key: str) -> tuple[str, ...]:
    """The domains a brand of the built-in table sends from and links to (its `domains`);
    empty for a key the table does not know."""
    return _BRAND_DOMAINS.get(key, ())


def link_occurrences(msg: ParsedMessage, attachments: bool = True) -> list[str]:
    """Organisational domains (IP addresses as they are) of the web links and the URLs
    written in the text, one per link, in order; not images or style sheets. Without
    `attachments`, only what the message body links to."""
    out: list[str] = []
    for u in msg.urls:
        if u.scheme in ("http", "https") and u.host and u.tag in ("a", "area", "") \
                and (attachments or u.source != "attachment"):
            d = u.host.strip("[]") if is_ip(u.host) else org_domain(u.host)
            if d:
                out.append(d)
    return out


def _link_domains(msg: ParsedMessage) -> tuple[str, ...]:
    """`link_occurrences`, each domain once."""
    return tuple(dict.fromkeys(link_occurrences(msg)))


class BrandAuthCheck(Check):
    """A named brand's own mail, or its domain forged: the brand facts of `urls` (stage 0)
    against the authentication facts of `auth` (stage 0), hence stage 1.

    Names alone prove nothing either way: every parcel notice names DHL, and so does every
    fake one. Authentication for one of the brand's own domains is what tells them apart."""

    name = "urls_brand_auth"
    family = "urls"
    stage = 1
    symbols = BRAND_AUTH_SYMBOLS

    def __init__(self, urls: UrlCheck) -> None:
        self.urls = urls

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        brands, auth = result.facts.brands, result.facts.auth
        domain = (msg.from_domain or "").lower()
        if brands is None or auth is None or not domain or not brands.named:
            return  # nothing named, or authentication not established (not "failed")
        named = [b for b in (self.urls.brand(k) for k in brands.named) if b is not None]
        if auth.aligned(domain):
            own = next((b for b in named if self.urls.vouches_for(b, domain)), None)
            if own is not None:
                result.add("BRAND_AUTHENTICATED",
                           f"names {own.name} and is authenticated for {domain} "
                           f"({_how_authenticated(auth, domain)})")
        elif auth.failed:
            # Free-mail and hosted domains count here: a forged gmail.com is forged too.
            claimed = next((b for b in named if self.urls.owns(b, domain)), None)
            if claimed is not None:
                result.add("BRAND_AUTH_FAILED",
                           f"names {claimed.name} and is sent from its domain {domain}, but "
                           f"authentication failed ({_how_failed(auth)})")


def _how_authenticated(auth: AuthFacts, domain: str) -> str:
    target = org_domain(domain)
    if auth.dmarc == "pass" and org_domain(auth.from_domain) == target:
        return "DMARC"
    dkim = next((d for d in auth.dkim_pass if org_domain(d) == target), "")
    return f"DKIM d={dkim}" if dkim else f"SPF {auth.spf_domain}"


def _how_failed(auth: AuthFacts) -> str:
    if auth.dmarc == "fail":
        return "DMARC fail"
    if auth.spf == "fail":
        return f"SPF fail for {auth.spf_domain or 'the sender'}"
    return f"DKIM signature by {', '.join(auth.dkim_fail)} does not verify"


def _has_form(html: str) -> bool:
    # Substring tests: a case-insensitive regex over a 1 MB body costs milliseconds.
    return any(mark in html for mark in _FORM_MARKS)


_IP_LABEL = re.compile(r"(?:^|[a-z-])(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(?:$|[a-z-])")
_IMAGE_ONLY_MAX_TEXT = 20  # characters of visible text, spaces left out
_IMAGE_ONLY_MAX_ALT_TEXT = 100  # characters of a text part (no spaces, no URLs): a line or two
_TEXT_URL = re.compile(r"""(?i)<?\b(?:(?:https?|ftp)://|www\.)[^\s<>"']+>?""")


_TRANSLATE_PROXY = ".translate.goog"


def _untranslate(host: str) -> str:
    """The site a *.translate.goog host proxies: in its first label '-' stands for '.' and
    '--' for '-' (www-example--shop-com.translate.goog is www.example-shop.com)."""
    label = host[: -len(_TRANSLATE_PROXY)]
    if not label or "." in label:
        return ""
    inner = label.replace("--", "\0").replace("-", ".").replace("\0", "-")
    return inner if "." in inner else ""


def _ip_hostname(host: str) -> bool:
    """ec2-3-138-125-44.…, 61-30-80-157.static.…, ip-10-0-0-1.…: the first label spells an
    IPv4 address with dashes, as providers name servers nobody gave a name."""
    first = host.split(".", 1)[0]
    if first.count("-") < 3:
        return False
    m = _IP_LABEL.search(first)
    return m is not None and all(int(g) < 256 for g in m.groups())


def _public_ip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True  # dotless/hex forms: only ever used to hide an address
    # Intranet and loopback addresses are where admins and developers link to; everything
    # else (including the documentation ranges, which no honest mail links to) counts.
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    return not any(ip in net for net in _INTRANET)


_INTRANET = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def _host_of(url: str) -> str:
    if url.startswith("//"):
        url = "http:" + url
    elif url.lower().startswith("www."):
        url = "http://" + url
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _param_url(url: str, names: Iterable[str]) -> str:
    """The first query parameter in `names` whose value is itself a URL."""
    if "?" not in url and "/amp/" not in url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    names = set(names)
    for k, v in parse_qsl(parts.query, keep_blank_values=False):
        if k.lower() in names:
            v = unquote(v).strip() if "%" in v else v.strip()
            if v.lower().startswith(("http://", "https://", "//", "www.")):
                return v
    if parts.path.startswith("/amp/s/"):
        return "https://" + parts.path[len("/amp/s/"):]
    return ""


def build(ctx: BuildContext) -> list[Check]:
    cfg = ctx.config.section("phishing", PhishingSettings)
    if not cfg.enabled:
        return []
    bec = ctx.config.section("bec", BecSettings)
    builtin = {b.name: b for b in BUILTIN_BRANDS}
    try:
        brands = ([_brand_from_config(e, builtin) for e in cfg.brands] if cfg.brands is not None
                  else list(BUILTIN_BRANDS))
        brands += [_brand_from_config(e, builtin) for e in cfg.brands_extra]
    except ValueError as exc:
        from mailmoat.errors import ConfigError

        raise ConfigError(f"[phishing] brands: {exc}") from exc
    plist = None
    if cfg.lists:
        base = ctx.config.resolve_path(".") if ctx.config.source else None
        plist = PhishList(cfg.lists, refresh_interval=cfg.refresh_interval,
                          fetch_timeout=cfg.fetch_timeout, network=ctx.network, base_dir=base)
    check = UrlCheck(brands, ctx.config.internal_domains, bec.protected_domains,
                     SHORTENERS | {s.lower() for s in cfg.shorteners_extra}, plist)
    return [check, BrandAuthCheck(check)]
