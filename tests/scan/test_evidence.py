"""The evidence gate: the content tiers' score alone never rejects, and consistent bulk or
brand mail from an authenticated sender is bulk, not spam (scan/evidence.py)."""

from __future__ import annotations

from mailmoat.config import Config, PolicySettings
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.policy.decide import decide
from mailmoat.scan.base import Action, Category, ScanResult, SymbolSpec
from mailmoat.scan.evidence import (
    SYMBOLS,
    EvidenceCheck,
    EvidenceSettings,
    bulk_level,
    name_coherent,
)
from mailmoat.scan.facts import AuthFacts, BrandFacts, BulkFacts, ModelFacts

SPECS = {
    **SYMBOLS,
    "CONTENT_PHISH_HIGH": SymbolSpec(12.0, "content", Category.PHISHING, "content"),
    "DEEP_MEAN_LOWERS": SymbolSpec(-1.0, "deep", Category.CLEAN, "deep"),
    "URL_IP_HOST": SymbolSpec(2.5, "ip link", Category.PHISHING, "urls"),
    "SPF_NONE": SymbolSpec(0.5, "no spf", Category.SPAM, "auth"),
}

NOTICE = (
    "From: {name} <{addr}>\r\nTo: bob@example.test\r\nSubject: Your parcel is on its way\r\n"
    "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@{dom}>\r\n{extra}"
    "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<p>Your parcel 00340434 will arrive tomorrow.</p>"
    '<p><a href="{link}">Track your parcel</a> '
    '<a href="https://www.facebook.com/dhl">Facebook</a></p>\r\n'
)


def _msg(name: str = "DHL Paket", addr: str = "noreply@dhl.de",
         link: str = "https://www.dhl.de/track?id=00340434", extra: str = ""):
    raw = NOTICE.format(name=name, addr=addr, dom=addr.split("@")[1], link=link,
                        extra=extra).encode()
    return parse_message(raw, Envelope(mail_from=addr, rcpt_tos=("bob@example.test",)))


def _result(content: float = 1.35, **extra: float) -> ScanResult:
    r = ScanResult(specs=SPECS)
    r.add("CONTENT_PHISH_HIGH", reason="reads like a phish", factor=content)
    for name, factor in extra.items():
        r.add(name, reason=name, factor=factor)
    r.facts.content = ModelFacts(p_bad=0.9999, p_spam=0.0, p_phish=0.9999)
    return r


async def _gate(msg, result: ScanResult) -> ScanResult:
    await EvidenceCheck(Config(), EvidenceSettings()).run(msg, result)
    return result


def _verified(domain: str) -> AuthFacts:
    return AuthFacts(source="gateway", spf="pass", spf_domain=domain, dkim_pass=(domain,),
                     dmarc="pass", from_domain=domain)


async def test_content_alone_cannot_reject():
    r = await _gate(_msg(), _result())
    assert r.score == 16.2 - r.get("EVIDENCE_CONTENT_ONLY").score * -1
    assert r.score < PolicySettings().reject_threshold
    v = decide(r, PolicySettings())
    assert v.action is Action.QUARANTINE
    assert "no other check found anything off" in r.get("EVIDENCE_CONTENT_ONLY").reason


async def test_corroborated_content_stands_and_names_the_evidence():
    r = await _gate(_msg(link="http://45.9.12.3/dhl"), _result(URL_IP_HOST=1.4))
    assert not r.has("EVIDENCE_CONTENT_ONLY") and not r.has("EVIDENCE_CONSISTENT")
    assert "URL_IP_HOST" in r.get("EVIDENCE_CORROBORATED").reason
    assert r.facts.consistency.foreign_links == ("45.9.12.3",)
    assert decide(r, PolicySettings()).action is Action.REJECT


async def test_weak_signals_add_up_to_evidence():
    r = await _gate(_msg(), _result(SPF_NONE=1.0))  # 0.5: not enough on its own
    assert r.has("EVIDENCE_CONTENT_ONLY")
    r = await _gate(_msg(), _result(SPF_NONE=2.0))  # 1.0: corroborated, weakly
    assert "backed only by weak evidence" in r.get("EVIDENCE_CONTENT_ONLY").reason
    r = await _gate(_msg(), _result(content=0.6, SPF_NONE=2.0))  # 7.2 + 1: tags, untouched
    assert r.has("EVIDENCE_CORROBORATED") and r.score == 8.2


