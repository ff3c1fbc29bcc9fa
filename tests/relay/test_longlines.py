"""Lines over RFC 5322's 998 bytes are re-encoded before relaying, never sent raw, and mail
within the limit is not touched (issue 21, item 6)."""

from __future__ import annotations

import email
from email import policy

from mailmoat.relay.longlines import fit_line_length, has_long_line
from tests.conftest import make_email
from tests.relay.test_delivery import send
from tests.smtp.helpers import gateway_config, running_gateway

LONG = " ".join(f"word{i}" for i in range(800))  # one line of about 5,000 bytes
assert len(LONG) > 5000


def lines_within(raw: bytes, limit: int = 998) -> bool:
    return all(len(ln.rstrip(b"\r")) <= limit for ln in raw.split(b"\n"))


def test_mail_within_the_limit_comes_back_untouched():
    raw = make_email(html="<p>" + "x" * 900 + "</p>", attachments=[("a.bin", "application/octet-stream",
                                                                     bytes(range(256)) * 40)])
    assert fit_line_length(raw) is raw


def test_a_5000_byte_text_line_is_reencoded_and_decodes_the_same():
    raw = (b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: long\r\n"
           b"X-Mailmoat-ID: m1\r\n\r\n" + LONG.encode() + b"\r\nend\r\n")
    out = fit_line_length(raw)
    assert lines_within(out) and not has_long_line(out)
    msg = email.message_from_bytes(out, policy=policy.default)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable" and msg["MIME-Version"] == "1.0"
    assert msg["X-Mailmoat-ID"] == "m1" and msg["Subject"] == "long"
    assert msg.get_content().replace("\r\n", "\n") == LONG + "\nend\n"


def test_only_the_offending_part_is_touched():
    attachment = bytes(range(256)) * 8
    raw = make_email(body="short text part\n", html="<p>" + LONG + "</p>",
                     attachments=[("a.bin", "application/octet-stream", attachment)])
    out = fit_line_length(raw)
    assert lines_within(out)
    before, after = email.message_from_bytes(raw), email.message_from_bytes(out)
    assert not after.defects
    leaves = [(p, q) for p, q in zip(before.walk(), after.walk()) if not p.is_multipart()]
    assert [p.get_content_type() for p, _ in leaves] == ["text/plain", "text/html", "application/octet-stream"]
    for p, q in leaves:
        assert p.get_payload(decode=True) == q.get_payload(decode=True)
    assert leaves[1][1]["Content-Transfer-Encoding"] == "quoted-printable"
    # Everything but the HTML part is byte for byte as it was: headers, boundaries, parts.
    html_start = raw.index(b"<p>")
    assert out.startswith(raw[:raw.rindex(b"\n", 0, raw.rindex(b"Content-Transfer-Encoding", 0, html_start))])
    assert raw[raw.index(b"\n--", html_start):] in out


def test_8bit_text_goes_base64_and_unwrapped_base64_is_rewrapped():
    utf8 = ("Grüße aus München, 你好世界。" * 120).encode()
    b64 = email.base64mime.body_encode(b"\x00\x01binary" * 600, maxlinelen=100000).strip()
    raw = (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\n"
           b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + utf8 +
           b"\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n" +
           b64.encode() + b"\n--b1--\n")
    out = fit_line_length(raw)
    assert lines_within(out)
    parts = [p for p in email.message_from_bytes(out).walk() if not p.is_multipart()]
    assert parts[0]["Content-Transfer-Encoding"] == "base64"
    assert parts[0].get_payload(decode=True).decode() == utf8.decode()
    assert parts[1].get_payload(decode=True) == b"\x00\x01binary" * 600


def test_long_header_lines_are_folded():
    refs = " ".join(f"<id{i}@example.test>" for i in range(200))
    raw = (f"References: {refs}\r\nSubject: ".encode() + b"x" * 1500 + b"\r\n\r\nbody\r\n")
    out = fit_line_length(raw)
    assert lines_within(out)
    msg = email.message_from_bytes(out, policy=policy.compat32)
    assert msg["References"].replace("\r\n", "") == refs  # folded at blanks: the same value
    assert msg["Subject"].replace("\r\n", "").replace(" ", "") == "x" * 1500
    assert out.endswith(b"\r\n\r\nbody\r\n")


async def test_a_5000_byte_line_arrives_downstream_within_the_limit(tmp_path, sink):
    # The sink is aiosmtpd with its default (RFC 5321) line limit: raw, it refuses the message.
    raw = (b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: Long line\r\n"
           b"Message-ID: <long-1@sender.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n"
           + LONG.encode() + b"\r\nend\r\n")
    # Content models off: this test is about the bytes, not about what a model makes of them.
    cfg = gateway_config(tmp_path, sink.port, content={"enabled": False}, deep={"mode": "off"})
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "alice@sender.test", ["bob@example.test"], raw)
        await sink.wait_for(1)
    delivered = sink.messages[0][2]
    assert lines_within(delivered)
    msg = email.message_from_bytes(delivered, policy=policy.default)
    assert msg["X-Mailmoat-ID"] == mid and msg["Received"]
    assert msg["Subject"] == "Long line"
    assert msg.get_content().replace("\r\n", "\n") == LONG + "\nend\n"
