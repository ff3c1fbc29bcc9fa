"""The message-log write path on PostgreSQL (a throw-away database per run)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailmoat.message.model import Envelope
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter, message_log_data
from mailmoat.store.models import DeliveryEventRow, MessageRow, RecipientRow
from tests.pg import fresh_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    with fresh_postgres_database("mailmoat_gw") as url:
        yield url


def test_log_writer_on_postgres(pg_url):
    db = Database(pg_url)
    db.create_schema()
    writer = LogWriter(db)
    try:
        env = Envelope(mail_from="a@sender.test", rcpt_tos=("b@example.test", "c@example.test"),
                       client_ip="192.0.2.1")
        data = message_log_data(mailmoat_id="pgmsg1", envelope=env, outcome=None)
        assert writer.log_message(data).result(10) is True
        assert writer.log_message(data).result(10) is False  # idempotent after a crash
        writer.log_delivery("pgmsg1", [("b@example.test", "delivered", "250 ok"),
                                       ("c@example.test", "deferred", "451 later")],
                            attempts=1, next_attempt=2e9).result(10)
        with db.session() as s:
            assert s.get(MessageRow, "pgmsg1").client_ip == "192.0.2.1"
            recs = {r.address: r for r in s.scalars(select(RecipientRow))}
            assert recs["b@example.test"].status == "delivered"
            assert recs["b@example.test"].delivered_at is not None
            assert recs["c@example.test"].status == "deferred"
            assert recs["c@example.test"].next_attempt_at is not None
            assert len(s.scalars(select(DeliveryEventRow)).all()) == 2
    finally:
        writer.close()
        db.dispose()
