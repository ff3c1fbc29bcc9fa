"""Retention of the message log: rows older than `[storage] log_retention_days` go.

The message log is the delivery index that recall and the console search, so it is kept
long, but not forever. Recipients and delivery events go with their message (foreign keys
cascade). A message still held in quarantine (not released, not deleted) is kept until the
quarantine lets go of it, so a held message never loses its log entry.

Deletes run in batches, each its own short transaction, so a large purge never holds the
SQLite write lock for long.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, select

from mailmoat.store.db import Database
from mailmoat.store.models import MessageRow, QuarantineRow

__all__ = ["purge_old_messages"]

BATCH = 500


def purge_old_messages(
    db: Database, days: int, now: datetime | None = None, batch: int = BATCH
) -> int:
    """Delete message-log rows received more than `days` days before `now`; returns how many."""
    if days < 0:
        raise ValueError("days must not be negative")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    held = exists().where(
        QuarantineRow.message_id == MessageRow.id,
        QuarantineRow.deleted_at.is_(None),
        QuarantineRow.released_at.is_(None),
    )
    total = 0
    while True:
        with db.session() as s:
            ids = list(
                s.scalars(
                    select(MessageRow.id)
                    .where(MessageRow.received_at < cutoff, ~held)
                    .order_by(MessageRow.received_at)
                    .limit(batch)
                )
            )
            if not ids:
                return total
            s.execute(delete(MessageRow).where(MessageRow.id.in_(ids)))
        total += len(ids)
