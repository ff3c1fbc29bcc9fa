"""Data-loss detectors: numbers an administrator does not want to leave the company.

Each detector finds candidates in a text with a regular expression and keeps only those
that pass the number's own check, so an order number, a tracking number or a phone number
that merely has the right count of digits is not counted:

    card   payment card numbers: a known issuer prefix with that issuer's length, and the
           Luhn check digit; written bare (a card word must then appear in the same text)
           or in the usual groups (4-4-4-4, 4-6-5 …) with one kind of separator
    iban   IBANs: a country's own length (the SWIFT registry) and ISO 7064 mod 97-10;
           bare or in groups of four
    cn_id  Chinese resident identity numbers (GB 11643-1999): 18 characters, a province
           code, a real birth date and the ISO 7064 mod 11-2 check character (0-9 or X)
    ssn    US social security numbers: AAA-GG-SSSS (hyphens or spaces) with the SSA's rules
           (area not 000, 666 or 9xx; group not 00; serial not 0000) and none of the
           numbers published as examples; bare nine digits only right after "SSN"

Anything a few words after "order", "tracking", "invoice", "reference" and the like is
ignored, as such numbers are what those words introduce.

What is found is never kept or logged in clear: `Finding.samples` holds masked forms (the
last four characters) and `count` the distinct numbers. The text looked at is the
message's subject and bodies and the text of its attachments that `attachment_text` can
read (text files, Office Open XML and OpenDocument files, simple PDFs), bounded in size.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

DETECTORS = ("card", "iban", "cn_id", "ssn")
NOUNS = {"card": ("payment card number", "payment card numbers"),
         "iban": ("IBAN", "IBANs"),
         "cn_id": ("Chinese resident ID number", "Chinese resident ID numbers"),
         "ssn": ("US social security number", "US social security numbers")}
CHECKS = {"card": "Luhn-valid", "iban": "mod-97-valid", "cn_id": "checksum-valid",
          "ssn": "valid area, group and serial"}

MAX_TEXT = 4_000_000  # characters looked at per message, all its parts together
MAX_ATTACHMENT = 10_000_000  # bytes of one attachment read (compressed)
MAX_MEMBER = 8_000_000  # bytes inflated from one member of an Office file
MAX_SAMPLES = 3

# Words that introduce numbers that are not what the detectors look for.
_NOT_THIS = re.compile(
    r"(?i)(?:\b(?:order|tracking|track|shipment|parcel|consignment|awb|invoice|reference|"
    r"ref|ticket|case|booking|confirmation|customer|serial|part|sku|isbn|imei|phone|tel|"
    r"fax|mobile|bestell\w*|auftrag\w*|rechnung\w*|sendung\w*|commande|facture|pedido|"
    r"factura)|订单|运单|发票|快递|电话)\W{0,6}(?:no\.?|nr\.?|number|num|#|id|号码?|编号)?"
    r"\W{0,4}$")
_CARD_WORDS = re.compile(
    r"(?i)\b(?:card|cards|visa|mastercard|master card|amex|american express|discover|jcb|"
    r"diners|unionpay|maestro|credit|debit|cc|pan|cvv|cvc|expir\w*|exp\.? date|valid thru|"
    r"kreditkarte|karte|carte|tarjeta|cartão|carta|kaart)\b|信用卡|银行卡|卡号|借记卡")
_SSN_WORDS = re.compile(r"(?i)\b(?:ssn|ss#|social security(?: number| no\.?)?)\W{0,6}$")


@dataclass(frozen=True)
class Finding:
    detector: str
    count: int  # distinct valid numbers
    samples: tuple[str, ...]  # masked: "…1111"

    def describe(self) -> str:
        one, many = NOUNS[self.detector]
        return f"{self.count} {one if self.count == 1 else many} ({CHECKS[self.detector]})"


def mask(value: str) -> str:
    """What may be shown of a number: its last four characters."""
    return "…" + value[-4:]


def _before(text: str, start: int, span: int = 40) -> str:
    return text[max(0, start - span):start]


# -- payment cards ------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# (first digits low, high, number of digits compared, lengths): the major issuers' ranges.
_IIN: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),
    (6011, 6011, 4, frozenset(range(16, 20))),  # Discover
    (644, 649, 3, frozenset(range(16, 20))),
    (65, 65, 2, frozenset(range(16, 20))),
    (3528, 3589, 4, frozenset(range(16, 20))),  # JCB
    (300, 305, 3, frozenset(range(14, 20))),  # Diners Club
    (36, 36, 2, frozenset(range(14, 20))),
    (38, 39, 2, frozenset(range(14, 20))),
    (62, 62, 2, frozenset(range(16, 20))),  # UnionPay
    (2200, 2204, 4, frozenset(range(16, 20))),  # Mir
    (5018, 5018, 4, frozenset(range(12, 20))),  # Maestro
    (5020, 5020, 4, frozenset(range(12, 20))),
    (5038, 5038, 4, frozenset(range(12, 20))),
    (5893, 5893, 4, frozenset(range(12, 20))),
    (6304, 6304, 4, frozenset(range(12, 20))),
    (6759, 6759, 4, frozenset(range(12, 20))),
    (6761, 6763, 4, frozenset(range(12, 20))),
)
# How card numbers are printed: group sizes by length (one separator kind throughout).
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1),
                          (4, 4, 4, 4, 2), (4, 4, 4, 4, 1), (4, 4, 4, 3), (4, 4, 4, 2),
                          (4, 4, 4, 4, 4), (6, 13)})
_CARD_CANDIDATE = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){11,18}(?![\w/-]|[.,]\d)")


def issuer_ok(digits: str) -> bool:
    n = len(digits)
    return any(low <= int(digits[:k]) <= high and n in lengths
               for low, high, k, lengths in _IIN)


def card_ok(digits: str) -> bool:
    """A number a card issuer could have issued: prefix, length, Luhn; not one digit
    repeated."""
    return (12 <= len(digits) <= 19 and digits.isdigit() and len(set(digits)) > 1
            and issuer_ok(digits) and luhn_ok(digits))


def find_cards(text: str) -> list[str]:
    out = []
    context: bool | None = None  # whether the text mentions cards, looked up when needed
    for m in _CARD_CANDIDATE.finditer(text):
        raw = m.group()
        seps = set(re.findall(r"[ -]", raw))
        digits = re.sub(r"[ -]", "", raw)
        if len(seps) > 1 or _NOT_THIS.search(_before(text, m.start())):
            continue
        if seps:
            # The longest run of the usual groups that is a card: "5555 5555 5555 4444 123"
            # is a card and its security code.
            groups = re.split(r"[ -]", raw)
            for k in range(len(groups), 2, -1):
                digits = "".join(groups[:k])
                if tuple(map(len, groups[:k])) in _CARD_GROUPS and card_ok(digits):
                    break
            else:
                continue
        elif not card_ok(digits):
            continue
        else:
            # Bare digits are as likely an account or order number: only in a text that
            # speaks of cards.
            if context is None:
                context = _CARD_WORDS.search(text) is not None
            if not context:
                continue
        out.append(digits)
    return out


# -- IBAN ---------------------------------------------------------------------------------

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}\d{2})((?: ?[A-Z0-9]){11,30})")


def iban_ok(iban: str) -> bool:
    """Length for its country and ISO 7064 mod 97-10 (the rearranged number mod 97 is 1)."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban[2:4].isdigit():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def find_ibans(text: str) -> list[str]:
    out = []
    for m in _IBAN_CANDIDATE.finditer(text):
        head, rest = m.group(1), m.group(2)
        length = IBAN_LENGTHS.get(head[:2])
        if length is None:
            continue
        spaced = rest.startswith(" ")
        # Take exactly the country's length; it must end where a word or group does.
        want, i = length - 4, 0
        body: list[str] = []
        while i < len(rest) and len(body) < want:
            if rest[i] != " ":
                body.append(rest[i])
            i += 1
        if len(body) < want or (i < len(rest) and rest[i] != " "):
            continue
        taken = rest[:i]
        if spaced:  # the print format: groups of four after the first four
            groups = taken.split(" ")[1:]
            if any(len(g) != 4 for g in groups[:-1]) or not 1 <= len(groups[-1]) <= 4:
                continue
        elif " " in taken:
            continue
        iban = head + "".join(body)
        if iban_ok(iban):
            out.append(iban)
    return out


