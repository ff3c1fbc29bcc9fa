"""The bulk family: newsletters, notifications, bounces and invitations as typed facts."""

from __future__ import annotations

import time

import pytest

from mailmoat.config import Config
from mailmoat.message.model import Direction, Envelope
from mailmoat.message.parse import parse_message
from mailmoat.scan.base import BuildContext, Category, ScanResult
from mailmoat.scan.bulk import SYMBOLS, BulkCheck, build, load_esp_table
from mailmoat.scan.engine import Scanner, ScanOutcome
from mailmoat.scan.facts import AuthFacts
from mailmoat.store.db import Database
from mailmoat.store.log import message_log_data, write_message
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

BULK = set(SYMBOLS)


def mailchimp_newsletter() -> bytes:
    return make_email(
        sender="Shop News <news@shop.test>", subject="Our spring sale",
        html="<p>Spring sale: 20% off everything.</p>",
        headers={
            "Return-Path": "<bounce-mc.us5_123.456-bob=example.test@mail12.atl11.mcsv.net>",
            "Received": "from mail12.atl11.mcsv.net (mail12.atl11.mcsv.net [198.2.139.12]) "
                        "by mx.example.test with ESMTPS; Sat, 28 Nov 2026 10:00:00 +0000",
            "DKIM-Signature": "v=1; a=rsa-sha256; c=relaxed/relaxed; d=mcsv.net; s=k3; h=From; "
                              "bh=x; b=y",
            "List-Unsubscribe": "<https://shop.us5.list-manage.com/unsubscribe?u=1&id=2>, "
                                "<mailto:unsubscribe-mc.us5_1@mailchimpapp.net?subject=unsub>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Shop News <abc123.list-id.mcsv.net>",
            "X-MC-User": "abc123",
            "Feedback-ID": "123456:123456.789:us5:mc",
        })


def postmark_receipt() -> bytes:
    return make_email(
        sender="Shop <receipts@shop.test>", subject="Your receipt #1042",
        body="Thank you for your order. Total: 42.00 EUR\n",
        headers={
            "Return-Path": "<pm_bounces@pm-bounces.shop.test>",
            "Received": "from sc-ord-mta117.mtasv.net (sc-ord-mta117.mtasv.net [50.31.156.117]) "
                        "by mx.example.test; Sat, 28 Nov 2026 10:00:00 +0000",
            "DKIM-Signature": "v=1; a=rsa-sha256; d=pm.mtasv.net; s=pm; bh=x; b=y",
            "X-PM-Message-Id": "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
        })


def ses_receipt() -> bytes:
    return make_email(
        sender="Parcel Service <no-reply@parcel.test>", subject="Your parcel is on its way",
        body="Your parcel 00340434 will arrive tomorrow.\n",
        headers={
            "Return-Path": "<010001901234abcd-1111-2222@eu-west-1.amazonses.com>",
            "DKIM-Signature": "v=1; a=rsa-sha256; d=parcel.test; s=ses; bh=x; b=y",
            "Feedback-ID": "1.eu-west-1.abcdefghijk=:AmazonSES",
            "X-SES-Outgoing": "2026.11.28-54.240.4.5",
        })


def dsn(original_from: str = "Alice <alice@example.test>",
        message_id: str = "<out-1@example.test>", returned: str = "message/rfc822") -> bytes:
    """An RFC 3464 bounce of a message `original_from` sent, as Postfix writes it; the
    original comes back whole (message/rfc822) or as its headers (text/rfc822-headers)."""
    return f"""\
From: MAILER-DAEMON@mx.partner.test (Mail Delivery System)
To: alice@example.test
Subject: Undelivered Mail Returned to Sender
Date: Sat, 28 Nov 2026 10:05:00 +0000
Message-ID: <bounce-1@mx.partner.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.partner.test

Final-Recipient: rfc822; carol@partner.test
Action: failed
Status: 5.1.1

--B1
Content-Type: {returned}

From: {original_from}
To: carol@partner.test
Subject: Quarterly figures
Message-ID: {message_id}

Figures attached.

--B1--
""".encode()