async def test_authenticated_newsletter_is_bulk_not_phishing():
    r = _result()
    r.facts.auth = _verified("dhl.de")
    r.facts.bulk = BulkFacts(kind="newsletter", markers=("one-click unsubscribe (RFC 8058)",))
    r = await _gate(_msg(), r)
    sym = r.get("EVIDENCE_CONSISTENT")
    assert sym is not None and sym.score == -16.2 and r.score == 0
    assert "authenticated for dhl.de" in sym.reason and "bulk level 9" in sym.reason
    assert r.facts.bulk_level == 9
    v = decide(r, PolicySettings())
    assert v.action is Action.ACCEPT and v.category is Category.BULK
    held = decide(r, PolicySettings(recipients={"bob@example.test": {"bulk_action": "quarantine"}}),
                  "bob@example.test")
    assert held.action is Action.QUARANTINE


async def test_withdraws_only_what_the_tiers_add_net():
    r = _result(DEEP_MEAN_LOWERS=4.0)  # tier 2 already took 4 of tier 1's 16.2 back
    r.facts.auth = _verified("dhl.de")
    r.facts.bulk = BulkFacts(kind="notification", markers=("Feedback-ID",))
    r = await _gate(_msg(), r)
    assert r.get("EVIDENCE_CONSISTENT").score == -12.2 and r.score == 0


async def test_brand_mail_authenticated_for_the_brand_needs_no_bulk_marker():
    r = _result()
    r.facts.auth = _verified("dhl.de")
    r.facts.brands = BrandFacts(named=("dhl",), sender_brand="dhl")
    r = await _gate(_msg(), r)
    assert r.has("EVIDENCE_CONSISTENT") and "brand mail" in r.get("EVIDENCE_CONSISTENT").reason


async def test_same_text_from_a_lookalike_domain_is_not_consistent():
    r = _result()
    r.facts.auth = _verified("dhl-paket-info.xyz")  # phishers authenticate their own domains
    r.facts.bulk = BulkFacts(kind="newsletter", markers=("one-click unsubscribe (RFC 8058)",))
    r.facts.brands = BrandFacts(named=("dhl",), mismatched=("dhl",))
    r = await _gate(_msg(addr="info@dhl-paket-info.xyz",
                         link="https://dhl-paket-info.xyz/track"), r)
    assert not r.has("EVIDENCE_CONSISTENT")
    assert "names dhl but is not sent from it" in r.get("EVIDENCE_CONTENT_ONLY").reason


async def test_links_elsewhere_or_a_foreign_name_keep_the_content_verdict():
    r = _result()
    r.facts.auth = _verified("pepsup.example")
    r.facts.bulk = BulkFacts(kind="newsletter", markers=("Feedback-ID",))
    r = await _gate(_msg(name="TrustWallet APP", addr="news@pepsup.example",
                         link="https://wallet-verify.example/login"), r)
    reason = r.get("EVIDENCE_CONTENT_ONLY").reason
    assert "display name does not match" in reason and "links go elsewhere" in reason


async def test_failed_authentication_is_never_consistent():
    r = _result()
    r.facts.auth = AuthFacts(source="gateway", spf="fail", spf_domain="dhl.de", dmarc="fail",
                             from_domain="dhl.de")
    r.facts.bulk = BulkFacts(kind="newsletter", markers=("Feedback-ID",))
    r = await _gate(_msg(), r)
    assert "authentication failed" in r.get("EVIDENCE_CONTENT_ONLY").reason


async def test_offline_an_aligned_dkim_claim_stands_in_for_verification():
    dkim = "DKIM-Signature: v=1; a=rsa-sha256; d=dhl.de; s=s1; h=from; bh=x; b=y\r\n"
    r = _result()
    r.facts.bulk = BulkFacts(kind="notification", markers=("Feedback-ID",))
    r = await _gate(_msg(extra=dkim), r)
    assert "claims DKIM for dhl.de" in r.get("EVIDENCE_CONSISTENT").reason
    # Without the claim nothing shows who sent it.
    r = _result()
    r.facts.bulk = BulkFacts(kind="notification", markers=("Feedback-ID",))
    r = await _gate(_msg(), r)
    assert r.has("EVIDENCE_CONTENT_ONLY")


async def test_a_bounce_of_our_own_mail_is_never_held():
    r = _result(URL_IP_HOST=1.0)
    r.facts.bulk = BulkFacts(kind="dsn", markers=("returns mail sent by example.test",),
                             own_dsn=True)
    r = await _gate(_msg(name="Mail Delivery System", addr="mailer-daemon@mx.other.example"), r)
    assert r.has("EVIDENCE_CONSISTENT") and r.score == 2.5
    assert decide(r, PolicySettings()).action is Action.ACCEPT


