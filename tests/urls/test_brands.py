"""The brand table (data/brands.toml) and the brand facts and symbols decided from it: a brand
named in authenticated mail from its own domain is its own mail; named from elsewhere, an
impersonation. Every message is built here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailmoat.scan.base import BuildContext, ScanResult
from mailmoat.scan.facts import AuthFacts, BrandFacts
from mailmoat.scan.lookalike import registrable
from mailmoat.scan.urls import (BRAND_AUTH_SYMBOLS, BRAND_GROUPS, BUILTIN_BRANDS, BrandAuthCheck,
                                BrandTableError, UrlCheck, build, link_occurrences,
                                parse_brands)
from tests.conftest import make_config, make_email, scan_bytes

BRAND_PHISH = ("PHISH_BRAND_DISPLAY_NAME", "PHISH_BRAND_LURE", "PHISH_BRAND_LOOKALIKE_SENDER",
               "PHISH_BRAND_SENDER_FOREIGN_LINKS", "URL_LOOKALIKE_BRAND", "BRAND_AUTH_FAILED")

PARCEL_TEXT = ("Guten Tag,\nIhre Sendung 00340434161094015902 konnte nicht zugestellt werden. "
               "Bitte bestätigen Sie Ihre Adresse und verifizieren Sie die Zustellung.\n")
PARCEL_HTML = ("<p>Ihre DHL Sendung konnte nicht zugestellt werden.</p>"
               '<p><a href="{link}">Sendung verfolgen</a></p>')


def _entry(**fields: object) -> str:
    base: dict[str, object] = {"key": "acme", "group": "shop", "domains": ["acme.example"]}
    base.update(fields)
    lines = ["[[brand]]"]
    for k, v in base.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
        else:
            lines.append(f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def _url_check() -> UrlCheck:
    checks = build(BuildContext(config=make_config(), network=False))
    return next(c for c in checks if isinstance(c, UrlCheck))


async def _stage1(outcome, auth: AuthFacts | None) -> ScanResult:
    """The stage-1 check alone, on the scan's brand facts plus the given auth facts."""
    result = ScanResult(specs=BRAND_AUTH_SYMBOLS)
    result.facts = replace(outcome.result.facts, auth=auth)
    await BrandAuthCheck(_url_check()).run(outcome.message, result)
    return result


def _dhl_notice(sender: str, link: str) -> bytes:
    return make_email(sender=sender, subject="DHL: Ihre Sendung konnte nicht zugestellt werden",
                      body=PARCEL_TEXT + link + "\n", html=PARCEL_HTML.format(link=link))


# --- the table ---------------------------------------------------------------------------


def test_builtin_table_loads_and_every_entry_is_valid():
    keys = [b.name for b in BUILTIN_BRANDS]
    assert len(keys) == len(set(keys)) >= 120
    for b in BUILTIN_BRANDS:
        assert b.group in BRAND_GROUPS, b.name
        assert b.domains and all(d == d.lower() and "." in d for d in b.domains), b.name
        assert set(b.cased) <= set(b.keywords), b.name
        assert set(b.hosted) <= set(b.domains), b.name
    groups = {b.group for b in BUILTIN_BRANDS}
    assert {"parcel", "shop", "bank", "payment", "mail", "social", "telco", "government",
            "crypto"} <= groups


@pytest.mark.parametrize("key,domains", [
    ("dhl", ("dhl.de", "dhl.com")), ("amazon", ("amazon.de", "amazon.co.uk", "amazonses.com")),
    ("shopify", ("shopify.com", "shopifyemail.com", "myshopify.com")), ("sparkasse", ("sparkasse.de",)),
    ("icbc", ("icbc.com.cn",)), ("sfexpress", ("sf-express.com",)), ("hmrc", ("hmrc.gov.uk",)),
    ("paypal", ("paypal.com",)), ("hermes", ("myhermes.de", "evri.com")),
])
def test_table_has_the_brands_and_their_domains(key, domains):
    brand = {b.name: b for b in BUILTIN_BRANDS}[key]
    assert set(domains) <= set(brand.domains)


@pytest.mark.parametrize("fields,message", [
    ({"domains": []}, "domains is empty"),
    ({"domains": ["Acme.example"]}, "not a lower-case domain name: 'Acme.example'"),
    ({"group": "toys"}, "group must be one of"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"cased": ["acme"]}, "cased entry 'acme' is not in keywords"),
    ({"hosted": ["other.example"]}, "hosted entry 'other.example' is not in domains"),
    ({"patterns": ["acme.example"]}, "pattern 'acme.example' must be a domain glob"),
    ({"strict": "yes"}, "strict must be true or false"),
])
def test_broken_entry_is_a_clear_error_naming_it(fields, message):
    text = _entry(key="fine", domains=["fine.example"]) + _entry(**fields)
    with pytest.raises(BrandTableError) as exc:
        parse_brands(text, "brands.toml")
    assert "brands.toml: brand #2 ('acme')" in str(exc.value)
    assert message in str(exc.value)


