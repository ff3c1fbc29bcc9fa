"""Named queries of the web console and API: message-log search with keyset paging,
role scoping, quarantine listing and the dashboard's aggregates. Routes call these; no SQL
lives in routes."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Result, Row, case, exists, func, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, Select

from mailmoat.errors import StoreError
from mailmoat.store.models import DeliveryEventRow, MessageRow, QuarantineRow, RecipientRow


@dataclass(frozen=True)
class Scope:
    """Which mail a caller may see: everything (admin), mail to some domains (domain admin)
    or mail to one address (end user)."""

    all: bool = False
    domains: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    def allows_recipient(self, address: str) -> bool:
        a = address.lower()
        if self.all:
            return True
        if a in self.addresses:
            return True
        return a.rpartition("@")[2] in self.domains

    def filter_recipients(self, addresses: list[str]) -> list[str]:
        return [a for a in addresses if self.allows_recipient(a)]

    def visible_actor(self, actor: str, recipients: list[str]) -> str:
        """Who acted on a message (`released_by`), as this scope may see it. A recipient who
        released their own copy (by login or digest link, `digest-link:<address>`) would
        otherwise reveal a recipient outside the scope, perhaps a blind copy."""
        address = actor.removeprefix("digest-link:").strip().lower()
        if self.all or address not in {r.lower() for r in recipients} or self.allows_recipient(address):
            return actor
        return "another recipient"


def scope_clause(scope: Scope) -> ColumnElement[bool] | None:
    """A WHERE clause restricting messages to those with a recipient in scope."""
    if scope.all:
        return None
    if scope.addresses and not scope.domains:
        # One person's mail is a small set: drive the query from the recipients index.
        return MessageRow.id.in_(select(RecipientRow.message_id).where(RecipientRow.address.in_(scope.addresses)))
    # A domain is a large share of all mail: walk messages newest first and probe the
    # (domain, message_id) index; the first page fills quickly.
    conds = []
    if scope.domains:
        conds.append(RecipientRow.domain.in_(scope.domains))
    if scope.addresses:
        conds.append(RecipientRow.address.in_(scope.addresses))
    if not conds:
        return MessageRow.id.is_(None)  # sees nothing
    return exists().where(RecipientRow.message_id == MessageRow.id, or_(*conds))


@dataclass
class SearchFilters:
    sender: str = ""  # envelope sender or From header address (exact), or @domain
    recipient: str = ""  # exact address, or @domain
    subject: str = ""  # substring
    message_id: str = ""  # the Message-ID header, with or without <>
    mailmoat_id: str = ""
    client_ip: str = ""
    since: datetime | None = None
    until: datetime | None = None
    direction: str = ""
    category: str = ""
    action: str = ""
    status: str = ""  # a recipient's delivery status
    quarantined: bool | None = None  # only messages currently held


SUBJECT_WINDOW = timedelta(days=7)


def encode_cursor(received_at: datetime, msg_id: str) -> str:
    raw = json.dumps([_naive_utc(received_at).isoformat(), msg_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        pad = "=" * (-len(cursor) % 4)
        at, msg_id = json.loads(base64.urlsafe_b64decode(cursor + pad))
        return datetime.fromisoformat(at), str(msg_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise StoreError("invalid cursor") from exc


def _naive_utc(dt: datetime) -> datetime:
    """SQLite stores datetimes without a zone; compare in naive UTC there."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def _when(dt: datetime, sqlite: bool) -> datetime:
    if sqlite:
        return _naive_utc(dt)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _rcpt_exists(*conds: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(RecipientRow.message_id == MessageRow.id, *conds)


def search_messages(s: Session, scope: Scope, f: SearchFilters, limit: int = 50,
                    cursor: str | None = None) -> tuple[list[MessageRow], str | None]:
    """Newest first, `limit` rows after `cursor`; returns (rows, next cursor or None).

    Keyset paging on (received_at, id): every page costs the same, however deep."""
    sqlite = s.get_bind().dialect.name == "sqlite"
    q: Select[Any] = select(MessageRow)
    sc = scope_clause(scope)
    if sc is not None:
        q = q.where(sc)
    if f.sender:
        v = f.sender.strip().lower()
        if v.startswith("@"):
            q = q.where(MessageRow.from_domain == v[1:])
        else:
            q = q.where(or_(MessageRow.mail_from == v, MessageRow.from_header == v))
    if f.recipient:
        v = f.recipient.strip().lower()
        if v.startswith("@"):
            q = q.where(_rcpt_exists(RecipientRow.domain == v[1:]))
        else:  # selective: drive from the recipients index (see scope_clause)
            q = q.where(MessageRow.id.in_(select(RecipientRow.message_id).where(RecipientRow.address == v)))
    if f.subject:
        # A substring cannot use a b-tree index: bound the scan to a recent window unless the
        # caller gives one (SUBJECT_WINDOW; `since` widens it).
        if not f.since:
            q = q.where(MessageRow.received_at >= _when(datetime.now(UTC) - SUBJECT_WINDOW, sqlite))
        esc = f.subject.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # SQLite's LIKE already ignores ASCII case (as its lower() does), without a function
        # call per row; PostgreSQL needs ILIKE.
        col = MessageRow.subject
        pat = f"%{esc}%"
        q = q.where(col.like(pat, escape="\\") if sqlite else col.ilike(pat, escape="\\"))
    if f.message_id:
        v = f.message_id.strip()
        v = v if v.startswith("<") else f"<{v}>"
        q = q.where(MessageRow.message_id.in_([v, v[1:-1]]))
    if f.mailmoat_id:
        q = q.where(MessageRow.id == f.mailmoat_id.strip())
    if f.client_ip:
        q = q.where(MessageRow.client_ip == f.client_ip.strip())
    if f.since:
        q = q.where(MessageRow.received_at >= _when(f.since, sqlite))
    if f.until:
        q = q.where(MessageRow.received_at < _when(f.until, sqlite))
    if f.direction:
        q = q.where(MessageRow.direction == f.direction)
    if f.category:
        q = q.where(MessageRow.category == f.category)
    if f.action:
        q = q.where(MessageRow.action == f.action)
    if f.status:
        q = q.where(_rcpt_exists(RecipientRow.status == f.status))
    if f.quarantined is not None:
        held = exists().where(QuarantineRow.message_id == MessageRow.id,
                              QuarantineRow.deleted_at.is_(None),
                              QuarantineRow.released_at.is_(None))
        q = q.where(held if f.quarantined else ~held)
    if cursor:
        at, last_id = decode_cursor(cursor)
        at = _when(at, sqlite)
        # A row-value comparison is a range scan of ix_messages_received_id on both SQLite
        # (3.15+) and PostgreSQL; the equivalent OR form makes SQLite scan from the top.
        q = q.where(tuple_(MessageRow.received_at, MessageRow.id) < tuple_(at, last_id))
    q = q.order_by(MessageRow.received_at.desc(), MessageRow.id.desc()).limit(limit + 1)
    rows = list(s.scalars(q))
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].received_at, rows[-1].id)
    return rows, nxt


