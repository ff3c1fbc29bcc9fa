"""The gateway's wiring of parts built elsewhere: sender memory, attachment hashes in the
log, live policy reload, retention, and release from quarantine through the console."""

from __future__ import annotations

import aiosmtplib
import pytest
from sqlalchemy import func, select

from mailmoat.reputation_memory import SenderMemory
from mailmoat.store.models import MessageRow, SenderMemoryRow
from tests.conftest import make_email
from tests.smtp.helpers import (
    gateway_config,
    running_gateway,
    wait_until,
)


async def send(port: int, mail_from: str, rcpts: list[str], raw: bytes) -> str:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                        local_hostname="client.sender.test")
    await c.connect()
    await c.ehlo()
    try:
        _, reply = await c.sendmail(mail_from, rcpts, raw)
    finally:
        await c.quit()
    return reply


def config(tmp_path, port: int, **sections):
    """The gateway on loopback without the content models (their verdicts are theirs to
    test, and loading them is slow)."""
    return gateway_config(tmp_path, port, content={"enabled": False}, deep={"mode": "off"},
                          **sections)


def logged(gw, mid: str) -> MessageRow | None:
    with gw.db.session() as s:
        row = s.get(MessageRow, mid)
        if row is not None:
            s.expunge(row)
        return row


def symbol_names(row: MessageRow) -> set[str]:
    return {x["name"] for x in row.symbols}


async def test_second_message_from_a_sender_is_no_first_contact(tmp_path, sink):
    cfg = config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        raw = make_email(subject="hello", body="Shall we meet on Tuesday?\n")
        first = (await send(gw.smtp_port, "alice@sender.test", ["bob@example.test"],
                            raw)).rsplit(" ", 1)[1]
        await sink.wait_for(1)

        def observed() -> bool:
            with gw.db.session() as s:
                return s.scalar(select(func.count()).select_from(SenderMemoryRow).where(
                    SenderMemoryRow.recipient == "bob@example.test")) == 1

        await wait_until(observed, what="the sender memory to record the first message")
        await wait_until(lambda: logged(gw, first) is not None, what="first message logged")
        assert "REP_FIRST_CONTACT" in symbol_names(logged(gw, first))

        second = (await send(gw.smtp_port, "alice@sender.test", ["bob@example.test"],
                             raw)).rsplit(" ", 1)[1]
        await sink.wait_for(2)
        await wait_until(lambda: logged(gw, second) is not None, what="second message logged")
        assert "REP_FIRST_CONTACT" not in symbol_names(logged(gw, second))
        # the cache was written through: the memory answers without a query
        facts = SenderMemory(gw.db).recall("alice@sender.test", ["bob@example.test"])
        assert facts.history["bob@example.test"].messages >= 1

        def counted_twice() -> bool:
            with gw.db.session() as s:
                return s.scalar(select(SenderMemoryRow.messages).where(
                    SenderMemoryRow.recipient == "bob@example.test")) == 2

        await wait_until(counted_twice, what="the second message counted")


def test_memory_cache_answers_without_a_query_and_writes_through(tmp_path):
    from mailmoat.message.model import Direction
    from mailmoat.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.create_schema()
    try:
        mem = SenderMemory(db)
        assert mem.recall("pat@partner.test", ["bob@example.test"]).first_contact
        mem.observe("pat@partner.test", ["bob@example.test"], "clean", Direction.INBOUND)
        # Another instance on the same database shares the cache.
        other = SenderMemory(db)
        queries: list[str] = []
        from sqlalchemy import event
        engine = db.engine
        listener = lambda *a: queries.append(a[2])
        event.listen(engine, "before_cursor_execute", listener)
        try:
            facts = other.recall("pat@partner.test", ["bob@example.test"])
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert not facts.first_contact and facts.history["bob@example.test"].clean == 1
        assert queries == []
        # Our user writes to the partner: the partner's cached entry learns it too.
        mem.observe("bob@example.test", ["pat@partner.test"], "clean", Direction.OUTBOUND)
        assert mem.recall("pat@partner.test", ["bob@example.test"]).wrote_to_sender == \
            ["bob@example.test"]
    finally:
        db.dispose()


