"""Delivery over real sockets: retries, DSNs, outages, quarantine hand-off and release."""

from __future__ import annotations

import asyncio
import email

import aiosmtplib
from sqlalchemy import select

from mailmoat.relay.deliver import DeliveryManager
from mailmoat.spool.queue import STATES
from mailmoat.store.models import DeliveryEventRow, QuarantineRow, RecipientRow
from mailmoat.store.quarantine import release_message
from tests.conftest import make_email
from tests.smtp.helpers import (
    Sink,
    free_port,
    gateway_config,
    running_gateway,
    start_sink,
    wait_until,
)


async def send(port: int, mail_from: str, rcpts: list[str], raw: bytes) -> str:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await c.connect()
    _, reply = await c.sendmail(mail_from, rcpts, raw)
    await c.quit()
    return reply.rsplit(" ", 1)[1]


def events(gw, mid: str) -> list[tuple[str, str]]:
    with gw.db.session() as s:
        rows = s.scalars(select(DeliveryEventRow).where(DeliveryEventRow.message_id == mid)
                         .order_by(DeliveryEventRow.id)).all()
        return [(r.address, r.status) for r in rows]


async def test_temporary_failure_is_retried(tmp_path, sink):
    sink.data_replies = ["451 4.3.0 try later"]
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "a@sender.test", ["bob@example.test"], make_email())
        await sink.wait_for(1, timeout=10)
        await wait_until(lambda: len(events(gw, mid)) == 2, what="two delivery events")
        assert events(gw, mid) == [("bob@example.test", "deferred"), ("bob@example.test", "delivered")]
        with gw.db.session() as s:
            rec = s.scalars(select(RecipientRow).where(RecipientRow.message_id == mid)).one()
            assert rec.status == "delivered" and rec.attempts == 2
        await wait_until(lambda: mid in gw.spool.ids("done"), what="moved to done")


async def test_permanent_failure_sends_dsn_to_sender(tmp_path, sink):
    sink.rcpt_replies = {"gone@example.test": "550 5.1.1 no such mailbox"}
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "alice@sender.test", ["gone@example.test", "bob@example.test"],
                         make_email(subject="Invoice 42"))
        await sink.wait_for(2)  # the message for bob, and the DSN for alice
        dsns = [m for m in sink.messages if m[0] == ""]
        assert len(dsns) == 1 and dsns[0][1] == ["alice@sender.test"]
        dsn = email.message_from_bytes(dsns[0][2])
        assert dsn.get_content_type() == "multipart/report"
        assert dsn.get_param("report-type") == "delivery-status"
        parts = [p.get_content_type() for p in dsn.walk()]
        assert "message/delivery-status" in parts and "text/rfc822-headers" in parts
        text = dsns[0][2].decode()
        assert "Final-Recipient: rfc822; gone@example.test" in text
        assert "Status: 5.1.1" in text and "Action: failed" in text
        # The original headers ride along (the subject may carry the tag prefix).
        assert "Invoice 42" in text, text
        await wait_until(lambda: len(events(gw, mid)) == 2, what="events")
        assert sorted(events(gw, mid)) == [("bob@example.test", "delivered"),
                                           ("gone@example.test", "failed")]


async def test_no_dsn_to_null_sender(tmp_path, sink):
    sink.rcpt_replies = {"gone@example.test": "550 5.1.1 no such mailbox"}
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "", ["gone@example.test"], make_email())
        await wait_until(lambda: events(gw, mid) == [("gone@example.test", "failed")], what="failure")
        # A DSN is spooled before its message moves to done/: once it is there, the spool
        # holds every message this failure could have made.
        await wait_until(lambda: mid in gw.spool.ids("done"), what="moved to done")
        assert [i for s in STATES for i in gw.spool.ids(s)] == [mid]
        assert sink.messages == []


async def test_downstream_outage_then_everything_delivered(tmp_path):
    port = free_port()
    cfg = gateway_config(tmp_path, port)
    sink = Sink()
    async with running_gateway(cfg) as gw:
        ids = [await send(gw.smtp_port, "a@sender.test", ["bob@example.test"],
                          make_email(subject=f"n{i}")) for i in range(5)]
        await wait_until(lambda: len(gw.spool.ids("deferred")) == 5, what="all deferred")
        server = await start_sink(sink, port)  # the downstream comes back
        try:
            await sink.wait_for(5, timeout=10)
            got = sorted(m["X-Mailmoat-ID"] for m in sink.parsed())
            assert got == sorted(ids)
        finally:
            server.close()


async def test_too_old_to_retry_bounces(tmp_path, sink):
    port = free_port()  # nobody listens: example.test is unreachable
    cfg = gateway_config(tmp_path, port, delivery={"max_age": 1, "routes": {"sender.test": f"127.0.0.1:{sink.port}"}})
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "alice@sender.test", ["bob@example.test"], make_email())
        await sink.wait_for(1, timeout=10)
        mail_from, rcpts, raw = sink.messages[0]
        assert mail_from == "" and rcpts == ["alice@sender.test"]
        assert b"Status: 4.4.7" in raw and b"X-Mailmoat-Original-ID: " + mid.encode() in raw


