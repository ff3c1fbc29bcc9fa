"""The data-loss detectors: each number's own check, and the near misses that an order
number, a tracking number or a typo make."""

from __future__ import annotations

import io
import zipfile
import zlib
from datetime import date

import pytest

from mailmoat.evaluation.messages import pdf
from mailmoat.internal import dlp

# Issuers' published test numbers: valid by prefix, length and Luhn.
CARDS = ["4111111111111111", "4012888888881881", "4222222222222", "5555555555554444",
         "5105105105105100", "2223003122003222", "378282246310005", "371449635398431",
         "6011111111111117", "6011000990139424", "3530111333300000", "3566002020360505",
         "30569309025904", "38520000023237", "6200000000000005", "4000056655665556"]


@pytest.mark.parametrize("number", CARDS)
def test_issuers_test_cards_are_valid(number):
    assert dlp.card_ok(number)


@pytest.mark.parametrize("number,why", [
    ("4111111111111112", "Luhn fails"),
    ("4111111111111", "Visa of 13 digits, Luhn fails"),
    ("5555555555554440", "Luhn fails"),
    ("378282246310005" + "0", "Amex of 16 digits"),
    ("1234567812345670", "Luhn-valid, but no issuer starts with 1"),
    ("9999999999999995", "Luhn-valid, no issuer"),
    ("0000000000000000", "one digit repeated"),
    ("5555555555554", "Mastercard of 13 digits"),
    ("7111111111111114", "Luhn-valid, no issuer starts with 7"),
])
def test_near_misses_are_not_cards(number, why):
    assert not dlp.card_ok(number), why


def test_cards_in_text_need_usual_groups_or_card_words():
    assert dlp.find_cards("Visa 4111 1111 1111 1111, Amex 3782-822463-10005") == [
        "4111111111111111", "378282246310005"]
    # Mixed separators or odd groups are not how cards are written.
    assert dlp.find_cards("ref 4111-1111 1111-1111 and 41 1111 1111 1111 11") == []
    assert dlp.find_cards("numbers 4111 1111 1111 1112") == []  # Luhn fails
    # A card followed by its security code: the card is still found.
    assert dlp.find_cards("card 5555 5555 5555 4444 123 exp 12/27") == ["5555555555554444"]
    # Bare digits count only where the text speaks of cards.
    assert dlp.find_cards("Your package id 4111111111111111 ships today") == []
    assert dlp.find_cards("Kreditkarte: 4111111111111111") == ["4111111111111111"]
    # Introduced as an order or tracking number: not a card, whatever its digits.
    assert dlp.find_cards("Card on file. Order number: 4111 1111 1111 1111") == []
    assert dlp.find_cards("Card ok; tracking #4111111111111111") == []
    # Part of a longer number, a decimal or a date: not a candidate at all.
    assert dlp.find_cards("card 94111111111111111 and 4111111111111111.5") == []


@pytest.mark.parametrize("iban", [
    "DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
    "NL91ABNA0417164300", "CH9300762011623852957", "NO9386011117947", "BE68539007547034",
    "ES9121000418450200051332", "IT60X0542811101000000123456", "MT84MALT011000012345MTLCAST001S"])
def test_ibans_of_the_registry_examples_are_valid(iban):
    assert dlp.iban_ok(iban)


def test_iban_near_misses():
    assert not dlp.iban_ok("DE89370400440532013001")  # one digit off: mod 97 fails
    assert not dlp.iban_ok("DE8937040044053201300")  # one character short for DE
    assert not dlp.iban_ok("XX89370400440532013000")  # no such country
    assert not dlp.iban_ok("GB82WEST1234569876543Z")
    assert dlp.find_ibans("IBAN: DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX") == [
        "DE89370400440532013000"]
    assert dlp.find_ibans("pay to GB82WEST12345698765432.") == ["GB82WEST12345698765432"]
    # Grouped wrongly, run into the next word, or with a digit changed: none.
    assert dlp.find_ibans("DE89 370 4004 4053 2013 000") == []
    assert dlp.find_ibans("DE89370400440532013000123") == []
    assert dlp.find_ibans("DE89 3704 0044 0532 0130 01") == []