# -- Chinese resident identity numbers ----------------------------------------------------

_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_CHECK = "10X98765432"
_CN_PROVINCES = frozenset({11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42,
                           43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
                           83})
_CN_CANDIDATE = re.compile(r"(?<![\w-])\d{17}[\dXx](?![\w-])")


def cn_id_ok(value: str, today: date | None = None) -> bool:
    value = value.upper()
    if len(value) != 18 or not value[:17].isdigit():
        return False
    if int(value[:2]) not in _CN_PROVINCES:
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not date(1900, 1, 1) <= born <= (today or date.today()):
        return False
    total = sum(int(c) * w for c, w in zip(value[:17], _CN_WEIGHTS, strict=True))
    return _CN_CHECK[total % 11] == value[17]


def find_cn_ids(text: str) -> list[str]:
    return [m.group().upper() for m in _CN_CANDIDATE.finditer(text)
            if cn_id_ok(m.group()) and not _NOT_THIS.search(_before(text, m.start()))]


# -- US social security numbers -----------------------------------------------------------

_SSN_CANDIDATE = re.compile(r"(?<![\w-])(\d{3})([ -]?)(\d{2})\2(\d{4})(?![\w-])")
# Numbers the SSA or others published as examples (the Woolworth wallet card, ads, docs).
_SSN_EXAMPLES = frozenset({"078051120", "219099999", "123456789", "111111111", "333333333",
                           "987654320", "987654321", "987654322", "987654323", "987654324",
                           "987654325", "987654326", "987654327", "987654328", "987654329"})


