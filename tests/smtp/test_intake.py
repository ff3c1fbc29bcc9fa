"""SMTP intake over real sockets: relay rules, limits, scan-before-250, headers, log."""

from __future__ import annotations

import asyncio
import base64

import aiosmtplib
import pytest
from sqlalchemy import select

from mailmoat.scan.gtube import GTUBE
from mailmoat.smtp.users import hash_password
from mailmoat.store.models import DeliveryEventRow, MessageRow, RecipientRow
from tests.conftest import make_email
from tests.smtp.helpers import (
    Sink,
    gateway_config,
    port_of,
    running_gateway,
    start_sink,
    wait_until,
)


def _logged(gw, mid: str) -> bool:
    with gw.db.session() as s:
        return s.get(MessageRow, mid) is not None


async def client(port: int) -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                        local_hostname="client.sender.test")
    await c.connect()
    await c.ehlo()
    return c


async def test_clean_mail_is_relayed_with_our_headers_and_logged(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    raw = make_email(subject="Quarterly numbers", headers={
        "X-Mailmoat-Verdict": "action=accept; score=-100", "X-Mailmoat-ID": "forged"},
        body="See https://docs.sender.test/q3 for details.\n",
        attachments=[("q3.csv", "text/csv", b"a,b\n1,2\n")])
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        _, reply = await c.sendmail("alice@sender.test", ["bob@example.test"], raw)
        await c.quit()
        assert reply.startswith("2.0.0 Ok: queued as ")
        mid = reply.rsplit(" ", 1)[1]
        await sink.wait_for(1)
        msg = sink.parsed()[0]
        assert msg.get_all("X-Mailmoat-ID") == [mid]  # the forged one is gone
        verdict = msg.get_all("X-Mailmoat-Verdict")
        assert len(verdict) == 1 and verdict[0].startswith("action=accept; score=")
        assert f"id {mid}" in msg["Received"] and "by mx.gateway.test" in msg["Received"]
        assert msg["Subject"] == "Quarterly numbers"
        # the body is passed through byte for byte
        assert sink.messages[0][2].endswith(raw.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n")) or \
            raw.split(b"\n\n", 1)[1] in sink.messages[0][2]

        def delivered() -> bool:
            with gw.db.session() as s:
                r = s.scalars(select(RecipientRow).where(RecipientRow.message_id == mid)).first()
                return r is not None and r.status == "delivered"

        await wait_until(delivered, what="recipient row marked delivered")
        with gw.db.session() as s:
            row = s.get(MessageRow, mid)
            assert row.direction == "inbound" and row.mail_from == "alice@sender.test"
            assert row.subject == "Quarterly numbers" and row.from_domain == "sender.test"
            assert row.message_id == "<test-1@sender.test>" and row.client_ip == "127.0.0.1"
            assert "docs.sender.test" in row.url_domains
            assert row.attachments[0]["filename"] == "q3.csv"
            assert len(row.attachments[0]["sha256"]) == 64
            assert row.action == "accept"
            events = s.scalars(select(DeliveryEventRow).where(
                DeliveryEventRow.message_id == mid)).all()
            assert [e.status for e in events] == ["delivered"]


async def test_gtube_is_rejected_in_session_with_5xx(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    raw = make_email(body=f"test\n{GTUBE.decode()}\n")
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        with pytest.raises(aiosmtplib.SMTPDataError) as exc:
            await c.sendmail("spammer@sender.test", ["bob@example.test"], raw)
        assert exc.value.code == 550 and exc.value.message.startswith("5.7.1")
        assert "GTUBE" in exc.value.message
        await c.quit()
        assert gw.spool.ids("incoming") == [] and gw.spool.ids("done") == []

        def logged() -> bool:
            with gw.db.session() as s:
                return s.scalars(select(MessageRow).where(MessageRow.action == "reject")).first() is not None

        await wait_until(logged, what="rejected message logged")
    assert sink.messages == []


async def test_no_open_relay_for_untrusted_clients(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        await c.mail("alice@sender.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await c.rcpt("victim@elsewhere.test")
        assert exc.value.code == 554 and "5.7.1" in exc.value.message
        await c.quit()


async def test_trusted_network_relays_outbound_via_outbound_relay(tmp_path, sink):
    out = Sink()
    out_server = await start_sink(out)
    cfg = gateway_config(tmp_path, sink.port,
                         smtp={"trusted_networks": ["127.0.0.0/8"]},
                         delivery={"outbound_relay": f"127.0.0.1:{port_of(out_server)}"})
    try:
        async with running_gateway(cfg) as gw:
            c = await client(gw.smtp_port)
            _, reply = await c.sendmail("carol@example.test", ["dave@elsewhere.test", "erin@example.test"],
                                        make_email(sender="carol@example.test"))
            await c.quit()
            await out.wait_for(1)
            await sink.wait_for(1)
            assert out.messages[0][1] == ["dave@elsewhere.test"]
            assert sink.messages[0][1] == ["erin@example.test"]
            mid = reply.rsplit(" ", 1)[1]
            # Delivery does not wait for the message-log insert: the sink can have the mail
            # before the row is committed.
            await wait_until(lambda: _logged(gw, mid), what="message logged")
            with gw.db.session() as s:
                assert s.get(MessageRow, mid).direction == "outbound"
    finally:
        out_server.close()


async def test_starttls_and_auth_allow_relaying(tmp_path, sink):
    users = tmp_path / "users"
    users.write_text(f"sam:{hash_password('s3cret')}\n")
    cfg = gateway_config(tmp_path, sink.port, smtp={"auth_users_file": str(users)},
                         delivery={"outbound_relay": f"127.0.0.1:{sink.port}"})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        assert c.supports_extension("starttls")
        assert not c.supports_extension("auth")  # not before TLS
        for ext in ("pipelining", "8bitmime", "smtputf8", "size"):
            assert c.supports_extension(ext), ext
        await c.starttls(validate_certs=False)
        await c.ehlo()
        assert c.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await c.login("sam", "wrong")
        await c.login("sam", "s3cret")
        _, reply = await c.sendmail("sam@example.test", ["friend@elsewhere.test"], make_email())
        await c.quit()
        await sink.wait_for(1)
        assert (tmp_path / "data" / "tls" / "cert.pem").exists()
        msg = sink.parsed()[0]
        assert "with ESMTPS" in msg["Received"]
        mid = reply.rsplit(" ", 1)[1]
        await wait_until(lambda: _logged(gw, mid), what="message logged")
        with gw.db.session() as s:
            row = s.get(MessageRow, mid)
            assert row.auth_user == "sam" and row.direction == "outbound"


async def test_oversize_is_refused_with_552(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_message_size": 2000})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        code, msg = await c.execute_command(b"MAIL", b"FROM:<a@sender.test>", b"SIZE=5000")
        assert code == 552 and msg.startswith("5.3.4")
        await c.rset()
        # no SIZE parameter this time: the limit is enforced while reading DATA
        await c.mail("a@sender.test")
        await c.rcpt("bob@example.test")
        with pytest.raises(aiosmtplib.SMTPDataError) as exc:
            await c.data(make_email(body="x" * 5000))
        assert exc.value.code == 552 and exc.value.message.startswith("5.3.4")
        await c.quit()
    assert sink.messages == []


async def test_too_many_recipients_get_452(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_recipients": 2})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        await c.mail("a@sender.test")
        await c.rcpt("one@example.test")
        await c.rcpt("two@example.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await c.rcpt("three@example.test")
        assert exc.value.code == 452 and "4.5.3" in exc.value.message
        await c.quit()


async def test_unknown_recipient_rejected_with_recipient_list(tmp_path, sink):
    rcpts = tmp_path / "rcpts"
    rcpts.write_text("bob@example.test\n")
    cfg = gateway_config(tmp_path, sink.port, smtp={"recipients_file": str(rcpts)})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        await c.mail("a@sender.test")
        await c.rcpt("bob@example.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await c.rcpt("nobody@example.test")
        assert exc.value.code == 550 and "5.1.1" in exc.value.message
        await c.quit()


async def test_long_line_is_refused(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_line_length": 1000})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        with pytest.raises(aiosmtplib.SMTPDataError) as exc:
            await c.sendmail("a@sender.test", ["bob@example.test"],
                             b"Subject: long\r\n\r\n" + b"y" * 3000 + b"\r\n")
        assert exc.value.code == 500 and "5.5.2" in exc.value.message
        await c.quit()


async def _banner(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = await asyncio.wait_for(reader.readline(), 5)
    return line, writer


async def _check_connection_limit(port: int) -> None:
    held = []
    for _ in range(2):
        line, w = await _banner(port)
        assert line.startswith(b"220"), line
        held.append(w)
    line, w = await _banner(port)
    assert line.startswith(b"421 4.7.0"), line
    w.close()
    held.pop().close()
    for _ in range(50):  # the server notices the hang-up and frees the slot
        await asyncio.sleep(0.1)
        line, w = await _banner(port)
        if line.startswith(b"220"):
            break
        w.close()
    assert line.startswith(b"220"), line
    held.append(w)
    for w in held:
        w.close()


async def test_connection_limit_in_memory(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_connections_per_ip": 2})
    async with running_gateway(cfg) as gw:
        await _check_connection_limit(gw.smtp_port)


async def test_trusted_networks_are_not_held_to_the_per_client_limit(tmp_path, sink):
    """The company mail server relays its queue on many connections at once."""
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_connections_per_ip": 2,
                                                    "trusted_networks": ["127.0.0.1/32"]})
    async with running_gateway(cfg) as gw:
        held = []
        for _ in range(5):
            line, w = await _banner(gw.smtp_port)
            held.append(w)
            assert line.startswith(b"220"), line
        for w in held:
            w.close()


@pytest.mark.redis
async def test_connection_limit_in_redis(tmp_path, sink):
    import os

    import redis.asyncio as aioredis

    prefix = f"mailmoat-test-{os.getpid()}-{tmp_path.name}:"
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_connections_per_ip": 2},
                         redis={"url": "redis://127.0.0.1:6379/0", "key_prefix": prefix})
    async with running_gateway(cfg) as gw:
        await _check_connection_limit(gw.smtp_port)
        line, w = await _banner(gw.smtp_port)
        r = aioredis.from_url("redis://127.0.0.1:6379/0")
        try:  # the count lives there: one lease per open connection
            assert line.startswith(b"220")
            assert await r.zcard(f"{prefix}conns:127.0.0.1") >= 1
        finally:
            w.close()
            await r.aclose()
    r = aioredis.from_url("redis://127.0.0.1:6379/0")
    try:
        await r.delete(f"{prefix}conns:127.0.0.1")
    finally:
        await r.aclose()


async def test_data_timeout_hangs_up_with_421(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, smtp={"data_timeout": 0.5})
    async with running_gateway(cfg) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await reader.readline()
        writer.write(b"HELO c.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        replies = b""
        while b"354" not in replies:
            replies += await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"Subject: slow\r\n\r\npart of a body")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"421 4.4.2"), rest
        writer.close()
    assert sink.messages == []


async def test_scanner_failure_still_spools_and_delivers(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)

    async with running_gateway(cfg) as gw:
        real = gw.scanner

        class BrokenOnce:  # the scanner breaks at intake and works again for delivery
            calls = 0

            async def scan(self, raw, envelope):
                BrokenOnce.calls += 1
                if BrokenOnce.calls == 1:
                    raise RuntimeError("scanner exploded")
                return await real.scan(raw, envelope)

        gw.scanner_ref.current = BrokenOnce()  # intake and delivery share the reference
        c = await client(gw.smtp_port)
        _, reply = await c.sendmail("a@sender.test", ["bob@example.test"], make_email())
        await c.quit()
        assert reply.startswith("2.0.0")
        await sink.wait_for(1)
        assert sink.parsed()[0]["X-Mailmoat-Verdict"].startswith("action=accept")
        assert BrokenOnce.calls == 2  # scanned late, by delivery
        gw.scanner_ref.current = real


async def test_spool_failure_answers_451(tmp_path, sink, monkeypatch):
    from mailmoat.errors import SpoolError

    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        def full_disk(entry, raw, state="incoming"):
            raise SpoolError("No space left on device")

        monkeypatch.setattr(gw.spool, "put", full_disk)
        c = await client(gw.smtp_port)
        with pytest.raises(aiosmtplib.SMTPDataError) as exc:
            await c.sendmail("a@sender.test", ["bob@example.test"], make_email())
        assert exc.value.code == 451 and exc.value.message.startswith("4.3.0")
        await c.quit()


async def test_auth_plain_refused_before_tls(tmp_path, sink):
    users = tmp_path / "users"
    users.write_text(f"sam:{hash_password('pw')}\n")
    cfg = gateway_config(tmp_path, sink.port, smtp={"auth_users_file": str(users)})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        token = base64.b64encode(b"\0sam\0pw").decode()
        code, _ = await c.execute_command(b"AUTH", b"PLAIN", token.encode())
        assert code == 538
        await c.quit()


async def test_recipient_verification_at_the_downstream(tmp_path, sink):
    sink.rcpt_replies = {"ghost@example.test": "550 5.1.1 unknown user",
                         "busy@example.test": "450 4.2.1 mailbox busy"}
    cfg = gateway_config(tmp_path, sink.port, smtp={"verify_recipients_downstream": True})
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        await c.mail("a@sender.test")
        await c.rcpt("bob@example.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await c.rcpt("ghost@example.test")
        assert exc.value.code == 550 and "5.1.1" in exc.value.message
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await c.rcpt("busy@example.test")
        assert exc.value.code == 450
        await c.quit()
        assert ("ghost@example.test" in gw.handler._verified)  # answered from cache next time


def test_fast_address_parsing_matches_aiosmtpd():
    import asyncio as _asyncio

    from aiosmtpd.smtp import SMTP

    from mailmoat.smtp.limits import MemoryLimiter
    from mailmoat.smtp.server import GatewaySMTP

    loop = _asyncio.new_event_loop()
    try:
        ours = GatewaySMTP(object(), limiter=MemoryLimiter(1), data_timeout=1,
                           max_line_length=1000, loop=loop)
        theirs = SMTP(object(), loop=loop)
        for arg in ["<a@b.test>", " <a.b+c@sub.example.test> SIZE=100 BODY=8BITMIME", "<>",
                    "<\"x y\"@b.test>", "a@b.test", "<a@b.test", "<müller@b.test>",
                    "<" + "l" * 70 + "@b.test>"]:
            assert ours._getaddr(arg) == theirs._getaddr(arg), arg
    finally:
        loop.close()


async def test_duplicate_recipient_is_delivered_once(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        await c.sendmail("a@sender.test", ["bob@example.test", "Bob@example.test"], make_email())
        await c.quit()
        await sink.wait_for(1)
        # Both recipients travel in one attempt: once the message is done, nothing more
        # can be sent for it.
        await wait_until(lambda: len(gw.spool.ids("done")) == 1, what="moved to done")
    assert len(sink.messages) == 1 and sink.messages[0][1] == ["bob@example.test"]


async def test_smtputf8_and_8bit_mail_pass_through(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    raw = ("From: Jürgen <jürgen@sender.test>\r\nTo: bob@example.test\r\nSubject: Grüße\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "Schöne Grüße aus Köln\r\n").encode()
    async with running_gateway(cfg) as gw:
        c = await client(gw.smtp_port)
        await c.sendmail("jürgen@sender.test", ["bob@example.test"], raw,
                         mail_options=["SMTPUTF8"])
        await c.quit()
        await sink.wait_for(1)
    mail_from, rcpts, got = sink.messages[0]
    assert mail_from == "jürgen@sender.test"
    assert got.endswith("Schöne Grüße aus Köln\r\n".encode())
