from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mailmoat.message.parse import parse_message
from tests.conftest import make_email


def test_parses_headers_bodies_urls_and_attachments():
    raw = make_email(
        subject="=?utf-8?b?5L2g5aW9?= invoice",
        body="Visit https://example.org/path?a=1, thanks.",
        html='<p>Click <a href="http://203.0.113.7/login">paypal.com</a></p><script>x()</script>',
        attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 test")])
    m = parse_message(raw)
    assert m.subject == "你好 invoice"
    assert m.from_addr is not None and m.from_addr.address == "alice@sender.test"
    assert m.from_domain == "sender.test"
    assert "Visit" in m.text
    assert "Click" in m.html_text and "x()" not in m.html_text
    hosts = {u.host for u in m.urls}
    assert {"example.org", "203.0.113.7"} <= hosts
    link = next(u for u in m.urls if u.host == "203.0.113.7")
    assert link.display_text == "paypal.com" and link.source == "html" and link.tag == "a"
    (att,) = m.attachments
    assert att.filename == "report.pdf" and att.declared_type == "application/pdf"
    assert att.detected_type == "application/pdf"
    assert len(att.sha256) == 64 and att.size == len(b"%PDF-1.4 test")
    assert m.defects == ()


def test_punycode_host_is_decoded_but_raw_kept():
    m = parse_message(make_email(body="go to http://xn--pypal-4ve.com/x now"))
    (u,) = m.urls
    assert u.raw_host == "xn--pypal-4ve.com" and u.host != u.raw_host


def test_thousand_deep_nesting_does_not_crash():
    depth = 1000
    head = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: deep\r\n"
    parts = []
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    body = b"".join(parts) + b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    m = parse_message(head + body)
    assert "MIME_TOO_DEEP" in m.defects


def test_nul_bytes_and_8bit_headers():
    raw = b"From: \xe5\xbc\xa0\xe4\xb8\x89 <z@x.test>\r\nSubject: \xc4\xe3\xba\xc3\r\n\r\nbody\x00more"
    m = parse_message(raw)
    assert "MIME_NUL_BYTES" in m.defects
    assert m.from_addr is not None and m.from_addr.display_name == "张三"


def test_missing_boundary_is_a_defect_not_a_crash():
    raw = b"From: a@b.test\r\nContent-Type: multipart/mixed\r\n\r\nno boundary here\r\n"
    m = parse_message(raw)
    assert any(d.startswith("MIME_") for d in m.defects)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(data: bytes):
    m = parse_message(data)
    assert m.raw == data


def test_multipart_that_lost_its_boundaries_keeps_its_text():
    # Seen in real corpora: the boundary lines were stripped, the body is plain GB2312 text.
    raw = ("From: a@b.test\r\nContent-Type: multipart/alternative; boundary=\"x\"\r\n\r\n"
           "你好，明天开会\r\n").encode("gb18030")
    m = parse_message(raw)
    assert "你好" in m.text
    assert "MIME_START_BOUNDARY_NOT_FOUND" in m.defects


def test_stray_line_before_the_headers_does_not_lose_them():
    # The tail of a Received header cut by a relay, then an intact header section.
    raw = (b"a1B2c3%=%=       for <bob@example.test>; Thu, 27 Jan 2005 00:24:05 +0800\r\n"
           b"From: \"Li\" <li@sender.test>\r\nTo: bob@example.test\r\nSubject: hello\r\n"
           b"Content-Type: text/plain\r\n\r\nsee you tomorrow\r\n")
    m = parse_message(raw)
    assert m.from_addr is not None and m.from_addr.address == "li@sender.test"
    assert m.subject == "hello" and "see you tomorrow" in m.text
    assert "MIME_JUNK_BEFORE_HEADERS" in m.defects
    assert "MIME_NO_HEADERS" not in m.defects and "MIME_UNPARSEABLE" not in m.defects
    assert m.raw == raw


def test_text_without_headers_is_still_headerless():
    # Plain text that happens to contain a colon later is not a header section.
    m = parse_message(b"hello there\r\nthis is just text\r\nnote: not a header block\r\n")
    assert "MIME_JUNK_BEFORE_HEADERS" not in m.defects
    assert "MIME_NO_HEADERS" in m.defects


def _broken_fold_mail(line_end: bytes = b"\r\n") -> bytes:
    # The shape of much Chinese mail of the 2000s: a base64 encoded-word Subject continued
    # on lines without the leading space, then the rest of the header section.
    subject = "发票代开 优惠 税点低".encode("gb2312")
    import base64

    b64 = base64.b64encode(subject).decode()
    lines = [b"From: Li <li@sender.test>", b"To: bob@example.test",
             b"Subject: =?gb2312?B?" + b64[:12].encode(), b64[12:].encode() + b"?=",
             b"Date: Fri, 22 Jul 2005 20:05:22 +0800", b"MIME-Version: 1.0",
             b'Content-Type: multipart/mixed; boundary="XX"', b"", b"--XX",
             b"Content-Type: text/plain; charset=utf-8", b"", b"see the attachment", b"--XX",
             b'Content-Type: application/octet-stream; name="invoice.exe"',
             b"Content-Transfer-Encoding: base64", b"", base64.b64encode(b"MZ\x90\x00" * 8),
             b"--XX--", b""]
    return line_end.join(lines)


def test_header_continued_without_a_space_is_read_as_a_fold():
    for line_end in (b"\r\n", b"\n"):
        raw = _broken_fold_mail(line_end)
        m = parse_message(raw)
        assert m.subject == "发票代开 优惠 税点低"
        assert "MIME_BROKEN_FOLD" in m.defects
        # The MIME structure behind the broken line survives: the attachment is seen.
        assert [a.filename for a in m.attachments] == ["invoice.exe"]
        assert "MIME-Version" not in m.text and m.text.strip() == "see the attachment"
        assert m.raw == raw  # only the parser's view is mended


def test_inline_text_with_a_file_name_is_read_as_the_body():
    # Newsletters send their HTML as the only part, `inline; filename="news.htm"`; a spammer
    # can do the same to hide the words and links from every check.
    raw = (b"From: news@weather.test\r\nTo: bob@example.test\r\nSubject: forecast\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=us-ascii\r\n"
           b'Content-Disposition: inline; filename="news.htm"\r\n\r\n'
           b'<html><body><p>Sunny all week</p><a href="http://weather.test/x">more</a>'
           b"</body></html>\r\n")
    m = parse_message(raw)
    assert "Sunny all week" in m.html_text and not m.attachments
    assert [u.host for u in m.urls] == ["weather.test"]
    # Inside a multipart: inline parts with names are body too, attachments stay attachments.
    raw = (b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
           b'Content-Type: text/plain\r\nContent-Disposition: inline; filename="a.txt"\r\n\r\n'
           b"read me inline\r\n--B\r\n"
           b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="b.txt"\r\n\r\n'
           b"an attached file\r\n--B--\r\n")
    m = parse_message(raw)
    assert "read me inline" in m.text and "an attached file" not in m.text
    assert [a.filename for a in m.attachments] == ["b.txt"]


def test_cut_multibyte_text_stays_in_its_declared_charset():
    from mailmoat.message.parse import decode_bytes

    # An archiver cut this gb2312 Subject inside its last character: the rest must still
    # read as Chinese, not as Western mojibake.
    cut = "位于欧洲的另外一个研发中心".encode("gb2312")[:-1]
    assert decode_bytes(cut, "gb2312").startswith("位于欧洲的另外一个研发中")
    # UTF-8 that fails is usually mislabelled Latin-1, and stays read as such.
    assert decode_bytes(b"caf\xe9", "utf-8") == "café"
    # Many bad bytes: not the declared charset after all.
    assert "\ufffd" not in decode_bytes(bytes(range(0xf0, 0x100)), "big5")


def test_body_without_separator_is_not_taken_for_a_broken_fold():
    # No blank line before the body, and the body holds "key: value" lines that are not
    # standard header fields: the body stays the body.
    raw = (b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: notes\r\n"
           b"Here are the notes\r\nroom: 4\r\ntime: 10:00\r\n")
    m = parse_message(raw)
    assert "MIME_BROKEN_FOLD" not in m.defects
    assert m.subject == "notes"
    assert "Here are the notes" in m.text
    # Mixed line endings: the blank line still ends the section; body lines that look like
    # fields after it are body.
    raw = (b"From: a@sender.test\r\nSubject: mixed\n\nfirst body line\nDate: in the body\n")
    m = parse_message(raw)
    assert "MIME_BROKEN_FOLD" not in m.defects and "first body line" in m.text


def test_blank_runs_collapse_exactly_as_the_regex_did():
    import random
    import re

    from mailmoat.message.parse import _collapse_blanks

    rnd = random.Random(7)
    alphabet = [" ", "  ", "\t", "\r", "\f", "\v", "\n", "\xa0", "\u3000", "a", "Z", "日", "é"]
    for _ in range(2000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(40)))
        assert _collapse_blanks(text) == re.sub(r"[ \t\r\f\v]+", " ", text), repr(text)
    assert _collapse_blanks(" " * 1000 + "x\t\t y") == " x y"