async def test_ordinary_mail_is_left_alone():
    r = ScanResult(specs=SPECS)
    r = await _gate(_msg(), r)
    assert r.symbols == [] and r.facts.consistency is not None and r.facts.bulk_level is None


def test_name_coherence():
    assert name_coherent("Amazon.de", ["amazon.de"])
    assert name_coherent("The New York Times", ["nytimes.com"])
    assert name_coherent("Jane Smith", ["acme.example"], "jane.smith")
    assert name_coherent("", ["anything.example"])
    assert name_coherent("Sparkasse KölnBonn", ["sparkasse-koelnbonn.de"])
    assert not name_coherent("TrustWallet APP", ["pepsup.com"])
    assert not name_coherent("Ledger", ["channelworld.maileon.de"])
    assert not name_coherent("OpenSea", ["mg.iaplicada.cl"], "postmaster")
    assert not name_coherent("De.Fi(v2.0)", ["taxghost.com"])  # short words, still a name
    assert not name_coherent("--ᴘᴀʏᴍᴇɴᴛ ᴅᴇᴄɪɪɴᴇᴅ--", ["brandedstanley.com"])
    assert name_coherent("京东", ["jd.com"])  # a script no domain label can spell
    assert name_coherent("N26", ["n26.com"])


def test_bulk_level_scale():
    assert bulk_level(None) == 0
    assert bulk_level(0.5) in (4, 5)
    assert bulk_level(0.9999) == 9 and bulk_level(0.0001) == 0
    assert [bulk_level(p) for p in (0.1, 0.5, 0.9, 0.99)] == sorted(
        bulk_level(p) for p in (0.1, 0.5, 0.9, 0.99))


async def test_weak_evidence_can_quarantine_but_not_reject():
    r = await _gate(_msg(), _result(URL_IP_HOST=0.6))  # 1.5: corroborates, under 3
    sym = r.get("EVIDENCE_CONTENT_ONLY")
    assert sym is not None and "backed only by weak evidence (URL_IP_HOST (1.5)" in sym.reason
    assert decide(r, PolicySettings()).action is Action.QUARANTINE


async def test_a_consistent_sender_that_is_not_bulk_is_tagged_at_most():
    dkim = "DKIM-Signature: v=1; a=rsa-sha256; d=dhl.de; s=s1; h=from; bh=x; b=y\r\n"
    r = await _gate(_msg(extra=dkim), _result())
    sym = r.get("EVIDENCE_CONTENT_ONLY")
    assert "not bulk or brand mail" in sym.reason
    assert decide(r, PolicySettings()).action is Action.TAG


