"""Today's legitimate mail, end to end through the default scanner (both content tiers with
the bundled models): a parcel notice authenticated for the brand is delivered as bulk, the
same text from a lookalike domain is caught as phishing, a bounce of our own outbound mail
is delivered, a forged Authentication-Results from an untrusted authserv-id changes
nothing, and a German shop's own order confirmation is delivered while its text sent with a
link to a bare IP is held."""

from __future__ import annotations

import time

import pytest

from mailmoat.config import config_from_dict
from mailmoat.message.model import Direction, Envelope
from mailmoat.scan.base import Action, BuildContext, Category
from mailmoat.scan.engine import Scanner, ScanOutcome
from mailmoat.store.db import Database
from mailmoat.store.log import message_log_data, write_message
from tests.conftest import make_email

TRACK = "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode=0034043416"


def notice(domain: str, link: str, authres: str) -> bytes:
    """A German parcel notice of the kind phishing imitates, with a Gmail-style
    Authentication-Results written by the receiving server."""
    html = ("<p>Hallo,</p><p>Ihre Sendung 00340434161094042557 wird heute zugestellt. Bitte "
            "bestätigen Sie Ihre Lieferadresse und zahlen Sie die Zollgebühr von 1,99 EUR, sonst "
            f'wird das Paket zurückgeschickt.</p><p><a href="{link}">Sendung verfolgen</a></p>'
            "<p>Ihr DHL Team</p>")
    return make_email(
        sender=f"DHL Paket <noreply@{domain}>", subject="Ihre DHL Sendung kommt heute",
        html=html, headers={
            "Authentication-Results": authres,
            "DKIM-Signature": f"v=1; a=rsa-sha256; d={domain}; s=s1; h=from; bh=x; b=y",
            "List-Unsubscribe": f"<https://www.{domain}/unsubscribe?id=1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Feedback-ID": "1:paket:dhl"})


def passed(authserv: str, domain: str) -> str:
    return (f"{authserv}; dkim=pass header.i=@{domain} header.s=s1 header.b=abc; "
            f"spf=pass smtp.mailfrom=bounce@{domain}; dmarc=pass (p=REJECT) header.from={domain}")


async def scan(raw: bytes, *, trusted: tuple[str, ...] = ("mx.google.com",),
               mail_from: str = "bounce@dhl.de", database: Database | None = None
               ) -> ScanOutcome:
    config = config_from_dict({"scan": {"network": False},
                               "smtp": {"relay_domains": ["example.test"]},
                               "auth": {"trusted_authserv_ids": list(trusted)}})
    scanner = Scanner(BuildContext(config=config, network=False, database=database))
    try:
        env = Envelope(mail_from=mail_from, rcpt_tos=("bob@example.test",),
                       direction=Direction.INBOUND)
        return await scanner.scan(raw, env)
    finally:
        await scanner.close()


async def test_authenticated_parcel_notice_is_delivered_as_bulk():
    out = await scan(notice("dhl.de", TRACK, passed("mx.google.com", "dhl.de")))
    assert out.verdict.action is Action.ACCEPT
    assert out.verdict.bulk_level is not None
    assert out.result.has("BRAND_AUTHENTICATED") and out.result.has("UPSTREAM_DMARC_PASS")
    # The text models read this notice as spam-like (that is the point of the fixture); the
    # gate withdraws their score and says why.
    topic = sum(s.score for s in out.result.symbols if s.group in ("content", "deep"))
    assert topic > 0
    gate = out.result.get("EVIDENCE_CONSISTENT")
    assert gate is not None and "authenticated for dhl.de" in gate.reason
    assert gate.score == -topic


async def test_same_text_from_a_lookalike_domain_is_caught_as_phishing():
    out = await scan(notice("dhl-paket-info.xyz", "http://45.9.12.3/dhl/verfolgen",
                            passed("mx.google.com", "dhl-paket-info.xyz")),
                     mail_from="bounce@dhl-paket-info.xyz")
    assert out.verdict.action in (Action.QUARANTINE, Action.REJECT)
    assert out.verdict.category is Category.PHISHING
    assert not out.result.has("EVIDENCE_CONSISTENT")
    brand = out.result.get("PHISH_BRAND_DISPLAY_NAME")
    assert brand is not None and "45.9.12.3" in brand.reason  # says which evidence decided


