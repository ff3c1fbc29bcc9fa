"""The language of a message (message/language.py), which the evidence gate compares with
what the content models were trained on."""

from __future__ import annotations

from mailmoat.message.language import language_of, language_of_text
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message


def test_common_languages_of_mail_are_told_apart():
    assert language_of_text("Vielen Dank für Ihre Bestellung. Wir haben Ihr Paket heute an "
                            "DHL übergeben, es kommt morgen bei Ihnen an.") == "de"
    assert language_of_text("Thank you for your order. We handed your parcel to the carrier "
                            "today and it will arrive tomorrow.") == "en"
    assert language_of_text("ご注文ありがとうございます。本日、商品を発送いたしました。"
                            "明日お届けの予定です。") == "ja"
    assert language_of_text("感谢您的订购。您的包裹已于今天交给快递公司，预计明天送达。") == "zh"
    assert language_of_text("Obrigado pela sua compra. O seu pedido foi enviado hoje e "
                            "chegará amanhã.") == "pt"


def test_too_little_text_or_no_language_says_nothing():
    assert language_of_text("OK") == ""
    assert language_of_text("https://x.test/a 12345 67890 !!! ---") == ""
    assert language_of_text("") == ""


def test_a_message_is_read_once_from_subject_and_body():
    raw = (b"From: a@shop.test\r\nTo: b@example.test\r\nSubject: Ihre Bestellung\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n"
           b"<p>Vielen Dank f\xc3\xbcr Ihren Einkauf. Ihre Bestellung wird heute versandt "
           b"und ist in zwei Tagen bei Ihnen.</p>\r\n")
    msg = parse_message(raw, Envelope(mail_from="a@shop.test", rcpt_tos=()))
    assert language_of(msg) == "de"
    msg.derived["language"] = "xx"  # cached: the second reading is the first one's
    assert language_of(msg) == "xx"


def test_hostile_text_gets_an_answer_not_an_error():
    # Undecodable bytes survive parsing as lone surrogates; NULs and huge bodies happen.
    assert language_of_text("Vielen Dank für Ihre Bestellung \udcff\udcfe " * 10) == "de"
    assert language_of_text("\x00" * 100 + "Thank you for your order, it ships today.") == "en"
    assert isinstance(language_of_text("Bestellung " * 500_000), str)  # reads 2,000 characters