DSN = (
    "From: Mail Delivery System <MAILER-DAEMON@mx.other.example>\r\nTo: a@example.test\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <d@mx.other.example>\r\n"
    "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
    "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.other.example\r\n"
    "\r\nFinal-Recipient: rfc822; nobody@other.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    "--b--\r\n")


async def test_a_bounce_that_no_log_can_check_is_not_held_offline():
    msg = parse_message(DSN.encode(), Envelope(mail_from="", rcpt_tos=("a@example.test",)))
    r = _result()
    r.facts.bulk = BulkFacts(kind="dsn", markers=("delivery status notification (RFC 3464)",))
    await EvidenceCheck(Config(), EvidenceSettings(), log_available=False).run(msg, r)
    assert "null sender" in r.get("EVIDENCE_CONSISTENT").reason and r.score == 0
    # With a message log the bulk family decides whose mail it returns: no shortcut.
    r = _result()
    r.facts.bulk = BulkFacts(kind="dsn", markers=("delivery status notification (RFC 3464)",))
    await EvidenceCheck(Config(), EvidenceSettings(), log_available=True).run(msg, r)
    assert not r.has("EVIDENCE_CONSISTENT")


async def test_free_mail_and_on_behalf_services_prove_no_sender():
    dkim = "DKIM-Signature: v=1; a=rsa-sha256; d={d}; s=s1; h=from; bh=x; b=y\r\n"
    for name, addr in (("Jane Doe (via Google Docs)", "drive-shares-noreply@google.com"),
                       ("Payments", "payments.team@gmail.com"),
                       ("Acme Support", "support@acme.zendesk.com")):
        r = _result()
        r.facts.bulk = BulkFacts(kind="notification", markers=("Feedback-ID",))
        dom = addr.split("@")[1]
        r = await _gate(_msg(name=name, addr=addr, link=f"https://{dom}/x",
                             extra=dkim.format(d=dom)), r)
        assert "anyone may send from" in r.get("EVIDENCE_CONTENT_ONLY").reason, addr


async def test_a_stored_bounce_without_return_path_is_read_as_from_the_null_sender():
    # `mailmoat scan` rebuilds the envelope from the file: the Exchange-style bounce below
    # names an internal mailbox in From but, as every bounce, was sent from the null sender.
    from mailmoat.commands.scan import envelope_for

    raw = DSN.replace("MAILER-DAEMON@mx.other.example",
                      "MicrosoftExchange1@example.test").encode()
    env = envelope_for(raw, Config())
    assert env.mail_from == ""
    msg = parse_message(raw, env)
    r = _result()
    r.facts.bulk = BulkFacts(kind="dsn", markers=("delivery status notification (RFC 3464)",))
    await EvidenceCheck(Config(), EvidenceSettings(), log_available=False).run(msg, r)
    assert "null sender" in r.get("EVIDENCE_CONSISTENT").reason and r.score == 0
    # The same report with the Return-Path its file kept is judged by that sender.
    raw = b"Return-Path: <someone@other.example>\r\n" + raw
    env = envelope_for(raw, Config())
    assert env.mail_from == "someone@other.example"
    r = _result()
    r.facts.bulk = BulkFacts(kind="dsn", markers=("delivery status notification (RFC 3464)",))
    await EvidenceCheck(Config(), EvidenceSettings(), log_available=False).run(
        parse_message(raw, env), r)
    assert not r.has("EVIDENCE_CONSISTENT")


DMARC_REPORT = (
    "From: noreply-dmarc-support@google.com\r\nTo: dmarc@example.test\r\n"
    "Subject: Report domain: example.test Submitter: google.com Report-ID: 9493488660\r\n"
    "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <r1@google.com>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate report from google.com.{link}\r\n"
    "--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; "
    "filename=\"google.com!example.test!1725321600!1725407999.zip\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--b--\r\n")


async def test_a_machine_report_is_not_judged_by_the_text_models():
    def report(link: str = ""):
        return parse_message(DMARC_REPORT.format(link=link).encode(),
                             Envelope(mail_from="", rcpt_tos=("dmarc@example.test",)))

    def scored(content: float, **extra: float) -> ScanResult:
        # What the bulk family reads in it (tests/scan/test_bulk.py pins that reading).
        r = _result(content, **extra)
        r.facts.bulk = BulkFacts(kind="notification",
                                 markers=("DMARC aggregate report (RFC 7489)",),
                                 report="DMARC aggregate report (RFC 7489)")
        return r

    # google.com proves no sender (anyone may send from Google's services), yet the report's
    # text is a machine's: what the content tiers read in it is withdrawn.
    r = await _gate(report(), scored(content=0.6))
    assert "DMARC aggregate report" in r.get("EVIDENCE_CONSISTENT").reason
    assert decide(r, PolicySettings()).action is Action.ACCEPT
    # A footer the receiving domain's own server added links home: still a machine's report.
    r = await _gate(report(" Example Corp https://www.example.test"), scored(content=0.6))
    assert r.has("EVIDENCE_CONSISTENT")
    # Stored mail has no envelope recipients: its To field says whose domain is home.
    stored = parse_message(DMARC_REPORT.format(link=" https://www.example.test").encode(),
                           Envelope(mail_from="", rcpt_tos=()))
    assert (await _gate(stored, scored(content=0.6))).has("EVIDENCE_CONSISTENT")
    # A link elsewhere makes it something a person is asked to act on: no withdrawal.
    r = await _gate(report(" Review it at https://dmarc-review.example.net/login"),
                    scored(content=0.6))
    assert not r.has("EVIDENCE_CONSISTENT")
    # Other checks' evidence keeps the content verdict, report or not.
    r = await _gate(report(), scored(content=0.6, URL_IP_HOST=1.4))
    assert r.has("EVIDENCE_CORROBORATED")


# --- content in a language the models were hardly trained on --------------------------------

# Per language and class, as `mailmoat train` records them in the model's metadata.
LANGUAGES = {"en": {"ham": 12618, "spam": 3727, "phish": 1883},
             "de": {"ham": 11, "spam": 40, "phish": 436}}
ORDER = (
    "From: Buchladen Müller <bestellung@buchladen-mueller.de>\r\nTo: bob@example.test\r\n"
    "Subject: {subject}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <7@buchladen-mueller.de>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/html; charset=utf-8\r\n\r\n<p>{body}</p>"
    '<p><a href="{link}">{anchor}</a></p>\r\n')
GERMAN = dict(subject="Ihre Bestellung 40213 wurde versandt",
              body="Vielen Dank für Ihren Einkauf. Ihre Bestellung wurde heute an DHL "
                   "übergeben und ist in zwei Tagen bei Ihnen.", anchor="Sendung verfolgen")
ENGLISH = dict(subject="Your order 40213 has shipped",
               body="Thank you for shopping with us. Your order was handed to the carrier "
                    "today and will arrive in two days.", anchor="Track your order")


def _order(text: dict[str, str], link: str = "https://www.buchladen-mueller.de/konto/40213"):
    raw = ORDER.format(link=link, **text).encode()
    return parse_message(raw, Envelope(mail_from="bestellung@buchladen-mueller.de",
                                       rcpt_tos=("bob@example.test",)))


async def _gate_languages(msg, r: ScanResult, **settings) -> ScanResult:
    await EvidenceCheck(Config(), EvidenceSettings(**settings), languages=LANGUAGES).run(msg, r)
    return r


async def test_consistent_sender_in_a_language_the_models_barely_know_is_not_held():
    r = _result()
    r.facts.auth = _verified("buchladen-mueller.de")
    r = await _gate_languages(_order(GERMAN), r)
    c = r.facts.consistency
    assert (c.language, c.language_ham, c.language_bad) == ("de", 11, 476)
    sym = r.get("EVIDENCE_UNFAMILIAR_LANGUAGE")
    assert sym is not None and sym.score == -16.2 and r.score == 0
    assert "written in German" in sym.reason and "11 legitimate and 476" in sym.reason
    assert decide(r, PolicySettings()).action is Action.ACCEPT
    # The same shop's mail in English, which the models know: text alone may still tag it.
    r = _result()
    r.facts.auth = _verified("buchladen-mueller.de")
    r = await _gate_languages(_order(ENGLISH), r)
    assert r.facts.consistency.language == "en" and not r.has("EVIDENCE_UNFAMILIAR_LANGUAGE")
    assert "tag but not quarantine" in r.get("EVIDENCE_CONTENT_ONLY").reason
    assert decide(r, PolicySettings()).action is Action.TAG


async def test_an_unfamiliar_language_excuses_no_inconsistent_sender():
    # Unauthenticated, linking elsewhere: the content verdict keeps what it may do alone.
    r = await _gate_languages(_order(GERMAN, link="https://buchladen-konto.example/login"),
                              _result())
    assert not r.has("EVIDENCE_UNFAMILIAR_LANGUAGE")
    assert decide(r, PolicySettings()).action is Action.QUARANTINE
    # Another check's evidence corroborates it, in any language.
    r = _result(URL_IP_HOST=1.4)
    r.facts.auth = _verified("buchladen-mueller.de")
    r = await _gate_languages(_order(GERMAN, link="http://45.9.12.3/konto"), r)
    assert r.has("EVIDENCE_CORROBORATED") and not r.has("EVIDENCE_UNFAMILIAR_LANGUAGE")
    assert decide(r, PolicySettings()).action is Action.REJECT


async def test_the_language_rule_needs_counts_and_can_be_turned_off():
    for settings, languages in (({"language_min_ham": 0}, LANGUAGES), ({}, None)):
        r = _result()
        r.facts.auth = _verified("buchladen-mueller.de")
        await EvidenceCheck(Config(), EvidenceSettings(**settings), languages=languages).run(
            _order(GERMAN), r)
        assert not r.has("EVIDENCE_UNFAMILIAR_LANGUAGE")
        assert decide(r, PolicySettings()).action is Action.TAG


def test_the_bundled_model_says_which_languages_it_knows():
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.evidence import build

    [check] = build(BuildContext(config=Config()))
    assert isinstance(check, EvidenceCheck) and check.languages is not None
    assert check.languages["en"]["ham"] > 10000 and check.languages["zh"]["ham"] > 1000
    assert check.languages["de"]["ham"] < EvidenceSettings().language_min_ham


async def test_the_llm_was_not_trained_on_those_corpora_so_its_word_stands():
    specs = {**SPECS, "LLM_PHISH": SymbolSpec(1.0, "llm", Category.PHISHING, "llm")}
    r = ScanResult(specs=specs)
    r.add("CONTENT_PHISH_HIGH", reason="reads like a phish", factor=1.35)
    r.add("LLM_PHISH", reason="asks for the card number", factor=4.0)
    r.facts.content = ModelFacts(p_bad=0.9999, p_spam=0.0, p_phish=0.9999)
    r.facts.auth = _verified("buchladen-mueller.de")
    r = await _gate_languages(_order(GERMAN), r)
    assert r.facts.consistency.llm == 4.0 and not r.has("EVIDENCE_UNFAMILIAR_LANGUAGE")