async def test_forged_authentication_results_from_an_untrusted_server_is_ignored():
    forged = passed("mx.attacker.example", "dhl.de")  # claims DHL passed, from anyone
    out = await scan(notice("dhl.de", TRACK, forged), trusted=("mx.google.com",))
    assert not out.result.has("UPSTREAM_DMARC_PASS")
    assert not out.result.has("BRAND_AUTHENTICATED")
    assert out.result.has("UPSTREAM_UNTRUSTED_AUTHRES")
    assert out.result.facts.auth is None  # nothing believed


def order(domain: str, link: str) -> bytes:
    """A German shop's order confirmation, no bulk markers, no brand of the brand table."""
    html = ("<p>Guten Tag Herr Schmidt,</p><p>vielen Dank für Ihre Bestellung. Ihr Paket wurde "
            "heute an den Versand übergeben und ist in zwei Werktagen bei Ihnen. Bitte prüfen "
            "Sie Ihre Lieferadresse in Ihrem Kundenkonto.</p>"
            f'<p><a href="{link}">Bestellung ansehen</a></p><p>Ihr Buchladen Müller</p>')
    return make_email(
        sender=f"Buchladen Müller <bestellung@{domain}>",
        subject="Ihre Bestellung 40213 wurde versandt", html=html, headers={
            "DKIM-Signature": f"v=1; a=rsa-sha256; d={domain}; s=s1; h=from; bh=x; b=y"})


async def test_a_shops_own_german_order_confirmation_is_delivered():
    # The text models read German itself as phishing (the bundled corpora's German mail is
    # nearly all phishing); for a sender shown consistent the gate withdraws their word.
    out = await scan(order("buchladen-mueller.de",
                           "https://www.buchladen-mueller.de/konto/bestellungen/40213"),
                     trusted=(), mail_from="bestellung@buchladen-mueller.de")
    assert out.verdict.action is Action.ACCEPT
    topic = sum(s.score for s in out.result.symbols if s.group in ("content", "deep"))
    gate = out.result.get("EVIDENCE_UNFAMILIAR_LANGUAGE")
    assert topic > 5 and gate is not None and gate.score == -topic
    assert "written in German" in gate.reason


async def test_the_same_order_text_linking_to_a_bare_ip_is_held():
    out = await scan(order("buchladen-mueller-konto.com", "http://45.9.12.3/konto/login"),
                     trusted=(), mail_from="bestellung@buchladen-mueller-konto.com")
    assert out.verdict.action in (Action.QUARANTINE, Action.REJECT)
    assert not out.result.has("EVIDENCE_UNFAMILIAR_LANGUAGE")
    assert out.result.has("URL_IP_HOST")


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'mailmoat.db'}")
    database.create_schema()
    yield database
    database.dispose()


BOUNCE = """\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: alice@example.test
Subject: Delivery Status Notification (Failure)
Message-ID: <bounce-1@mx.google.com>
Date: Sat, 28 Nov 2026 10:05:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

Your message wasn't delivered to carol@partner.test because the address couldn't be found.
Please verify your account details and the address, then try again.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com

Final-Recipient: rfc822; carol@partner.test
Action: failed
Status: 5.1.1

--B1
Content-Type: message/rfc822

From: Alice <alice@example.test>
To: carol@partner.test
Subject: Invoice 2026-114: payment due, please confirm your bank details
Message-ID: <out-7@example.test>

Please find the invoice attached and confirm your bank details for the transfer.

--B1--
""".replace("\n", "\r\n").encode()


async def test_genuine_bounce_of_our_own_outbound_mail_is_delivered(db):
    env = Envelope(mail_from="alice@example.test", rcpt_tos=("carol@partner.test",),
                   direction=Direction.OUTBOUND, received_at=time.time())
    data = message_log_data(mailmoat_id="mm-out-7", envelope=env, outcome=None)
    data["message_id"] = "<out-7@example.test>"
    with db.session() as s:
        write_message(s, data)
    out = await scan(BOUNCE, mail_from="", database=db, trusted=())
    assert out.result.facts.bulk is not None and out.result.facts.bulk.own_dsn
    assert out.verdict.action is Action.ACCEPT
    assert not out.result.has("BULK_BACKSCATTER")


async def test_forged_bounce_claiming_our_mail_is_not_waved_through(db):
    out = await scan(BOUNCE, mail_from="", database=db, trusted=())  # the log knows nothing
    assert out.result.has("BULK_BACKSCATTER")
    assert not (out.result.facts.bulk and out.result.facts.bulk.own_dsn)
    assert not out.result.has("EVIDENCE_CONSISTENT")
