"""The `impersonation` (BEC) family on messages built here, and honest mail that must stay clean."""

from __future__ import annotations

import pytest

from mailmoat.message.parse import parse_message
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult
from mailmoat.scan.facts import SenderMemoryFacts
from mailmoat.scan.impersonation import build as build_bec
from mailmoat.scan.impersonation import name_key, payment_language
from mailmoat.scan.pipeline import Pipeline
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

BEC = {"vips": ["Jane Smith <jane.smith@example.test>"],
       "protected_domains": ["example.test", "partner.test"],
       "internal_users": ["Bob Jones <bob.jones@example.test>", "Li Wei"]}


def cfg(**extra):
    return make_config(bec={**BEC, **extra})


def bec_symbols(outcome) -> set[str]:
    return {n for n in symbol_names(outcome) if n.startswith("BEC_")}


def reason(outcome, name: str) -> str:
    sym = outcome.result.get(name)
    assert sym is not None, f"{name} not in {symbol_names(outcome)}"
    return sym.reason


class _FirstContact(Check):
    """Stands in for the reputation family's sender memory: it runs in stage 0 and leaves
    the same fact the real one leaves."""

    name = "first_contact_fact"
    family = "first_contact_fact"
    symbols = {}

    async def run(self, msg, result: ScanResult) -> None:
        result.facts.sender_memory = SenderMemoryFacts(sender="someone@elsewhere.test")


async def scan_with_first_contact(raw: bytes, config) -> ScanResult:
    checks = build_bec(BuildContext(config=config, network=False))
    assert checks[0].stage >= 1
    pipeline = Pipeline([_FirstContact(), *checks])
    return await pipeline.scan(parse_message(raw))


async def test_vip_display_name_with_freemail_address():
    out = await scan_bytes(make_email(sender="Jane Smith <jane.smith.ceo@gmail.com>",
                                      subject="Quick favour",
                                      body="Are you at your desk? I need you to buy gift cards "
                                           "for a client today. Keep this confidential."), cfg())
    assert reason(out, "BEC_VIP_IMPERSONATION") == (
        "display name 'Jane Smith' matches VIP jane.smith@example.test but the address is "
        "jane.smith.ceo@gmail.com")
    assert "free-mail address jane.smith.ceo@gmail.com" in reason(out, "BEC_FREEMAIL_INTERNAL_NAME")
    assert "gift-card" in reason(out, "BEC_PAYMENT_LANGUAGE")
    assert out.result.has("BEC_COMBINED")
    assert out.result.category is Category.BEC
    assert out.verdict.action.severity >= 1


async def test_vip_name_reordered_and_homoglyphs_still_match():
    assert name_key("Smith, Jane") == name_key("jane SMITH") == name_key("Jаne Smith")  # Cyrillic а
    out = await scan_bytes(make_email(sender='"Smith, Jane" <ceo.office@mailbox-ceo.test>'), cfg())
    assert out.result.has("BEC_VIP_IMPERSONATION")


async def test_internal_user_name_from_external_address():
    out = await scan_bytes(make_email(sender="Bob Jones <bob@consultants.test>"), cfg())
    assert reason(out, "BEC_INTERNAL_NAME_EXTERNAL") == (
        "display name 'Bob Jones' is internal person bob.jones@example.test but the address "
        "bob@consultants.test is external")


async def test_freemail_sender_with_internal_name_without_address_configured():
    out = await scan_bytes(make_email(sender="Li Wei <liwei1988@163.com>"), cfg())
    assert reason(out, "BEC_FREEMAIL_INTERNAL_NAME") == \
        "free-mail address liwei1988@163.com uses the name of internal person Li Wei"


@pytest.mark.parametrize("domain,how", [
    ("examp1e.test", "uses look-alike characters for example"),
    ("exarnple.test", "uses look-alike characters for example"),
    ("example-test.com", "splits up example.test"),
    ("xn--exmple-4nf.test", "uses look-alike characters for example"),  # exаmple.test (Cyrillic а)
    ("partner.co", "copies the name of partner.test"),
])
async def test_lookalike_sender_domains(domain, how):
    out = await scan_bytes(make_email(sender=f"Accounts <ap@{domain}>"), cfg())
    assert how in reason(out, "BEC_LOOKALIKE_DOMAIN")


