"""The message-log writer: batching, idempotence, and one bad write not sinking others."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailmoat.message.model import Envelope
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter, message_log_data
from mailmoat.store.models import MessageRow, RecipientRow


def test_batch_with_a_failing_write_keeps_the_others(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    db.create_schema()
    writer = LogWriter(db)
    try:
        env = Envelope(mail_from="a@sender.test", rcpt_tos=("b@example.test",))
        futs = [writer.log_message(message_log_data(mailmoat_id=f"m{i}", envelope=env,
                                                    outcome=None)) for i in range(50)]

        def broken(session):
            raise RuntimeError("bad write")

        bad = writer.submit(broken)
        futs += [writer.log_message(message_log_data(mailmoat_id=f"n{i}", envelope=env,
                                                     outcome=None)) for i in range(5)]
        assert all(f.result(10) is True for f in futs)
        with pytest.raises(RuntimeError):
            bad.result(10)
        with db.session() as s:
            assert len(s.scalars(select(MessageRow)).all()) == 55
            assert {r.status for r in s.scalars(select(RecipientRow))} == {"queued"}
    finally:
        writer.close()
        db.dispose()