def message_visible(s: Session, scope: Scope, msg_id: str) -> MessageRow | None:
    q = select(MessageRow).where(MessageRow.id == msg_id)
    sc = scope_clause(scope)
    if sc is not None:
        q = q.where(sc)
    return s.scalar(q)


def recipients_of(s: Session, msg_id: str) -> list[RecipientRow]:
    return list(s.scalars(select(RecipientRow).where(RecipientRow.message_id == msg_id)
                          .order_by(RecipientRow.id)))


def delivery_events(s: Session, msg_id: str) -> list[DeliveryEventRow]:
    return list(s.scalars(select(DeliveryEventRow).where(DeliveryEventRow.message_id == msg_id)
                          .order_by(DeliveryEventRow.at, DeliveryEventRow.id)))


def quarantine_entry(s: Session, msg_id: str) -> QuarantineRow | None:
    return s.get(QuarantineRow, msg_id)


def list_quarantine(s: Session, scope: Scope, limit: int = 50, cursor: str | None = None,
                    include_done: bool = False) -> tuple[list[tuple[QuarantineRow, MessageRow]], str | None]:
    """Held messages newest first (keyset on quarantined_at, id), within the scope."""
    sqlite = s.get_bind().dialect.name == "sqlite"
    q = select(QuarantineRow, MessageRow).join(MessageRow, MessageRow.id == QuarantineRow.message_id)
    if not include_done:
        q = q.where(QuarantineRow.deleted_at.is_(None), QuarantineRow.released_at.is_(None))
    sc = scope_clause(scope)
    if sc is not None:
        q = q.where(sc)
    if cursor:
        at, last_id = decode_cursor(cursor)
        at = _when(at, sqlite)
        q = q.where(tuple_(QuarantineRow.quarantined_at, QuarantineRow.message_id) < tuple_(at, last_id))
    q = q.order_by(QuarantineRow.quarantined_at.desc(), QuarantineRow.message_id.desc()).limit(limit + 1)
    rows = [(qr, mr) for qr, mr in s.execute(q).all()]
    if not scope.all:
        # A message may be held for several people: show it only if held for someone in scope.
        rows = [(qr, mr) for qr, mr in rows if scope.filter_recipients(list(qr.held_for or []))
                or not qr.held_for and include_done]
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1][0].quarantined_at, rows[-1][0].message_id)
    return rows, nxt