def ssn_ok(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if len(digits) != 9 or not digits.isdigit() or digits in _SSN_EXAMPLES:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def find_ssns(text: str) -> list[str]:
    out = []
    for m in _SSN_CANDIDATE.finditer(text):
        digits = m.group(1) + m.group(3) + m.group(4)
        before = _before(text, m.start())
        if not m.group(2) and not _SSN_WORDS.search(before):
            continue  # nine bare digits are anything; right after "SSN" they are one
        if ssn_ok(digits) and not _NOT_THIS.search(before):
            out.append(digits)
    return out


FINDERS: dict[str, Callable[[str], list[str]]] = {
    "card": find_cards, "iban": find_ibans, "cn_id": find_cn_ids, "ssn": find_ssns}


def detect(texts: Iterable[str], detectors: Iterable[str] = DETECTORS) -> dict[str, Finding]:
    """The detectors' findings in `texts` (each looked at alone: a card word in one
    attachment is no context for digits in another); only detectors that found something."""
    wanted = [d for d in DETECTORS if d in set(detectors)]
    found: dict[str, dict[str, None]] = {d: {} for d in wanted}
    budget = MAX_TEXT
    for text in texts:
        if budget <= 0:
            break
        text = text[:budget]
        budget -= len(text)
        for d in wanted:
            for value in FINDERS[d](text):
                found[d][value] = None
    return {d: Finding(d, len(v), tuple(mask(x) for x in list(v)[:MAX_SAMPLES]))
            for d, v in found.items() if v}


# -- the text of attachments --------------------------------------------------------------

_TEXT_EXTS = frozenset({"txt", "csv", "tsv", "json", "xml", "log", "md", "ini", "yaml", "yml",
                        "htm", "html", "eml", "vcf", "sql", "tab", "dat", "rtf"})
_OFFICE_PARTS = re.compile(
    r"^(?:word/(?:document|header\d*|footer\d*|footnotes|endnotes)\.xml|xl/sharedStrings\.xml|"
    r"xl/worksheets/sheet\d+\.xml|ppt/slides/slide\d+\.xml|ppt/notesSlides/notesSlide\d+\.xml|"
    r"content\.xml)$")
# Where a paragraph, row or cell ends in OOXML and ODF: kept apart in the text.
_XML_BREAK = re.compile(r"</(?:w:p|w:tc|w:tr|a:p|text:p|text:h|table:table-cell|"
                        r"table:table-row|si|c|row)>|<w:br/>|<w:tab/>|<text:tab/>")
_XML_TAG = re.compile(r"<[^>]*>")
_XML_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&apos;": "'"}
_PDF_TEXT_BLOCK = re.compile(rb"BT\b(.*?)\bET", re.S)
_PDF_LITERAL = re.compile(rb"\(((?:[^()\\]|\\.)*)\)\s*(Tj|'|\")|\[((?:[^\]\\]|\\.)*)\]\s*TJ",
                          re.S)
_PDF_STRING = re.compile(rb"\(((?:[^()\\]|\\.)*)\)", re.S)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _xml_text(xml: bytes) -> str:
    text = _XML_BREAK.sub("\n", _decode(xml))
    text = _XML_TAG.sub("", text)
    return re.sub(r"&(?:lt|gt|amp|quot|apos);", lambda m: _XML_ENTITIES[m.group()], text)


def _office_text(data: bytes) -> str:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        return ""
    parts: list[str] = []
    budget = MAX_TEXT
    for info in z.infolist()[:2000]:
        if budget <= 0 or not _OFFICE_PARTS.match(info.filename):
            continue
        try:
            with z.open(info) as f:
                raw = f.read(min(MAX_MEMBER, budget))
        except (zipfile.BadZipFile, RuntimeError, ValueError, OSError, EOFError):
            continue  # encrypted or damaged: nothing readable
        text = _xml_text(raw)
        budget -= len(text)
        parts.append(text)
    return "\n".join(parts)


def _pdf_literal(raw: bytes) -> str:
    raw = re.sub(rb"\\([0-7]{1,3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw)
    raw = re.sub(rb"\\(.)", rb"\1", raw)
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", "replace")
    return raw.decode("latin-1")


def _pdf_text(data: bytes) -> str:
    """The text of a PDF's literal strings drawn with Tj/TJ (a PDF whose fonts map codes
    to glyphs of their own reads as nothing here)."""
    from mailmoat.scan.attachments import _pdf_scan  # its bounded stream inflation

    content, _, _ = _pdf_scan(data, MAX_MEMBER)
    lines = []
    for block in _PDF_TEXT_BLOCK.finditer(content):
        words = []
        for m in _PDF_LITERAL.finditer(block.group(1)):
            if m.group(3) is not None:  # [(41) -20 (11)] TJ: pieces of one run of text
                words.append("".join(_pdf_literal(s) for s in _PDF_STRING.findall(m.group(3))))
            else:
                words.append(_pdf_literal(m.group(1)))
        lines.append(" ".join(words))
    return "\n".join(lines)


def attachment_text(filename: str, declared_type: str, detected_type: str, data: bytes) -> str:
    """What text the detectors can read in an attachment ("" when none)."""
    data = data[:MAX_ATTACHMENT]
    ext = filename.rpartition(".")[2].lower() if "." in filename else ""
    types = f"{declared_type} {detected_type}".lower()
    try:
        if data.startswith(b"%PDF") or ext == "pdf":
            return _pdf_text(data)
        if data.startswith(b"PK\x03\x04") and (
                ext in ("docx", "docm", "xlsx", "xlsm", "pptx", "pptm", "odt", "ods", "odp")
                or "officedocument" in types or "opendocument" in types):
            return _office_text(data)
        if ext in _TEXT_EXTS or "text/" in types:
            return _decode(data)
    except Exception:  # a damaged file reads as no text, never as a failed scan
        return ""
    return ""