def test_duplicate_key_and_not_toml_are_errors():
    with pytest.raises(BrandTableError, match="key 'acme' is used twice"):
        parse_brands(_entry() + _entry(), "t")
    with pytest.raises(BrandTableError, match="not valid TOML"):
        parse_brands("[[brand]\n", "t")


@pytest.mark.parametrize("text", [
    "Please post the minutes to the list by Friday; the target date is March.",
    "Our sales target for the post-holiday season; Otto will chase the wise old ledger.",
    "他是个菜鸟，刚开始学习编程。",  # "he is a rookie"
])
def test_ordinary_words_name_no_brand(text):
    check = _url_check()
    assert check._brands_named(text) == []


async def test_ordinary_text_mentioning_post_and_target_has_no_brand_facts():
    out = await scan_bytes(make_email(
        subject="Post-mortem: target missed",
        body="I will post the report tonight. We missed the target by two days.\n"))
    assert out.result.facts.brands == BrandFacts()


# --- both ways: authenticated own mail, impersonation --------------------------------------


async def test_authenticated_dhl_notice_is_dhls_own_mail():
    out = await scan_bytes(_dhl_notice('"DHL Paket" <noreply@dhl.de>',
                                       "https://www.dhl.de/de/privatkunden/pakete-empfangen.html"))
    facts = out.result.facts.brands
    assert facts.named == ("dhl",) and facts.sender_brand == "dhl" and facts.mismatched == ()
    assert set(link_occurrences(out.message)) == {"dhl.de"}
    assert not any(out.result.has(s) for s in BRAND_PHISH)
    auth = AuthFacts(source="gateway", dkim_pass=("dhl.de",), from_domain="dhl.de")
    result = await _stage1(out, auth)
    assert result.get("BRAND_AUTHENTICATED").reason == \
        "names dhl and is authenticated for dhl.de (DKIM d=dhl.de)"
    assert result.get("BRAND_AUTHENTICATED").score < 0
    assert not result.has("BRAND_AUTH_FAILED")


async def test_dhl_notice_from_a_foreign_domain_is_an_impersonation():
    out = await scan_bytes(_dhl_notice('"DHL Paket" <service@dhl-paket-info.xyz>',
                                       "http://45.9.12.3/dhl/track"))
    facts = out.result.facts.brands
    assert facts.mismatched == ("dhl",) and facts.sender_brand == ""
    assert set(link_occurrences(out.message)) == {"45.9.12.3"}
    assert out.result.get("PHISH_BRAND_DISPLAY_NAME").reason == (
        "display name 'DHL Paket' names dhl but the address is service@dhl-paket-info.xyz, "
        "link goes to 45.9.12.3")
    assert "link goes to 45.9.12.3" in out.result.get("PHISH_BRAND_LOOKALIKE_SENDER").reason
    assert out.result.has("URL_IP_HOST")
    # Authenticated for its own domain is no credit: the domain is not DHL's.
    auth = AuthFacts(source="gateway", dmarc="pass", from_domain="dhl-paket-info.xyz")
    assert not (await _stage1(out, auth)).symbols


async def test_forged_brand_domain_that_fails_authentication():
    out = await scan_bytes(_dhl_notice('"DHL" <noreply@dhl.de>', "http://45.9.12.3/dhl/track"))
    auth = AuthFacts(source="gateway", spf="fail", spf_domain="dhl.de", dmarc="fail",
                     from_domain="dhl.de")
    result = await _stage1(out, auth)
    assert result.get("BRAND_AUTH_FAILED").reason == \
        "names dhl and is sent from its domain dhl.de, but authentication failed (DMARC fail)"
    assert not result.has("BRAND_AUTHENTICATED")


async def test_no_auth_facts_no_verdict_either_way():
    out = await scan_bytes(_dhl_notice('"DHL" <noreply@dhl.de>', "https://www.dhl.de/x"))
    assert not (await _stage1(out, None)).symbols


async def test_free_mail_authenticated_is_not_the_brands_own_mail():
    out = await scan_bytes(make_email(sender='"Google Security" <alerts.team@gmail.com>',
                                      subject="Google: verify your password",
                                      body="Sign in to verify your account.\n"))
    assert out.result.facts.brands.named == ("google",)
    assert out.result.facts.brands.sender_brand == ""
    auth = AuthFacts(source="gateway", dmarc="pass", dkim_pass=("gmail.com",),
                     from_domain="gmail.com")
    assert not (await _stage1(out, auth)).has("BRAND_AUTHENTICATED")


async def test_shop_order_confirmation_naming_dhl_and_paypal_is_no_impersonation():
    body = ("Vielen Dank für Ihre Bestellung! Bezahlt mit PayPal. Ihr Paket wird mit DHL "
            "versandt; die Sendungsnummer erhalten Sie per E-Mail.\n"
            "Ihr Kundenkonto: https://www.shop-beispiel.de/login\n")
    out = await scan_bytes(make_email(sender='"Shop Beispiel" <bestellung@shop-beispiel.de>',
                                      subject="Ihre Bestellung 12345", body=body))
    facts = out.result.facts.brands
    assert facts.named == ("paypal", "dhl") and facts.mismatched == ()
    assert not any(out.result.has(s) for s in BRAND_PHISH)