def calendar_request() -> bytes:
    ics = ("BEGIN:VCALENDAR\r\nPRODID:-//Test//EN\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n"
           "BEGIN:VEVENT\r\nUID:1@partner.test\r\nDTSTART:20261201T100000Z\r\n"
           "SUMMARY:Project review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()
    return make_email(sender="Carol <carol@partner.test>", subject="Invitation: Project review",
                      body="You have been invited.\n",
                      attachments=[("invite.ics", "text/calendar", ics)])


async def scan_with(raw: bytes, config: Config | None = None, *, mail_from: str = "",
                    database: Database | None = None) -> ScanOutcome:
    scanner = Scanner(BuildContext(config=config or make_config(), network=False,
                                   database=database))
    try:
        env = Envelope(mail_from=mail_from, rcpt_tos=("alice@example.test",),
                       direction=Direction.INBOUND)
        return await scanner.scan(raw, env)
    finally:
        await scanner.close()


def log_outbound(db: Database, message_id: str) -> None:
    """Log a message our user sent, the way the gateway's message log records it."""
    env = Envelope(mail_from="alice@example.test", rcpt_tos=("carol@partner.test",),
                   direction=Direction.OUTBOUND, received_at=time.time())
    data = message_log_data(mailmoat_id="mm-out-1", envelope=env, outcome=None)
    data["message_id"] = message_id
    with db.session() as s:
        write_message(s, data)


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'mailmoat.db'}")
    database.create_schema()
    yield database
    database.dispose()


async def test_one_click_mailchimp_newsletter():
    out = await scan_bytes(mailchimp_newsletter(),
                           mail_from="bounce-mc.us5_123@mail12.atl11.mcsv.net")
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "newsletter"
    assert bulk.esp == "Mailchimp"
    assert "one-click unsubscribe (RFC 8058)" in bulk.markers
    assert any(m.startswith("List-Id <abc123.list-id.mcsv.net>") for m in bulk.markers)
    assert {"BULK_NEWSLETTER", "BULK_ESP"} <= symbol_names(out)
    esp = out.result.get("BULK_ESP")
    assert esp is not None and esp.options == ("Mailchimp",)
    assert "DKIM-Signature claims d=mcsv.net" in esp.reason  # not verified: a claim
    assert out.result.score == 0  # information only: the facts are for the evidence gate


async def test_verified_signature_is_said_so():
    check = build(BuildContext(make_config(), network=False))[0]
    msg = parse_message(mailchimp_newsletter(), Envelope(mail_from="", rcpt_tos=()))
    result = ScanResult(specs=SYMBOLS)
    result.facts.auth = AuthFacts(source="gateway", dkim_pass=("mcsv.net",))
    await check.run(msg, result)
    assert result.facts.bulk is not None
    assert any("signed by mcsv.net (verified)" in m for m in result.facts.bulk.markers)


async def test_failed_signature_is_no_evidence():
    raw = make_email(headers={"DKIM-Signature": "v=1; d=sendgrid.net; s=s1; bh=x; b=y",
                              "List-Unsubscribe": "<mailto:leave@sender.test>"})
    msg = parse_message(raw, Envelope(mail_from="alice@sender.test", rcpt_tos=()))
    result = ScanResult(specs=SYMBOLS)
    result.facts.auth = AuthFacts(source="gateway", dkim_fail=("sendgrid.net",))
    await BulkCheck(load_esp_table(), ("example.test",)).run(msg, result)
    assert result.facts.bulk is None  # List-Unsubscribe alone, the forged ESP claim dropped


@pytest.mark.parametrize("raw,esp", [(postmark_receipt(), "Postmark"),
                                     (ses_receipt(), "Amazon SES")])
async def test_transactional_receipts_are_notifications(raw, esp):
    out = await scan_bytes(raw, mail_from="")
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "notification" and bulk.esp == esp
    assert {"BULK_NOTIFICATION", "BULK_ESP"} <= symbol_names(out)


@pytest.mark.parametrize("returned", ["message/rfc822", "text/rfc822-headers"])
async def test_own_dsn_when_the_log_knows_the_message(db, returned):
    log_outbound(db, "<out-1@example.test>")
    out = await scan_with(dsn(returned=returned), database=db)
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "dsn" and bulk.own_dsn
    assert {"BULK_DSN", "BULK_OWN_DSN"} <= symbol_names(out)
    assert "BULK_BACKSCATTER" not in symbol_names(out)
    assert any("failed 5.1.1" in m for m in bulk.markers)


async def test_backscatter_when_the_log_does_not(db):
    log_outbound(db, "<other@example.test>")
    out = await scan_with(dsn(message_id="<forged-9@example.test>"), database=db)
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "dsn" and not bulk.own_dsn
    sym = out.result.get("BULK_BACKSCATTER")
    assert sym is not None and sym.score == 3.0 and sym.category is Category.SPAM
    assert "BULK_OWN_DSN" not in symbol_names(out)


async def test_own_dsn_needs_the_null_sender(db):
    log_outbound(db, "<out-1@example.test>")
    out = await scan_with(dsn(), mail_from="postmaster@partner.test", database=db)
    assert out.result.facts.bulk is not None and not out.result.facts.bulk.own_dsn
    assert not {"BULK_OWN_DSN", "BULK_BACKSCATTER"} & symbol_names(out)


async def test_dsn_without_a_database_says_the_log_was_not_checked():
    out = await scan_with(dsn())
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "dsn" and not bulk.own_dsn
    assert any("could not check" in m for m in bulk.markers)
    assert not {"BULK_OWN_DSN", "BULK_BACKSCATTER"} & symbol_names(out)