def test_url_pattern_matches_what_the_case_insensitive_one_did():
    import random
    import re

    from mailmoat.message.parse import _URL_RE

    old = re.compile(r"""(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`{}|\\^\[\]]+""")
    rnd = random.Random(11)
    pieces = ["http://", "HTTPS://", "httpſ://", "ftp://", "FtP://", "www.", "wWw.", "a", "_",
              "1", " ", ".", "/", "é", "日", "<", '"', "\n", "K", "ı", "h", "w", "f", "s", "ſ"]
    for _ in range(5000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(12)))
        assert ([m.span() for m in _URL_RE.finditer(text)]
                == [m.span() for m in old.finditer(text)]), repr(text)


def test_mime_parser_finds_the_final_line_break_where_it_did():
    import email.feedparser
    import re

    from mailmoat.message.parse import _LineBreakAtEnd

    assert isinstance(email.feedparser.NLCRE_eol, _LineBreakAtEnd)  # installed on import
    full = re.compile(r"(\r\n|\r|\n)\Z")
    fast = _LineBreakAtEnd()
    ends = ["", "a", "\n", "\r", "\r\n", "\n\r", "\n\n", "\r\r", "\r\n\n", "\n\r\n", "x\r\n"]
    for body in ("", "line", "QUJD" * 19 + "\n" * 3):
        for end in ends:
            text = body + end
            a, b = full.search(text), fast.search(text)
            assert (a and (a.span(), a.group(0))) == (b and (b.span(), b.group(0))), repr(text)