def held_for_user(s: Session, address: str) -> list[tuple[QuarantineRow, MessageRow]]:
    """Everything currently held for one address (for that user's digest)."""
    addr = address.lower()
    q = (select(QuarantineRow, MessageRow).join(MessageRow, MessageRow.id == QuarantineRow.message_id)
         .where(QuarantineRow.deleted_at.is_(None), QuarantineRow.released_at.is_(None),
                _rcpt_exists(RecipientRow.address == addr))
         .order_by(QuarantineRow.quarantined_at.desc()))
    return [(qr, mr) for qr, mr in s.execute(q).all() if addr in [h.lower() for h in qr.held_for or []]]


# ---- dashboard aggregates -------------------------------------------------------------

def time_buckets(hours: int, now: datetime | None = None) -> list[str]:
    """Every bucket label of the window, matching _bucket_expr's format (gaps show as 0)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if hours <= 72:
        start = now.replace(minute=0, second=0, microsecond=0)
        return [(start - timedelta(hours=i)).strftime("%Y-%m-%d %H:00") for i in range(hours - 1, -1, -1)]
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [(start - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(hours // 24, -1, -1)]


def _bucket_expr(s: Session, hours: int) -> ColumnElement[str]:
    if s.get_bind().dialect.name == "sqlite":
        fmt = "%Y-%m-%d %H:00" if hours <= 72 else "%Y-%m-%d"
        return func.strftime(fmt, MessageRow.received_at)
    unit = "hour" if hours <= 72 else "day"
    return func.to_char(func.date_trunc(unit, MessageRow.received_at),
                        "YYYY-MM-DD HH24:00" if unit == "hour" else "YYYY-MM-DD")


@dataclass
class Stats:
    hours: int
    volume: list[tuple[str, str, int]] = field(default_factory=list)  # bucket, category, n
    volume_action: list[tuple[str, str, int]] = field(default_factory=list)  # bucket, action, n
    by_action: list[tuple[str, int]] = field(default_factory=list)
    by_category: list[tuple[str, int]] = field(default_factory=list)
    threats: int = 0  # messages of a threat category (not clean, not bulk)
    bulk: int = 0
    top_recipients: list[tuple[str, int]] = field(default_factory=list)
    top_blocked_senders: list[tuple[str, int]] = field(default_factory=list)
    top_blocked_domains: list[tuple[str, int]] = field(default_factory=list)
    by_group: list[tuple[str, int]] = field(default_factory=list)
    total: int = 0
    scan_ms_avg: float = 0.0
    scan_ms_p95: float = 0.0
    failed_recipients: int = 0
    deferred_recipients: int = 0


_BAD_ACTIONS = ("quarantine", "reject")
# Bulk is wanted mail that is merely automated: never a threat, a target or a blocked sender,
# even where a user quarantines it (bulk_action = "quarantine").
NOT_THREATS = ("clean", "bulk")


def dashboard_stats(s: Session, scope: Scope, hours: int = 24, now: datetime | None = None,
                    top: int = 10) -> Stats:
    now = now or datetime.now(UTC)
    sqlite = s.get_bind().dialect.name == "sqlite"
    since = _when(now - timedelta(hours=hours), sqlite)
    sc = scope_clause(scope)
    base = [MessageRow.received_at >= since] + ([sc] if sc is not None else [])
    st = Stats(hours=hours)
    bucket = _bucket_expr(s, hours)
    st.volume = [(str(b), c, n) for b, c, n in s.execute(
        select(bucket, MessageRow.category, func.count()).where(*base)
        .group_by(bucket, MessageRow.category).order_by(bucket))]
    st.volume_action = [(str(b), a, n) for b, a, n in s.execute(
        select(bucket, MessageRow.action, func.count()).where(*base)
        .group_by(bucket, MessageRow.action).order_by(bucket))]
    st.by_action = [(a, n) for a, n in s.execute(
        select(MessageRow.action, func.count()).where(*base).group_by(MessageRow.action)
        .order_by(func.count().desc()))]
    st.by_category = [(c, n) for c, n in s.execute(
        select(MessageRow.category, func.count()).where(*base).group_by(MessageRow.category)
        .order_by(func.count().desc()))]
    st.total = sum(n for _, n in st.by_action)
    st.threats = sum(n for c, n in st.by_category if c not in NOT_THREATS)
    st.bulk = sum(n for c, n in st.by_category if c == "bulk")
    rq = (select(RecipientRow.address, func.count()).join(MessageRow, MessageRow.id == RecipientRow.message_id)
          .where(MessageRow.received_at >= since, MessageRow.category.not_in(NOT_THREATS)))
    if not scope.all:
        conds = []
        if scope.domains:
            conds.append(RecipientRow.domain.in_(scope.domains))
        if scope.addresses:
            conds.append(RecipientRow.address.in_(scope.addresses))
        rq = rq.where(or_(*conds) if conds else RecipientRow.id.is_(None))
    st.top_recipients = [(a, n) for a, n in s.execute(
        rq.group_by(RecipientRow.address).order_by(func.count().desc()).limit(top))]
    bad = base + [MessageRow.action.in_(_BAD_ACTIONS), MessageRow.category != "bulk"]
    st.top_blocked_senders = [(a, n) for a, n in s.execute(
        select(MessageRow.mail_from, func.count()).where(*bad).group_by(MessageRow.mail_from)
        .order_by(func.count().desc()).limit(top))]
    st.top_blocked_domains = [(a, n) for a, n in s.execute(
        select(MessageRow.from_domain, func.count()).where(*bad).group_by(MessageRow.from_domain)
        .order_by(func.count().desc()).limit(top))]
    # Symbol groups: JSON lists are read in Python (bounded to the window, newest 20k rows).
    # The row type is spelled out: SQLAlchemy's typed `select` overloads do not match a
    # `Mapped[list]` column, and mypy unpacks an untyped row into objects.
    groups: dict[str, int] = {}
    scan_ms: list[float] = []
    recent: Result[list[Any], float] = s.execute(
        select(MessageRow.symbols, MessageRow.scan_ms).where(*base)
        .order_by(MessageRow.received_at.desc()).limit(20000))
    for syms, ms in recent:
        seen = set()
        for sym in syms or []:
            if isinstance(sym, dict) and float(sym.get("score") or 0) > 0:
                g = str(sym.get("group") or _family_of(str(sym.get("name", ""))))
                seen.add(g)
        for g in seen:
            groups[g] = groups.get(g, 0) + 1
        scan_ms.append(float(ms or 0.0))
    st.by_group = sorted(groups.items(), key=lambda kv: -kv[1])[:top]
    if scan_ms:
        scan_ms.sort()
        st.scan_ms_avg = round(sum(scan_ms) / len(scan_ms), 2)
        st.scan_ms_p95 = round(scan_ms[min(len(scan_ms) - 1, int(len(scan_ms) * 0.95))], 2)
    rs = (select(func.sum(case((RecipientRow.status == "failed", 1), else_=0)),
                 func.sum(case((RecipientRow.status == "deferred", 1), else_=0)))
          .join(MessageRow, MessageRow.id == RecipientRow.message_id).where(MessageRow.received_at >= since))
    if not scope.all:
        rs = rs.where(or_(RecipientRow.domain.in_(scope.domains), RecipientRow.address.in_(scope.addresses)))
    sums: Row[int | None, int | None] = s.execute(rs).one()  # SUMs are NULL over no rows
    failed, deferred = sums
    st.failed_recipients, st.deferred_recipients = int(failed or 0), int(deferred or 0)
    return st


def _family_of(symbol: str) -> str:
    return symbol.split("_", 1)[0].lower() if symbol else "other"


def totals_for_metrics(s: Session) -> dict[str, Any]:
    """All-time counts for Prometheus (cheap GROUP BYs on indexed columns)."""
    out: dict[str, Any] = {}
    out["messages"] = [(d, c, a, n) for d, c, a, n in s.execute(
        select(MessageRow.direction, MessageRow.category, MessageRow.action, func.count())
        .group_by(MessageRow.direction, MessageRow.category, MessageRow.action))]
    out["recipients"] = [(st, n) for st, n in s.execute(
        select(RecipientRow.status, func.count()).group_by(RecipientRow.status))]
    out["quarantine_held"] = s.scalar(select(func.count()).select_from(QuarantineRow).where(
        QuarantineRow.deleted_at.is_(None), QuarantineRow.released_at.is_(None))) or 0
    out["scan_ms_sum"], out["scan_count"] = s.execute(
        select(func.coalesce(func.sum(MessageRow.scan_ms), 0.0), func.count())
        .select_from(MessageRow)).one()
    return out
