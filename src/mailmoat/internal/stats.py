"""Statistics of our own senders' mail for the console and the API: internal and outbound
volume per day, what was stopped, top senders, incidents per day, accounts restricted now.

Counted by the database (GROUP BY over indexed columns), so a month of a large company's
message log is not read into memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select

from mailmoat.internal.accounts import list_restrictions
from mailmoat.store.db import Database
from mailmoat.store.models import InternalIncidentRow, MessageRow

DIRECTIONS = ("internal", "outbound")
STOPPED = ("quarantine", "reject")


def _day(value: Any) -> str:
    """A GROUP BY date(...) value as YYYY-MM-DD (SQLite gives text, PostgreSQL a date)."""
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return str(value)[:10]


MAX_GROUP_ACCOUNTS = 200_000  # distinct senders read for the per-group figures


def internal_stats(db: Database, days: int = 30, now: datetime | None = None,
                   top: int = 10, groups: Mapping[str, Iterable[str]] | None = None
                   ) -> dict[str, Any]:
    """The figures of the last `days` days; `groups` (name -> account patterns, as in
    `[internal] groups`): per group too."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    day = func.date(MessageRow.received_at)
    stopped = func.sum(case((MessageRow.action.in_(STOPPED), 1), else_=0))
    with db.session() as s:
        volume: dict[str, dict[str, Any]] = {}
        rows: list[Any] = list(s.execute(
            select(day, MessageRow.direction, func.count(), stopped)
            .where(MessageRow.received_at >= since, MessageRow.direction.in_(DIRECTIONS))
            .group_by(day, MessageRow.direction)))
        for d, direction, n, held in rows:
            row = volume.setdefault(_day(d), {"day": _day(d), "internal": 0, "outbound": 0,
                                              "stopped": 0})
            row[direction] = int(n)
            row["stopped"] += int(held or 0)
        rows = list(s.execute(
            select(MessageRow.sender_account, func.count(), stopped)
            .where(MessageRow.received_at >= since, MessageRow.sender_account != "")
            .group_by(MessageRow.sender_account)
            .order_by(func.count().desc(), MessageRow.sender_account).limit(top)))
        senders = [{"account": a, "messages": int(n), "stopped": int(h or 0)}
                   for a, n, h in rows]
        iday = func.date(InternalIncidentRow.opened_at)
        rows = list(s.execute(
            select(iday, func.count(), func.sum(InternalIncidentRow.refused),
                   func.sum(InternalIncidentRow.deferred))
            .where(InternalIncidentRow.opened_at >= since).group_by(iday).order_by(iday)))
        incidents = [{"day": _day(d), "opened": int(n), "refused": int(r or 0),
                      "deferred": int(f or 0)} for d, n, r, f in rows]
        open_incidents = int(s.scalar(select(func.count()).select_from(InternalIncidentRow)
                                      .where(InternalIncidentRow.status == "open")) or 0)
        per_group: list[dict[str, Any]] = []
        if groups:
            from mailmoat.internal.rules import groups_of

            totals: dict[str, dict[str, Any]] = {
                g: {"group": g, "accounts": 0, "messages": 0, "stopped": 0} for g in groups}
            rows = list(s.execute(
                select(MessageRow.sender_account, func.count(), stopped)
                .where(MessageRow.received_at >= since, MessageRow.sender_account != "")
                .group_by(MessageRow.sender_account).limit(MAX_GROUP_ACCOUNTS)))
            for account, n, held in rows:
                for g in groups_of(account, groups):
                    t = totals[g]
                    t["accounts"] += 1
                    t["messages"] += int(n)
                    t["stopped"] += int(held or 0)
            per_group = sorted(totals.values(), key=lambda t: (-t["messages"], t["group"]))
    restricted = list_restrictions(db, now=now.timestamp())
    return {
        "groups": per_group,
        "since": since.isoformat(), "days": days,
        "volume": [volume[k] for k in sorted(volume)],
        "top_senders": senders, "incidents": incidents, "open_incidents": open_incidents,
        "restricted": {k: sum(1 for r in restricted if r.kind == k)
                       for k in ("suspend", "hold", "throttle")},
    }