async def test_dsn_of_someone_elses_mail_is_a_plain_dsn(db):
    out = await scan_with(dsn(original_from="dave@elsewhere.test"), database=db)
    assert out.result.facts.bulk is not None and out.result.facts.bulk.kind == "dsn"
    assert symbol_names(out) & BULK == {"BULK_DSN"}


async def test_qmail_bounce_is_a_dsn(db):
    log_outbound(db, "<out-1@example.test>")
    body = ("Hi. This is the qmail-send program at mx.partner.test.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
            "<carol@partner.test>:\nSorry, no mailbox here by that name.\n\n"
            "--- Below this line is a copy of the message.\n\n"
            "From: Alice <alice@example.test>\nTo: carol@partner.test\n"
            "Message-ID: <out-1@example.test>\nSubject: Quarterly figures\n\nFigures.\n")
    raw = make_email(sender="MAILER-DAEMON@mx.partner.test", subject="failure notice", body=body)
    out = await scan_with(raw, database=db)
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "dsn" and bulk.own_dsn


async def test_read_receipt_is_a_dsn():
    mdn = b"""\
From: carol@partner.test
To: alice@example.test
Subject: Read: Quarterly figures
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="M1"

--M1
Content-Type: text/plain

Your message was displayed.

--M1
Content-Type: message/disposition-notification

Final-Recipient: rfc822; carol@partner.test
Original-Message-ID: <out-1@example.test>
Disposition: manual-action/MDN-sent-manually; displayed

--M1--
"""
    out = await scan_with(mdn)
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "dsn"
    assert any("read receipt" in m for m in bulk.markers)


async def test_calendar_request():
    out = await scan_bytes(calendar_request())
    bulk = out.result.facts.bulk
    assert bulk is not None and bulk.kind == "calendar"
    assert "BULK_CALENDAR" in symbol_names(out)


async def test_personal_message_is_not_bulk():
    out = await scan_bytes(make_email(headers={
        "DKIM-Signature": "v=1; a=rsa-sha256; d=sender.test; s=s1; bh=x; b=y"}))
    assert out.result.facts.bulk is None
    assert not symbol_names(out) & BULK


@pytest.mark.parametrize("headers", [
    {"Precedence": "bulk"},
    {"Precedence": "bulk", "DKIM-Signature": "v=1; d=cheap-pills.test; s=a; bh=x; b=y"},
])
async def test_weak_signs_alone_are_not_bulk(headers):
    raw = make_email(sender="Best Deals <noreply@cheap-pills.test>", subject="V1agra 80% off",
                     body="Buy now at http://cheap-pills.test/\n", headers=headers)
    out = await scan_bytes(raw, mail_from="noreply@cheap-pills.test")
    assert out.result.facts.bulk is None
    assert not symbol_names(out) & BULK


def test_disabled_family_builds_nothing():
    assert build(BuildContext(make_config(bulk={"enabled": False}), network=False)) == []


def test_extra_esp_file_extends_the_table(tmp_path):
    extra = tmp_path / "esp.toml"
    extra.write_text('[[esp]]\nname = "Local Mailer"\ndkim = ["lists.local.test"]\n')
    check = build(BuildContext(make_config(bulk={"esp_file": str(extra)}), network=False))[0]
    assert isinstance(check, BulkCheck)
    assert check.table.esps[-1].name == "Local Mailer"
    assert any(e.name == "Mailchimp" for e in check.table.esps)



async def test_dmarc_and_tls_reports_are_notifications():
    dmarc = make_email(
        sender="noreply-dmarc-support@google.com",
        subject="Report domain: example.test Submitter: google.com Report-ID: 9493488660",
        body="This is an aggregate report from google.com.\n",
        attachments=[("google.com!example.test!1725321600!1725407999.zip", "application/zip",
                      b"PK\x03\x04 not really a zip")])
    tls = make_email(sender="noreply-smtp-tls-reporting@google.com",
                     subject="Report Domain: example.test Submitter: google.com",
                     body="This is an SMTP TLS report.\n",
                     headers={"TLS-Report-Domain": "example.test",
                              "TLS-Report-Submitter": "google.com"})
    for raw, what in ((dmarc, "DMARC aggregate report (RFC 7489)"),
                      (tls, "SMTP TLS report (RFC 8460)")):
        out = await scan_bytes(raw, mail_from="")
        bulk = out.result.facts.bulk
        assert bulk is not None and bulk.kind == "notification" and what in bulk.markers
        assert bulk.report == what
    # The subject alone, without the report file, is not enough.
    bare = make_email(subject="Report domain: example.test Submitter: x Report-ID: 1")
    assert (await scan_bytes(bare)).result.facts.bulk is None