async def test_quarantine_per_recipient_then_release(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port,
                         policy={"recipients": {"held@example.test": {"quarantine_threshold": 0.0}}})
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "a@sender.test", ["ok@example.test", "held@example.test"],
                         make_email(subject="for two"))
        await sink.wait_for(1)
        assert sink.messages[0][1] == ["ok@example.test"]

        def held() -> bool:
            with gw.db.session() as s:
                q = s.get(QuarantineRow, mid)
                return q is not None and q.held_for == ["held@example.test"]

        await wait_until(held, what="quarantine row")
        await wait_until(lambda: ("held@example.test", "quarantined") in events(gw, mid),
                         what="quarantined event")
        released = await asyncio.to_thread(release_message, cfg, gw.db, mid, "admin")
        assert released == ["held@example.test"]
        await sink.wait_for(2, timeout=10)  # picked up from incoming/ by the sweep
        _, rcpts, raw = sink.messages[1]
        assert rcpts == ["held@example.test"]
        assert email.message_from_bytes(raw)["X-Mailmoat-ID"] == mid  # not rescanned / rewritten
        await wait_until(lambda: events(gw, mid).count(("held@example.test", "delivered")) == 1,
                         what="release delivered")


async def test_unexpected_error_moves_message_to_shunt(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        async def broken_sender(*args, **kwargs):
            raise ZeroDivisionError("bug in the relay")

        gw.delivery.sender = broken_sender
        mid = await send(gw.smtp_port, "a@sender.test", ["bob@example.test"], make_email())
        # the sidecar moves first, the bytes right after it: wait for both
        await wait_until(lambda: mid in gw.spool.ids("shunt")
                         and (gw.spool.dir("shunt") / f"{mid}.eml").exists(), what="shunted")
        entry, raw = gw.spool.read("shunt", mid)
        assert entry.rcpt_tos == ["bob@example.test"] and b"X-Mailmoat-ID" in raw


async def test_recover_after_crash_delivers_active_messages(tmp_path, sink):
    """A message a crash left in active/ goes back to incoming/ and is delivered on start."""
    cfg = gateway_config(tmp_path, sink.port)
    from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id

    spool = Spool(cfg.data_dir / "spool")
    mid = new_message_id()
    spool.put(SpoolEntry(id=mid, mail_from="a@sender.test", rcpt_tos=["bob@example.test"],
                         received_at=0, scanned=True), make_email(), state="active")
    import time as _t
    e, _ = spool.read("active", mid)
    e.received_at = _t.time()
    spool.update("active", e)
    async with running_gateway(cfg):
        await sink.wait_for(1)
    assert sink.messages[0][1] == ["bob@example.test"]


async def test_manager_without_database_still_delivers(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    import time as _t

    from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id

    spool = Spool(tmp_path / "spool")
    mgr = DeliveryManager(cfg, spool)
    mid = new_message_id()
    spool.put(SpoolEntry(id=mid, mail_from="a@sender.test", rcpt_tos=["bob@example.test"],
                         received_at=_t.time(), scanned=True), make_email())
    await mgr.start()
    try:
        await sink.wait_for(1)
    finally:
        await mgr.stop()
    assert spool.ids("done") == [mid]


async def test_outbound_mail_is_signed_for_the_from_domain(tmp_path, sink):
    from mailmoat.dkimsign import DkimSigner

    class Recorder(DkimSigner):
        def __init__(self):
            super().__init__()
            self.calls = []

        def sign(self, raw, domain):
            self.calls.append(domain)
            return b"X-Signed-For: " + domain.encode() + b"\r\n" + raw

    cfg = gateway_config(tmp_path, sink.port, smtp={"trusted_networks": ["127.0.0.0/8"]},
                         delivery={"outbound_relay": f"127.0.0.1:{sink.port}"})
    async with running_gateway(cfg) as gw:
        gw.delivery.signer = Recorder()
        await send(gw.smtp_port, "bounces@mailer.example.test", ["dave@elsewhere.test"],
                   make_email(sender="Carol <carol@example.test>"))
        await send(gw.smtp_port, "x@sender.test", ["bob@example.test"], make_email())
        await sink.wait_for(2)
        assert gw.delivery.signer.calls == ["example.test"]  # only the outbound one
    signed = [m for m in sink.parsed() if m["X-Signed-For"]]
    assert len(signed) == 1 and signed[0]["X-Signed-For"] == "example.test"


async def test_mail_handed_over_in_memory_is_delivered_once_without_reading_back(tmp_path, sink):
    """The intake spools into active/ and passes the entry and bytes with wake(); the
    worker neither claims nor reads back (the spool copy is what a crash would recover)."""
    import time as _t

    from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id

    cfg = gateway_config(tmp_path, sink.port)
    spool = Spool(tmp_path / "spool")
    mgr = DeliveryManager(cfg, spool)
    mid = new_message_id()
    entry = SpoolEntry(id=mid, mail_from="a@sender.test", rcpt_tos=["bob@example.test"],
                       received_at=_t.time(), scanned=True)
    raw = make_email()
    spool.put(entry, raw, "active")
    reads = []
    real_read = spool.read
    spool.read = lambda *a: reads.append(a) or real_read(*a)  # type: ignore[method-assign]
    await mgr.start()
    try:
        mgr.wake(mid, entry, raw)
        mgr.wake(mid)  # a second wake for the same id queues nothing twice
        await sink.wait_for(1)
        await wait_until(lambda: spool.ids("done") == [mid], what="moved to done")
    finally:
        await mgr.stop()
    assert len(sink.messages) == 1 and reads == [] and mgr._handed == {}
