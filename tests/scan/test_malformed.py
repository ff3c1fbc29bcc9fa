"""The `malformed` family on hand-made messages: header injection and stray lines."""

from __future__ import annotations

from tests.conftest import make_email, scan_bytes, symbol_names


async def test_header_fields_folded_into_the_subject_are_header_injection():
    # A web form's mail() call given a subject with line breaks: the attacker's From and
    # Content-Type end up folded into the Subject.
    raw = (b"From: www-data <www-data@host.test>\r\nTo: bob@example.test\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@host.test>\r\n"
           b"Subject: Account notice\r\n Message-ID: <x@bank.test>\r\n"
           b" From: \"Service\" <service@bank.test>\r\n Content-Type: text/html\r\n \r\n"
           b" <p>Dear member, please update your records.</p>\r\n\r\n")
    out = await scan_bytes(raw)
    sym = out.result.get("HEADER_INJECTION")
    assert sym is not None, symbol_names(out)
    assert "content-type, from, message-id" in sym.reason and sym.score == 4.0


async def test_subject_naming_one_header_is_not_injection():
    for subject in ("Re: From: line missing in the report", "Content-Type: what should I set?",
                    "Meeting: room 4, time: 10:00"):
        out = await scan_bytes(make_email(subject=subject))
        assert not out.result.has("HEADER_INJECTION"), subject


async def test_stray_line_before_headers_is_a_small_defect_not_unparseable():
    raw = (b"x9Y%=%=   for <bob@example.test>; Thu, 27 Jan 2005 00:24:05 +0800\r\n"
           b"From: Li <li@sender.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n"
           b"Date: Thu, 27 Jan 2005 00:24:05 +0800\r\nMessage-ID: <2@sender.test>\r\n\r\nhello\r\n")
    out = await scan_bytes(raw)
    names = symbol_names(out)
    assert "MIME_JUNK_BEFORE_HEADERS" in names
    assert not names & {"MIME_UNPARSEABLE", "MIME_NO_HEADERS", "MISSING_FROM"}
    assert out.result.forced is None