async def test_replyto_diversion_to_freemail():
    out = await scan_bytes(make_email(sender="Billing <billing@supplier.test>",
                                      headers={"Reply-To": "supplier.billing@outlook.com"},
                                      body="Please update our bank details before the next "
                                           "payment; the invoice attached is overdue."), cfg())
    assert reason(out, "BEC_REPLYTO_FREEMAIL") == (
        "From is billing@supplier.test but replies go to free-mail address "
        "supplier.billing@outlook.com")
    assert "BEC_REPLYTO_FREEMAIL" in reason(out, "BEC_COMBINED")


async def test_return_path_freemail():
    raw = make_email(sender="CFO <cfo@supplier.test>")
    out = await scan_bytes(raw, cfg(), mail_from="cfo.supplier@gmail.com")
    assert "envelope sender is free-mail address cfo.supplier@gmail.com" in \
        reason(out, "BEC_RETURN_PATH_FREEMAIL")


async def test_chinese_payment_language_with_first_contact():
    raw = make_email(sender="王总 <wang.boss@new-supplier.test>", subject="紧急：银行账户变更",
                     body="您好，我司银行账户变更，请今天之内将货款汇款到新账户，尽快处理。")
    topics, phrases = payment_language("请尽快汇款，银行账户变更，工资，礼品卡")
    assert topics == ["payment", "bank-change", "gift-card", "payroll", "urgency"]
    result = await scan_with_first_contact(raw, cfg())
    assert "has not written to this recipient before and talks about payment, bank-change" in \
        result.get("BEC_FIRST_CONTACT_PAYMENT").reason
    assert result.has("BEC_COMBINED")
    assert result.category is Category.BEC


async def test_payment_language_without_first_contact_or_other_sign_is_quiet():
    raw = make_email(sender="Accounts <ap@supplier.test>", subject="Invoice 4411",
                     body="Hello, the invoice attached is for October. Payment details as usual.")
    out = await scan_bytes(raw, cfg())
    assert not out.result.has("BEC_COMBINED")
    assert out.result.score < 1


async def test_thread_hijack_reply_without_thread():
    out = await scan_bytes(make_email(subject="RE: outstanding invoice",
                                      sender="Accounts <ap@supplier.test>",
                                      body="Kindly see the updated payment details below."), cfg())
    assert reason(out, "BEC_THREAD_HIJACK") == ("subject 'RE: outstanding invoice' claims to be a "
                                                "reply but the message has no In-Reply-To or "
                                                "References")
    out = await scan_bytes(make_email(subject="回复: 合同", sender="x <x@supplier.test>",
                                      body="请查收"), cfg())
    assert out.result.has("BEC_THREAD_HIJACK")


async def test_display_name_showing_another_address():
    out = await scan_bytes(make_email(sender='"jane.smith@example.test" <x7@mailer.biz>'), cfg())
    sym = out.result.get("BEC_DISPLAY_NAME_ADDRESS")
    assert sym.reason == "display name shows jane.smith@example.test but the address is x7@mailer.biz"
    assert sym.score == 2.0  # the shown address is one of ours


# -- honest mail ---------------------------------------------------------------------------

async def test_vip_writing_from_own_domain_is_clean():
    out = await scan_bytes(make_email(sender="Jane Smith <jane.smith@example.test>",
                                      subject="Payroll run",
                                      body="Please release the payment for payroll today, urgent."),
                           cfg(), mail_from="jane.smith@example.test")
    assert not {n for n in symbol_names(out) if n.startswith(("BEC_", "URL_", "PHISH_"))}
    assert out.result.category is Category.CLEAN


async def test_lookalike_envelope_sender():
    out = await scan_bytes(make_email(sender="Accounts <ap@supplier.test>"), cfg(),
                           mail_from="bounce@examp1e.test")
    assert "envelope sender domain examp1e.test uses look-alike characters for example" in \
        reason(out, "BEC_LOOKALIKE_DOMAIN")


