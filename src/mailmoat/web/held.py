"""The quarantine list with search: held messages within the caller's scope, filtered by
sender, recipient, subject (substrings, case-insensitive), category and the day they were
held, newest first with keyset paging (as store.queries.list_quarantine, which the API's
plain listing uses)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select, tuple_
from sqlalchemy.orm import Session

from mailmoat.errors import StoreError
from mailmoat.store.models import MessageRow, QuarantineRow, RecipientRow
from mailmoat.store.queries import Scope, decode_cursor, encode_cursor, scope_clause


@dataclass
class HeldFilters:
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    category: str = ""
    since: str = ""  # YYYY-MM-DD, held on or after
    until: str = ""  # YYYY-MM-DD, held on or before

    @classmethod
    def from_query(cls, qp: Any) -> HeldFilters:
        return cls(**{f.name: str(qp.get(f.name, ""))[:200].strip() for f in fields(cls)})

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def any(self) -> bool:
        return any(self.as_dict().values())


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise StoreError(f"{what} {text!r} is not a date; write it as 2025-01-31") from exc


def _like(text: str) -> str:
    esc = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


def list_held(s: Session, scope: Scope, f: HeldFilters, limit: int = 50,
              cursor: str | None = None) -> tuple[list[tuple[QuarantineRow, MessageRow]], str | None]:
    """Currently held messages matching `f`; StoreError with words for a bad date."""
    sqlite = s.get_bind().dialect.name == "sqlite"
    q = (select(QuarantineRow, MessageRow).join(MessageRow, MessageRow.id == QuarantineRow.message_id)
         .where(QuarantineRow.deleted_at.is_(None), QuarantineRow.released_at.is_(None)))
    sc = scope_clause(scope)
    if sc is not None:
        q = q.where(sc)

    def ci(col: Any, text: str) -> Any:
        # lower() on both sides: SQLite's LIKE folds only ASCII, PostgreSQL's not at all.
        return func.lower(col).like(_like(text), escape="\\")

    if f.sender:
        q = q.where(or_(ci(MessageRow.mail_from, f.sender), ci(MessageRow.from_header, f.sender)))
    if f.recipient:
        conds = [RecipientRow.message_id == MessageRow.id, ci(RecipientRow.address, f.recipient)]
        if not scope.all:
            # Only recipients the caller may see match: a search must not reveal a blind copy.
            conds.append(or_(RecipientRow.address.in_(scope.addresses), RecipientRow.domain.in_(scope.domains)))
        q = q.where(exists().where(*conds))
    if f.subject:
        q = q.where(ci(MessageRow.subject, f.subject))
    if f.category:
        q = q.where(MessageRow.category == f.category)

    def when(d: date) -> datetime:
        dt = datetime.combine(d, time.min, tzinfo=UTC)
        return dt.replace(tzinfo=None) if sqlite else dt

    if f.since:
        q = q.where(QuarantineRow.quarantined_at >= when(_day(f.since, "from")))
    if f.until:
        q = q.where(QuarantineRow.quarantined_at < when(_day(f.until, "to") + timedelta(days=1)))
    if cursor:
        at, last_id = decode_cursor(cursor)
        if sqlite and at.tzinfo is not None:
            at = at.astimezone(UTC).replace(tzinfo=None)
        elif not sqlite and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        q = q.where(tuple_(QuarantineRow.quarantined_at, QuarantineRow.message_id) < tuple_(at, last_id))
    q = q.order_by(QuarantineRow.quarantined_at.desc(), QuarantineRow.message_id.desc()).limit(limit + 1)
    rows = [(qr, mr) for qr, mr in s.execute(q).all()]
    if not scope.all:
        # Held for several people: listed only where held for someone in scope.
        rows = [(qr, mr) for qr, mr in rows if scope.filter_recipients(list(qr.held_for or []))]
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1][0].quarantined_at, rows[-1][0].message_id)
    return rows, nxt
