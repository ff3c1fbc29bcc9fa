"""Hypothesis strategies for hostile mail: raw bytes, and structured MIME built to hurt a
parser — headers with odd folding, broken encoded words and NULs; nested multiparts with
random (empty, quoted, overlong, clashing) boundaries; base64 and quoted-printable bodies
with garbage; HTML fragments (unclosed, deep, scripted); bogus charsets."""

from __future__ import annotations

import base64
import quopri

from hypothesis import strategies as st

# Bytes that break naive parsers: NUL, bare CR / LF, 8-bit, DEL, invalid UTF-8.
NASTY = [b"\x00", b"\r", b"\n", b"\r\n", b"\t", b" ", b"\x7f", b"\xff", b"\xc3", b"\xe2\x80\xae",
         b"=?", b"?=", b"--", b";", b":", b'"', b"\\", b"<", b">", b"@", b"%", b"\x1b"]

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-16-le", "utf-7",
            "shift_jis", "gb2312", "koi8-r", "x-unknown", "", "utf-8\x00", "unicode-1-1-utf-7",
            "idna", "rot13", "base64", "zlib", "uu"]

HEADER_NAMES = ["From", "To", "Cc", "Reply-To", "Sender", "Subject", "Date", "Message-ID",
                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                "MIME-Version", "Received", "DKIM-Signature", "Authentication-Results",
                "List-Unsubscribe", "X-Mailer", "Return-Path", "In-Reply-To", "References"]

CONTENT_TYPES = ["text/plain", "text/html", "multipart/mixed", "multipart/alternative",
                 "multipart/related", "multipart/signed", "message/rfc822", "message/partial",
                 "application/octet-stream", "application/pdf", "application/zip",
                 "application/x-msdownload", "image/png", "text/calendar", "", "text",
                 "/", "multipart/", "x/y/z"]

ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "uuencode",
             "BASE64 ", "bogus", ""]

FOLDS = [b"\r\n ", b"\r\n\t", b"\n ", b"\r ", b"\r\n", b"\n", b"\r\n\r\n ", b" \r\n  \r\n "]

HTML_BITS = ["<html>", "<body>", "<div>", "</div>", "<table><tr><td>", "<p>", "<b><i><u>",
             "<a href=\"https://login.evil.test/verify\">https://paypal.com</a>",
             "<a href='javascript:alert(1)'>x</a>", "<a href=\"http://[::1\">", "<a href=>",
             "<img src=x onerror=alert(1)>", "<script>document.write('<div>')</script>",
             "<style>@import url(http://x.test)</style>", "<!--", "-->", "<![CDATA[",
             "]]>", "<form action=http://steal.test><input type=password>", "<iframe src=",
             "<svg><foreignObject>", "<math><mi>", "<template>", "<noscript>", "<title>",
             "&#0;", "&#x110000;", "&amp", "&nbsp;" * 3, "<base href=//evil.test/>",
             "<meta http-equiv=refresh content='0;url=http://evil.test'>", "<", ">", "\"", "'",
             "<div style='display:none'>hidden</div>", "<span style=\"font-size:0\">0</span>",
             "<a href=\"http://xn--pypal-4ve.com\">", "<a href=\"http://%zz/\">", "\x00", "\u202e"]


def _join(parts: list[bytes]) -> bytes:
    return b"".join(parts)


nasty_bytes = st.lists(st.one_of(st.sampled_from(NASTY), st.binary(max_size=12)),
                       max_size=12).map(_join)
text = st.text(max_size=40)
text_bytes = text.map(lambda s: s.encode("utf-8", "surrogatepass"))
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30)


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    """An RFC 2047 encoded word, often broken: bad charset, bad encoding letter, bad base64."""
    charset = draw(st.sampled_from(CHARSETS)).encode("latin-1", "replace")
    enc = draw(st.sampled_from([b"B", b"Q", b"b", b"q", b"X", b""]))
    payload = draw(st.one_of(
        text_bytes.map(lambda b: base64.b64encode(b)),
        text_bytes.map(lambda b: quopri.encodestring(b, header=True)),
        nasty_bytes, printable.map(str.encode)))
    end = draw(st.sampled_from([b"?=", b"", b"?", b"?=?="]))
    return b"=?" + charset + b"?" + enc + b"?" + payload + end


header_value = st.lists(st.one_of(text_bytes, nasty_bytes, encoded_word(), st.sampled_from(FOLDS),
                                  st.just(b"a" * 2000)), max_size=8).map(_join)


@st.composite
def header(draw: st.DrawFn) -> bytes:
    name = draw(st.one_of(st.sampled_from(HEADER_NAMES).map(str.encode), printable.map(str.encode),
                          nasty_bytes))
    sep = draw(st.sampled_from([b": ", b":", b" : ", b"", b":\r\n ", b"::"]))
    end = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b""]))
    return name + sep + draw(header_value) + end