async def test_policy_saved_by_the_console_applies_without_restart(tmp_path, sink):
    from mailmoat.web.policy_store import document_from_config, save_version, validate_document

    cfg = config(tmp_path, sink.port, policy={"reload_interval": 0.1})
    raw = make_email(sender="Mallory <mallory@bad.test>", body="Let's talk.\n")
    async with running_gateway(cfg) as gw:
        base = document_from_config(cfg)
        doc = base.model_copy(update={"block_senders": ["mallory@bad.test"]})
        v1 = save_version(gw.db, validate_document(doc.model_dump()), "admin",
                          "block mallory").id
        await wait_until(lambda: gw.policy_version == v1, what="policy version 1 in force")
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await send(gw.smtp_port, "mallory@bad.test", ["bob@example.test"], raw)
        assert err.value.code == 550

        v2 = save_version(gw.db, base, "admin", "roll back").id
        await wait_until(lambda: gw.policy_version == v2, what="policy version 2 in force")
        reply = await send(gw.smtp_port, "mallory@bad.test", ["bob@example.test"], raw)
        assert reply.startswith("2.0.0 Ok: queued as ")
        await sink.wait_for(1)

    # A restart starts with the newest saved version, not the TOML alone.
    from mailmoat.store.db import Database

    db = Database(cfg.database_url)
    try:
        v3 = save_version(db, validate_document(doc.model_dump()), "admin", "block again").id
    finally:
        db.dispose()
    async with running_gateway(cfg) as gw2:
        assert gw2.policy_version == v3
        with pytest.raises(aiosmtplib.SMTPDataError):
            await send(gw2.smtp_port, "mallory@bad.test", ["bob@example.test"], raw)


def _log_message(db, mid: str, days_ago: float) -> None:
    import time as _time

    from mailmoat.message.model import Direction, Envelope
    from mailmoat.store.log import message_log_data, write_message

    env = Envelope(mail_from="a@sender.test", rcpt_tos=("bob@example.test",),
                   client_ip="192.0.2.1", direction=Direction.INBOUND,
                   received_at=_time.time() - days_ago * 86400)
    with db.session() as s:
        write_message(s, message_log_data(mailmoat_id=mid, envelope=env, outcome=None))


async def test_retention_runs_on_its_schedule(tmp_path, sink):
    from datetime import UTC, datetime, timedelta

    from mailmoat.store.models import QuarantineRow
    from mailmoat.store.quarantine import quarantine_message

    cfg = config(tmp_path, sink.port, storage={
        "log_retention_days": 30, "purge_interval_hours": 0.0001})  # 0.36 s
    from mailmoat.app import build

    gw = build(cfg)  # not started yet: lay out the rows first
    try:
        _log_message(gw.db, "old-gone", 100)
        _log_message(gw.db, "old-held", 100)
        _log_message(gw.db, "new-expired", 1)
        _log_message(gw.db, "new-kept", 1)
        for mid in ("old-held", "new-expired"):
            quarantine_message(cfg, gw.db, mid, b"Subject: x\r\n\r\nbody\r\n", "a@sender.test",
                               ["bob@example.test"], ["bob@example.test"])
        with gw.db.session() as s:
            s.get(QuarantineRow, "new-expired").expires_at = datetime.now(UTC) - timedelta(days=1)
        expired_path = tmp_path / "data" / "quarantine" / "new-expired.eml"
        assert expired_path.exists()
        await gw.start(web=False)

        def purged() -> bool:
            # The purge unlinks the bytes, then commits deleted_at: wait for both.
            with gw.db.session() as s:
                marked = s.get(QuarantineRow, "new-expired").deleted_at is not None
            return logged(gw, "old-gone") is None and not expired_path.exists() and marked

        await wait_until(purged, what="the scheduled purge")
        assert logged(gw, "old-held") is not None  # still held in quarantine
        assert logged(gw, "new-kept") is not None and logged(gw, "new-expired") is not None
        with gw.db.session() as s:
            assert s.get(QuarantineRow, "new-expired").deleted_at is not None
            assert s.get(QuarantineRow, "old-held").deleted_at is None
        assert await gw.purge() == (0, 0)  # nothing left to do
    finally:
        await gw.stop()


async def test_quarantined_message_released_through_the_api_reaches_downstream(tmp_path,
                                                                                 sink):
    import httpx

    from mailmoat.store.models import QuarantineRow
    from mailmoat.web.app import create_app
    from mailmoat.web.auth import create_token, create_user

    cfg = config(tmp_path, sink.port, policy={
        "block_senders": ["mallory@bad.test"], "block_action": "quarantine"})
    raw = make_email(sender="Mallory <mallory@bad.test>", subject="held", body="Hold me.\n")
    async with running_gateway(cfg) as gw:
        mid = (await send(gw.smtp_port, "mallory@bad.test", ["bob@example.test"],
                          raw)).rsplit(" ", 1)[1]

        def held() -> bool:
            with gw.db.session() as s:
                return s.get(QuarantineRow, mid) is not None

        await wait_until(held, what="the message to be quarantined")
        assert sink.messages == []

        admin = create_user(gw.db, "admin@example.test", "admin", None)
        token = create_token(gw.db, admin.id, "wiring test")
        app = create_app(cfg, gw.db)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://console.test",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            r = await api.post(f"/api/v1/quarantine/{mid}/release")
            assert r.status_code == 200, r.text
        await sink.wait_for(1)  # the gateway sweeps incoming/ every 2 s
        msg = sink.parsed()[0]
        assert msg.get_all("X-Mailmoat-ID") == [mid]
        assert msg["Subject"] == "held" and sink.messages[0][1] == ["bob@example.test"]