def test_chinese_resident_ids():
    today = date(2026, 1, 1)
    assert dlp.cn_id_ok("11010519491231002X", today)
    assert dlp.cn_id_ok("11010519491231002x", today)  # a lower-case check character
    assert not dlp.cn_id_ok("110105194912310021", today)  # wrong check character
    assert not dlp.cn_id_ok("990105194912310028", today)  # no province 99
    assert not dlp.cn_id_ok("110105194902300020", today)  # 30 February
    assert not dlp.cn_id_ok("110105203001010010", today)  # born in the future
    assert not dlp.cn_id_ok("110105189901010016", today)  # before 1900
    assert dlp.find_cn_ids("身份证号：11010519491231002X。") == ["11010519491231002X"]
    assert dlp.find_cn_ids("订单号 11010519491231002X") == []
    assert dlp.find_cn_ids("911010519491231002X") == []  # part of a longer number


def test_us_social_security_numbers():
    for ok in ("536-22-1234", "536 22 1234", "001-01-0001", "899-99-9999"):
        assert dlp.ssn_ok(ok), ok
    for bad in ("000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "536-00-1234",
                "536-22-0000", "078-05-1120", "123-45-6789"):
        assert not dlp.ssn_ok(bad), bad
    assert dlp.find_ssns("SSN 536-22-1234; 536 22 1235") == ["536221234", "536221235"]
    assert dlp.find_ssns("536-22 1234 and 536-221234") == []  # separators differ
    assert dlp.find_ssns("call 555-123-4567") == []  # a phone number's shape
    # Nine bare digits are anything, except right after "SSN".
    assert dlp.find_ssns("account 536221234") == []
    assert dlp.find_ssns("SSN: 536221234") == ["536221234"]
    assert dlp.find_ssns("Invoice no. 536-22-1234") == []


def test_detect_counts_distinct_numbers_and_masks_them():
    found = dlp.detect(["card 4111 1111 1111 1111 again 4111-1111-1111-1111",
                        "and 5555 5555 5555 4444"], ["card", "iban"])
    assert set(found) == {"card"}
    f = found["card"]
    assert f.count == 2 and f.samples == ("…1111", "…4444")
    assert f.describe() == "2 payment card numbers (Luhn-valid)"
    assert "4111" not in repr(f).replace("…1111", "")
    # A card word in one text is no context for bare digits in another.
    assert dlp.detect(["card", "4111111111111111"], ["card"]) == {}


def _office(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_attachment_text_of_office_files_pdfs_and_text():
    docx = _office({"word/document.xml": "<w:document><w:body><w:p><w:r><w:t>Card 4111 "
                    "1111</w:t></w:r><w:r><w:t> 1111 1111</w:t></w:r></w:p><w:p><w:r><w:t>"
                    "next</w:t></w:r></w:p></w:body></w:document>",
                    "word/media/image1.png": "not text"})
    assert "Card 4111 1111 1111 1111\nnext" in dlp.attachment_text("a.docx", "application/"
                                                                   "octet-stream", "", docx)
    xlsx = _office({"xl/sharedStrings.xml": "<sst><si><t>IBAN</t></si><si><t>DE89 3704 0044 "
                    "0532 0130 00</t></si></sst>"})
    assert dlp.find_ibans(dlp.attachment_text("pay.xlsx", "", "", xlsx)) == [
        "DE89370400440532013000"]
    content = zlib.compress(b"BT /F1 12 Tf 72 720 Td (SSN 536-22-1234) Tj "
                            b"[(Card 4111 11) -20 (11 1111 1111)] TJ ET")
    doc = pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content
               + b"\nendstream"])
    text = dlp.attachment_text("scan.pdf", "application/pdf", "", doc)
    assert dlp.find_ssns(text) == ["536221234"]
    assert dlp.find_cards(text) == ["4111111111111111"]
    assert dlp.attachment_text("list.csv", "text/csv", "", b"name,ssn\na,536-22-1234\n")
    assert dlp.attachment_text("photo.jpg", "image/jpeg", "", b"\xff\xd8\xff") == ""
    assert dlp.attachment_text("broken.docx", "", "", b"PK\x03\x04garbage") == ""