boundary = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), min_size=0, max_size=20),
    st.just("a" * 200), st.sampled_from(["", " ", "--", "=_", "b\x00", "ünï", "\"", "b;c=d"]))


@st.composite
def content_type_header(draw: st.DrawFn, ctype: str, bnd: str | None) -> bytes:
    params = []
    if bnd is not None:
        quote = draw(st.sampled_from(['"', "", "'"]))
        params.append(f"boundary={quote}{bnd}{quote}")
    if draw(st.booleans()):
        params.append(f"charset={draw(st.sampled_from(CHARSETS))}")
    if draw(st.booleans()):
        params.append(draw(st.sampled_from([
            "name=\"invoice.pdf.exe\"", "name*=utf-8''%E2%80%AEfdp.exe", "name*0=a; name*1=b",
            "name*=bogus'xx'%ZZ", "name=", "format=flowed; delsp=yes", "protocol=\"a/b\""])))
    value = "; ".join([ctype, *params]).encode("utf-8", "surrogatepass")
    return b"Content-Type: " + value + b"\r\n"


@st.composite
def body_bytes(draw: st.DrawFn, encoding: str, html: bool) -> bytes:
    if html:
        raw = "".join(draw(st.lists(st.one_of(st.sampled_from(HTML_BITS), text),
                                    max_size=30))).encode("utf-8", "surrogatepass")
        raw *= draw(st.sampled_from([1, 1, 1, 50]))
    else:
        raw = draw(st.one_of(text_bytes, nasty_bytes, st.binary(max_size=300)))
    enc = encoding.strip().lower()
    if enc == "base64":
        out = base64.encodebytes(raw)
        garbage = draw(st.sampled_from([b"", b"!!!", b"=", b"====", b"\x00", b"A"]))
        return out + garbage
    if enc == "quoted-printable":
        out = quopri.encodestring(raw)
        return out + draw(st.sampled_from([b"", b"=", b"=Z", b"=\r\n", b"=4"]))
    if enc in ("x-uuencode", "uuencode"):
        return b"begin 644 x\r\n" + draw(st.binary(max_size=60)) + b"\r\nend\r\n"
    return raw


@st.composite
def mime_part(draw: st.DrawFn, depth: int = 0) -> bytes:
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    multipart = ctype.startswith("multipart/") and depth < 6
    bnd = draw(boundary) if multipart else None
    headers = [draw(content_type_header(ctype, bnd))]
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding:
        headers.append(b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n")
    if draw(st.booleans()):
        headers.append(draw(st.sampled_from([
            b"Content-Disposition: attachment; filename=\"a.exe\"\r\n",
            b"Content-Disposition: inline; filename=\"news.htm\"\r\n",
            b"Content-Disposition: attachment; filename*=utf-8''%F0%9F%98%80.js\r\n",
            b"Content-Disposition: \r\n", b"Content-Disposition: attachment; filename=\x00\r\n"])))
    headers += draw(st.lists(header(), max_size=2))
    if multipart:
        assert bnd is not None
        b = bnd.encode("utf-8", "surrogatepass")
        children = draw(st.lists(mime_part(depth + 1), max_size=3))
        closing = draw(st.sampled_from([b"--" + b + b"--\r\n", b"", b"--" + b + b"\r\n",
                                        b"--" + b + b"--  trailing\r\n"]))
        preamble = draw(st.sampled_from([b"", b"This is a multi-part message.\r\n", b"--\r\n"]))
        body = preamble + b"".join(b"--" + b + b"\r\n" + c + b"\r\n" for c in children) + closing
    elif ctype == "message/rfc822" and depth < 6:
        body = draw(message(depth + 1))
    else:
        body = draw(body_bytes(encoding, html=ctype == "text/html" or draw(st.booleans())))
    sep = draw(st.sampled_from([b"\r\n", b"\n", b"", b"\r\n\r\n"]))
    return b"".join(headers) + sep + body


@st.composite
def message(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A whole message: top headers (some hostile) then a MIME tree."""
    top = draw(st.lists(header(), max_size=6))
    junk = draw(st.sampled_from([b"", b"", b"From alice@x.test Sat Nov 28 10:00:00 2026\r\n",
                                 b"\xef\xbb\xbf", b"\r\n", b"garbage line\r\n"]))
    mime = draw(st.sampled_from([b"MIME-Version: 1.0\r\n", b""]))
    return junk + b"".join(top) + mime + draw(mime_part(depth))


hostile_message = message()
any_bytes = st.binary(max_size=4096)
