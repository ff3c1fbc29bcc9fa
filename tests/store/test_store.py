"""Message log, quarantine and retention against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from mailmoat.config import config_from_dict
from mailmoat.errors import StoreError
from mailmoat.spool.queue import Spool, new_message_id
from mailmoat.store.models import (
    AuditRow,
    DeliveryEventRow,
    MessageRow,
    QuarantineRow,
    RecipientRow,
)
from mailmoat.store.quarantine import (
    delete_message,
    load_raw,
    purge_expired,
    quarantine_message,
    release_message,
)
from mailmoat.store.retention import purge_old_messages
from tests.conftest import make_email

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path):
    return config_from_dict(
        {"storage": {"data_dir": str(tmp_path / "var"), "quarantine_retention_days": 30}}
    )


def _log(
    db,
    *,
    received_at=NOW,
    rcpts=("bob@example.test", "carol@example.test"),
    action="accept",
    events=1,
) -> str:
    mid = new_message_id()
    with db.session() as s:
        row = MessageRow(
            id=mid,
            received_at=received_at,
            direction="inbound",
            client_ip="192.0.2.10",
            mail_from="alice@sender.test",
            from_header="Alice <alice@sender.test>",
            from_domain="sender.test",
            subject="Grüße ✓",
            message_id="<m1@sender.test>",
            size=123,
            score=6.5,
            action=action,
            category="spam",
            reason="score 6.5 reaches the tag threshold 5",
            symbols=[{"name": "X", "score": 6.5, "category": "spam", "reason": "why"}],
            urls=["http://a.test/x"],
            url_domains=["a.test"],
            attachments=[
                {"filename": "a.pdf", "type": "application/pdf", "size": 3, "sha256": "ab"}
            ],
            headers={"List-Id": "<l.test>"},
        )
        row.recipients = [
            RecipientRow(address=r, domain=r.split("@")[1], action=action, status="queued")
            for r in rcpts
        ]
        s.add(row)
        s.flush()  # delivery events have no ORM relationship: the message row must exist first
        for i in range(events):
            s.add(
                DeliveryEventRow(
                    message_id=mid,
                    address=rcpts[0],
                    at=received_at + timedelta(seconds=i),
                    status="deferred",
                    response="451 try later",
                )
            )
    return mid


def _count(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_message_log_round_trip(db):
    mid = _log(db, events=2)
    with db.session() as s:
        row = s.get(MessageRow, mid)
        assert row.subject == "Grüße ✓" and row.score == 6.5
        assert row.symbols[0]["reason"] == "why" and row.url_domains == ["a.test"]
        assert row.headers == {"List-Id": "<l.test>"}
        assert [r.address for r in row.recipients] == ["bob@example.test", "carol@example.test"]
        assert row.received_at.replace(tzinfo=row.received_at.tzinfo or UTC) == NOW
        events = s.scalars(select(DeliveryEventRow).where(DeliveryEventRow.message_id == mid)).all()
        assert [e.status for e in events] == ["deferred", "deferred"]
        # the indexed search recall relies on
        hits = s.scalars(
            select(MessageRow.id).where(MessageRow.message_id == "<m1@sender.test>")
        ).all()
        assert hits == [mid]


def test_quarantine_load_release_puts_into_spool(db, config):
    raw = make_email(subject="held")
    mid = _log(db, action="quarantine")
    quarantine_message(
        config,
        db,
        mid,
        raw,
        "alice@sender.test",
        ["bob@example.test", "carol@example.test"],
        ["bob@example.test", "carol@example.test"],
    )
    assert load_raw(config, db, mid) == raw
    assert (config.data_dir / "quarantine" / f"{mid}.eml").read_bytes() == raw

    sent = release_message(config, db, mid, actor="admin", recipients=["Bob@example.test"])
    assert sent == ["bob@example.test"]
    spool = Spool(config.data_dir / "spool")
    (sid,) = spool.ids("incoming")
    entry, spooled = spool.read("incoming", sid)
    assert spooled == raw and entry.rcpt_tos == ["bob@example.test"] and entry.scanned
    assert entry.handover.released_from == mid and entry.mail_from == "alice@sender.test"
    with db.session() as s:
        q = s.get(QuarantineRow, mid)
        assert q.held_for == ["carol@example.test"] and q.released_at is None
        statuses = {r.address: r.status for r in s.scalars(select(RecipientRow))}
    assert statuses == {"bob@example.test": "released", "carol@example.test": "queued"}

    with pytest.raises(StoreError, match="not held for"):
        release_message(config, db, mid, actor="admin", recipients=["bob@example.test"])
    assert release_message(config, db, mid, actor="admin") == ["carol@example.test"]
    with db.session() as s:
        q = s.get(QuarantineRow, mid)
        assert q.released_by == "admin" and q.released_at is not None and q.held_for == []
        actions = s.scalars(select(AuditRow.action).order_by(AuditRow.id)).all()
    assert actions == ["quarantine.release", "quarantine.release"]
    assert len(spool.ids("incoming")) == 2


def test_delete_removes_bytes_and_refuses_later_access(db, config):
    mid = _log(db, action="quarantine")
    quarantine_message(
        config, db, mid, b"raw", "a@b.test", ["bob@example.test"], ["bob@example.test"]
    )
    delete_message(config, db, mid, actor="admin")
    assert not (config.data_dir / "quarantine" / f"{mid}.eml").exists()
    for op in (
        lambda: load_raw(config, db, mid),
        lambda: delete_message(config, db, mid, "admin"),
        lambda: release_message(config, db, mid, "admin"),
    ):
        with pytest.raises(StoreError, match="not in quarantine"):
            op()
    with pytest.raises(StoreError, match="not in quarantine"):
        load_raw(config, db, "0" * 27)


def test_missing_bytes_are_a_clear_error(db, config):
    mid = _log(db, action="quarantine")
    quarantine_message(
        config, db, mid, b"raw", "a@b.test", ["bob@example.test"], ["bob@example.test"]
    )
    (config.data_dir / "quarantine" / f"{mid}.eml").unlink()
    with pytest.raises(StoreError, match="missing"):
        load_raw(config, db, mid)


def test_purge_expired_quarantine(db, config):
    old, new = _log(db, action="quarantine"), _log(db, action="quarantine")
    for mid in (old, new):
        quarantine_message(
            config, db, mid, b"x", "a@b.test", ["bob@example.test"], ["bob@example.test"]
        )
    with db.session() as s:
        s.get(QuarantineRow, old).expires_at = datetime.now(UTC) - timedelta(days=1)
    assert purge_expired(config, db) == 1
    assert purge_expired(config, db) == 0  # already purged
    assert not (config.data_dir / "quarantine" / f"{old}.eml").exists()
    assert load_raw(config, db, new) == b"x"
    with db.session() as s:
        assert s.scalars(select(AuditRow.action)).all() == ["quarantine.purge"]


def test_retention_purges_old_log_rows_with_recipients_and_events(db, config):
    old = [_log(db, received_at=NOW - timedelta(days=100 + i)) for i in range(7)]
    recent = _log(db, received_at=NOW - timedelta(days=10))
    held = _log(db, received_at=NOW - timedelta(days=200), action="quarantine")
    quarantine_message(
        config, db, held, b"x", "a@b.test", ["bob@example.test"], ["bob@example.test"]
    )
    released = _log(db, received_at=NOW - timedelta(days=200), action="quarantine")
    quarantine_message(
        config, db, released, b"x", "a@b.test", ["bob@example.test"], ["bob@example.test"]
    )
    release_message(config, db, released, "admin")

    assert purge_old_messages(db, 90, now=NOW, batch=3) == len(old) + 1
    with db.session() as s:
        left = set(s.scalars(select(MessageRow.id)))
    assert left == {recent, held}
    assert _count(db, RecipientRow) == 4  # two per message left
    assert _count(db, DeliveryEventRow) == 2
    assert _count(db, QuarantineRow) == 1  # the released one went with its message
    assert purge_old_messages(db, 90, now=NOW) == 0


def test_retention_rejects_negative_days(db):
    with pytest.raises(ValueError):
        purge_old_messages(db, -1)