async def test_normal_reply_thread_is_clean():
    out = await scan_bytes(make_email(
        subject="Re: meeting notes", sender="Carol <carol@lawfirm.test>",
        headers={"In-Reply-To": "<abc@example.test>", "References": "<abc@example.test>"},
        body="Thanks, see below.\n\n> Here are the notes\n"), cfg())
    assert not bec_symbols(out)


async def test_reply_quoting_the_original_without_thread_headers_is_clean():
    out = await scan_bytes(make_email(subject="Re: lunch", sender="Dan <dan@friends.test>",
                                      body="Sure!\n\nOn Monday Bob wrote:\n> lunch?\n"), cfg())
    assert not bec_symbols(out)


async def test_mailing_list_reply_to_is_not_diversion():
    out = await scan_bytes(make_email(
        sender="Poster via users <users@lists.project.test>",
        headers={"Reply-To": "poster@gmail.com", "List-Id": "<users.lists.project.test>"},
        body="Has anyone seen this?"), cfg())
    assert not bec_symbols(out)


async def test_reply_to_the_list_address_in_to_is_not_diversion():
    out = await scan_bytes(make_email(sender="Ann <ann@uni.test>", to="devel@lists.project.test",
                                      headers={"Reply-To": "devel@lists.project.test"}), cfg())
    assert not bec_symbols(out)


async def test_disabled_family_builds_nothing():
    assert build_bec(BuildContext(config=make_config(bec={"enabled": False}))) == []


async def test_internal_names_from_the_message_log(tmp_path):
    from datetime import datetime, timezone

    from mailmoat.store.db import Database
    from mailmoat.store.models import MessageRow

    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    db.create_schema()
    with db.session() as s:
        for i, (direction, header) in enumerate([
                ("outbound", "Maria Garcia <maria.garcia@example.test>"),
                ("inbound", "Eve Outsider <eve@elsewhere.test>")]):
            s.add(MessageRow(id=f"m{i}", received_at=datetime.now(timezone.utc),
                             direction=direction, from_header=header, action="accept",
                             category="clean"))
    try:
        config = make_config()
        checks = build_bec(BuildContext(config=config, network=False, database=db))
        pipeline = Pipeline(checks)
        r = await pipeline.scan(parse_message(make_email(sender="Maria Garcia <mg@yahoo.com>")))
        assert "internal person Maria Garcia" in r.get("BEC_FREEMAIL_INTERNAL_NAME").reason
        r = await pipeline.scan(parse_message(make_email(sender="Eve Outsider <eve@gmail.com>")))
        assert not r.symbols  # inbound senders are not internal people
    finally:
        db.dispose()


async def test_replyto_from_one_freemail_mailbox_to_another_persons():
    raw = make_email(sender="David Thule <bensonmike278@gmail.com>",
                     headers={"Reply-To": "davidthule01@gmail.com"}, body="Can we talk?")
    out = await scan_bytes(raw, cfg())
    assert reason(out, "BEC_REPLYTO_FREEMAIL") == (
        "From is free-mail address bensonmike278@gmail.com but replies go to another free-mail "
        "mailbox, davidthule01@gmail.com")


async def test_replyto_to_the_same_persons_other_freemail_is_not_diversion():
    raw = make_email(sender="Lalitha <lalithaviswanath@yahoo.com>",
                     headers={"Reply-To": "lalitha.viswanath@gmail.com"}, body="See you at 5.")
    out = await scan_bytes(raw, cfg())
    assert not bec_symbols(out)


LETTER_419 = ("Dear Beloved,\nI am Mrs Maria Clennett, a philanthropist. I was diagnosed with "
              "cancer and have bequeathed the sum of £1,963,920.00 to you as a donation for "
              "charity. Reply to claim it.\n")


async def test_advance_fee_letter_with_freemail_reply_to():
    raw = make_email(sender="Maria <maria@university.test>", subject="Financial Donation",
                     headers={"Reply-To": "mclendesk@gmail.com"}, body=LETTER_419)
    out = await scan_bytes(raw, cfg())
    r = reason(out, "FRAUD_ADVANCE_FEE")
    assert "'bequeathed'" in r and "'£1,963,920'" in r and "replies go to free-mail" in r
    assert out.result.has("BEC_REPLYTO_FREEMAIL")
    assert out.result.score >= 5