async def test_german_sparkasse_lure_from_a_foreign_domain():
    body = ("Sehr geehrter Kunde,\nIhr Online-Banking wurde aus Sicherheitsgründen gesperrt. "
            "Bitte bestätigen Sie Ihre Zugangsdaten innerhalb von 24 Stunden:\n"
            "https://sparkasse-sicherheit.online-verify.top/login\n")
    out = await scan_bytes(make_email(sender='"Sparkasse Kundenservice" <info@kunden-center.top>',
                                      subject="Wichtige Mitteilung Ihrer Sparkasse", body=body))
    assert out.result.facts.brands.mismatched == ("sparkasse",)
    assert "names sparkasse" in out.result.get("PHISH_BRAND_DISPLAY_NAME").reason
    # Without the display name, the lure words in German catch it.
    out = await scan_bytes(make_email(sender="Kundenservice <info@kunden-center.top>",
                                      subject="Wichtige Mitteilung Ihrer Sparkasse", body=body))
    assert "names sparkasse" in out.result.get("PHISH_BRAND_LURE").reason


async def test_local_savings_bank_domain_is_the_sparkasse():
    out = await scan_bytes(make_email(sender='"Sparkasse KölnBonn" <service@sparkasse-koelnbonn.de>',
                                      subject="Ihr Kontoauszug",
                                      body="Ihr neuer Kontoauszug liegt im Postfach bereit.\n"))
    facts = out.result.facts.brands
    assert facts.named == ("sparkasse",) and facts.mismatched == ()
    assert facts.sender_brand == ""  # a pattern: no proof, anyone may register such a name
    assert not any(out.result.has(s) for s in BRAND_PHISH)


async def test_chinese_icbc_lure_from_a_foreign_domain():
    body = ("尊敬的客户：您的工商银行账户存在异常，已被临时冻结。请立即登录以下网址验证身份：\n"
            "http://icbc-verify.top/login\n")
    out = await scan_bytes(make_email(sender="客服中心 <service@kefu-center.top>",
                                      subject="【重要通知】账户安全验证", body=body))
    assert out.result.facts.brands.mismatched == ("icbc",)
    assert "names icbc" in out.result.get("PHISH_BRAND_LURE").reason
    assert out.result.has("URL_LOOKALIKE_BRAND")


async def test_links_are_read_as_org_domains_in_order():
    html = ('<a href="https://click.news.shop.example/a">a</a> <img src="https://cdn.example/x.png">'
            '<a href="https://www.amazon.de/gp/css">b</a> <a href="https://news.shop.example/b">c</a>')
    out = await scan_bytes(make_email(html=html))
    assert link_occurrences(out.message) == ["shop.example", "amazon.de", "shop.example"]


def test_every_brand_domain_belongs_to_its_brand():
    check = _url_check()
    for b in BUILTIN_BRANDS:
        for d in b.domains:
            assert check._belongs(b, registrable(d)), (b.name, d)


def test_cased_keyword_needs_a_capital_first_letter():
    check = _url_check()
    assert check._brands_named("ups and downs of the market") == []
    for text in ("Your UPS parcel", "Ups: delivery notice", "UPs parcel"):
        assert [b.name for b in check._brands_named(text)] == ["ups"], text


async def test_exchange_bounce_sender_is_not_a_microsoft_impersonation():
    """Exchange's own non-delivery reports come from "Microsoft Outlook" and a fixed system
    mailbox in the organisation's domain; the same name from any other address still counts."""
    from tests.conftest import scan_bytes

    def ndr(local: str) -> bytes:
        return (f"From: Microsoft Outlook <{local}@corp.example>\r\nTo: a@example.test\r\n"
                "Subject: Undeliverable: hello\r\nMessage-ID: <n@corp.example>\r\n"
                "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nDelivery has failed.\r\n").encode()

    real = await scan_bytes(ndr("MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"), mail_from="")
    fake = await scan_bytes(ndr("security-team"), mail_from="")
    assert not real.result.has("PHISH_BRAND_DISPLAY_NAME")
    assert fake.result.has("PHISH_BRAND_DISPLAY_NAME")


async def test_a_brands_own_shortener_in_its_own_mail_hides_nothing():
    from tests.conftest import scan_bytes

    def mail(sender: str) -> bytes:
        return (f"From: X <{sender}>\r\nTo: a@example.test\r\nSubject: Password reset\r\n"
                "Message-ID: <r@x.example>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
                "Content-Type: text/html\r\n\r\n"
                '<a href="https://t.co/abc123">Reset your password</a>\r\n').encode()

    own = await scan_bytes(mail("verify@x.com"), mail_from="")
    other = await scan_bytes(mail("verify@reset-help.example"), mail_from="")
    assert not own.result.has("URL_SHORTENER")
    assert other.result.has("URL_SHORTENER")