async def test_advance_fee_contact_address_in_the_body():
    body = ("I am a barrister. My late client left an inheritance of US$15,800,000 with no next "
            "of kin. Contact me at barr.james.office@outlook.com to claim it.\n")
    out = await scan_bytes(make_email(sender="James <j@lawfirm.test>", body=body), cfg())
    assert "body address barr.james.office@outlook.com" in reason(out, "FRAUD_ADVANCE_FEE")


async def test_windfall_news_from_an_organisation_is_not_fraud():
    # A charity's newsletter names donations and millions, but replies stay with it.
    body = ("Thanks to your donation we raised $2,500,000 for cancer research this year; a "
            "bequest from the late Dr. Smith's estate added 1.2 million. Write to "
            "giving@charity.test.\n")
    out = await scan_bytes(make_email(sender="Charity <news@charity.test>", body=body), cfg())
    assert not out.result.has("FRAUD_ADVANCE_FEE")
    # …and a friend on free-mail mentioning one windfall word and a sum is not enough either.
    out = await scan_bytes(make_email(sender="Kim <kim1980@yahoo.com>",
                                      body="The lottery jackpot is 500 million now, want in?"),
                           cfg())
    assert not out.result.has("FRAUD_ADVANCE_FEE")


def test_bitcoin_address_checksums():
    from mailmoat.scan.impersonation import valid_bitcoin_address

    assert valid_bitcoin_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")  # base58check, P2PKH
    assert valid_bitcoin_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy")  # P2SH
    assert valid_bitcoin_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")  # bech32
    assert not valid_bitcoin_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb")  # one char off
    assert not valid_bitcoin_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdx")
    assert not valid_bitcoin_address("376a7e8a9d5ef623d9f742c46b6731d2")  # a hash, not base58


SEXTORTION = ("This is my last warning. I attached a trojan on the porn site you viewed; it "
              "switched on your camera and recorded you. I will erase the video if you transfer "
              "900 USD in bitcoin to 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa. You have 36 hours.\n")


async def test_sextortion_with_a_valid_bitcoin_address():
    out = await scan_bytes(make_email(sender="Hacker <x@random.test>", body=SEXTORTION), cfg())
    r = reason(out, "FRAUD_EXTORTION")
    assert "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa" in r and "'36 hours'" in r
    # The same letter with a mistyped (invalid) address, or a donation page naming a
    # Bitcoin address without threats, does not fire.
    bad = SEXTORTION.replace("DivfNa", "DivfNb")
    out = await scan_bytes(make_email(sender="Hacker <x@random.test>", body=bad), cfg())
    assert not out.result.has("FRAUD_EXTORTION")
    donate = ("Support the project: bitcoin 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa. The release video "
              "is on the website.\n")
    out = await scan_bytes(make_email(sender="Project <news@project.test>", body=donate), cfg())
    assert not out.result.has("FRAUD_EXTORTION")


async def test_reply_to_my_private_email():
    body = ("My principal can manage investment funds with good returns. Kindly reply to my "
            "private\r\nemail (david.t01@gmail.com), if you are capable and trustworthy.\n")
    out = await scan_bytes(make_email(sender="David <bensonmike278@gmail.com>", body=body), cfg())
    r = reason(out, "FRAUD_PRIVATE_CHANNEL")
    assert "'my private email' david.t01@gmail.com" in r and "bensonmike278@gmail.com" in r


@pytest.mark.parametrize("sender, body", [
    # the "private" address is the sender's own
    ("David <david.t01@gmail.com>", "Reply to my private email david.t01@gmail.com.\n"),
    # a personal address at an organisation, not free-mail
    ("Ann <ann@corp.test>", "From Monday use my personal email ann@ann-family.test.\n"),
    # free-mail address, but nobody asks for a private channel
    ("Ann <ann@corp.test>", "Bob's address is bob1990@gmail.com if you need him.\n"),
])
async def test_no_private_channel_without_the_request(sender, body):
    out = await scan_bytes(make_email(sender=sender, body=body), cfg())
    assert not out.result.has("FRAUD_PRIVATE_CHANNEL")
