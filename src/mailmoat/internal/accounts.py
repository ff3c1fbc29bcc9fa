"""Account state an administrator acts on: restrictions (hold, throttle, suspend, and
their release) and incidents (a flagged account, and what it sent).

The gateway keeps the restrictions in memory and writes each change through to the
database (so a suspension survives a restart) and, with `[redis] url`, to Redis (so every
node refuses the account at once). The console, the REST API and the CLI change them with
`restrict_account` / `release_account`, which write the same two places and the audit
log; a gateway reads rows changed elsewhere every `[internal] sync_seconds`.

An incident's messages are the message log's rows with its `sender_account` from the
incident's `window_start` until it closes. `incident_message_ids()` is the stable way for
other features (recall) to ask which of them were delivered.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailmoat.config import Config
from mailmoat.errors import StoreError
from mailmoat.store.db import Database
from mailmoat.store.models import (
    InternalIncidentRow,
    InternalRestrictionRow,
    MessageRow,
    RecipientRow,
)

log = logging.getLogger(__name__)

KINDS = ("hold", "throttle", "suspend")
MAX_MINUTES = 10 * 365 * 24 * 60  # a restriction or a grace of at most ten years
REDIS_KEY = "internal:r:"


def to_dt(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def to_dt_or_none(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


def from_dt(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands timezone-aware columns back naive, in UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class Restriction:
    account: str
    kind: str  # hold | throttle | suspend
    reply: str  # 4xx | 5xx (suspend)
    since: float
    until: float | None  # None: until released
    by: str  # "mailmoat" when the gateway flagged it, else the administrator
    reason: str
    incident_id: int | None = None
    released_at: float | None = None
    released_by: str = ""
    grace_until: float | None = None  # after a release: flags nothing until then
    updated_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.released_at is None and (self.until is None or now < self.until)

    def in_grace(self, now: float) -> bool:
        return self.grace_until is not None and now < self.grace_until

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Restriction | None:
        try:
            d = json.loads(text)
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        if self.released_at is not None:
            return f"released by {self.released_by or '?'}"
        end = to_dt_or_none(self.until)
        until = "until released" if end is None else f"until {end:%Y-%m-%d %H:%M} UTC"
        return {"hold": "mail held", "throttle": "throttled",
                "suspend": "suspended"}.get(self.kind, self.kind) + f" {until}"


def restriction_of(row: InternalRestrictionRow) -> Restriction:
    return Restriction(account=row.account, kind=row.kind, reply=row.reply,
                       since=from_dt(row.since) or 0.0, until=from_dt(row.until), by=row.actor,
                       reason=row.reason, incident_id=row.incident_id,
                       released_at=from_dt(row.released_at), released_by=row.released_by,
                       grace_until=from_dt(row.grace_until),
                       updated_at=from_dt(row.updated_at) or 0.0)


def save_restriction(s: Session, r: Restriction) -> None:
    row = s.get(InternalRestrictionRow, r.account) or InternalRestrictionRow(account=r.account)
    row.kind, row.reply, row.since = r.kind, r.reply, to_dt(r.since)
    row.until = to_dt_or_none(r.until)
    row.actor, row.reason, row.incident_id = r.by[:255], r.reason, r.incident_id
    row.released_at, row.released_by = to_dt_or_none(r.released_at), r.released_by[:255]
    row.grace_until = to_dt_or_none(r.grace_until)
    # The wall clock, not the message's: it orders changes for the nodes that read them.
    row.updated_at = datetime.now(UTC)
    s.merge(row)


def load_restrictions(db: Database, changed_since: datetime | None = None
                      ) -> tuple[list[Restriction], datetime | None]:
    """Restrictions changed since `changed_since` (all when None), and the newest change."""
    with db.session() as s:
        stmt = select(InternalRestrictionRow)
        if changed_since is not None:
            stmt = stmt.where(InternalRestrictionRow.updated_at > changed_since)
        rows = list(s.scalars(stmt))
    newest = max((r.updated_at for r in rows), default=changed_since)
    if newest is not None and newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return [restriction_of(r) for r in rows], newest


def get_restriction(db: Database, account: str) -> Restriction | None:
    with db.session() as s:
        row = s.get(InternalRestrictionRow, account.lower())
        return restriction_of(row) if row is not None else None


# -- incidents -------------------------------------------------------------------------------

@dataclass
class Incident:
    id: int
    account: str
    opened_at: float
    window_start: float
    last_at: float
    status: str
    action: str
    score: float
    signals: list[dict[str, Any]] = field(default_factory=list)
    flagged_messages: int = 0
    refused: int = 0
    deferred: int = 0
    closed_at: float | None = None
    closed_by: str = ""
    note: str = ""
    node: str = ""


def incident_of(row: InternalIncidentRow) -> Incident:
    return Incident(id=row.id, account=row.account, opened_at=from_dt(row.opened_at) or 0.0,
                    window_start=from_dt(row.window_start) or 0.0,
                    last_at=from_dt(row.last_at) or 0.0, status=row.status, action=row.action,
                    score=row.score, signals=list(row.signals or []),
                    flagged_messages=row.flagged_messages, refused=row.refused,
                    deferred=row.deferred, closed_at=from_dt(row.closed_at),
                    closed_by=row.closed_by, note=row.note, node=row.node)


def merge_signals(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per symbol: the strongest reading of each."""
    best: dict[str, dict[str, Any]] = {s["name"]: s for s in old}
    for s in new:
        if s["name"] not in best or s["score"] > best[s["name"]]["score"]:
            best[s["name"]] = s
    return sorted(best.values(), key=lambda s: -s["score"])


def record_flag(db: Database, *, account: str, at: float, window_start: float, action: str,
                score: float, signals: list[dict[str, Any]], node: str) -> int:
    """Open an incident for `account`, or add this flag to its open one; its id."""
    with db.session() as s:
        row = s.scalars(select(InternalIncidentRow).where(
            InternalIncidentRow.account == account, InternalIncidentRow.status == "open")
            .order_by(InternalIncidentRow.id.desc()).limit(1)).first()
        if row is None:
            row = InternalIncidentRow(
                account=account, opened_at=to_dt(at), window_start=to_dt(window_start),
                last_at=to_dt(at), status="open", action=action, score=score,
                signals=signals, flagged_messages=1, refused=0, deferred=0, closed_by="",
                note="", node=node[:255])
            s.add(row)
        else:
            row.last_at = to_dt(at)
            row.score = max(row.score, score)
            row.signals = merge_signals(list(row.signals or []), signals)
            row.flagged_messages += 1
            if action and action != "tag":
                row.action = action
        s.flush()
        return int(row.id)


def add_incident_counts(db: Database, counts: dict[int, tuple[int, int]]) -> None:
    """Add (refused, deferred) attempts to incidents."""
    if not counts:
        return
    with db.session() as s:
        for incident_id, (refused, deferred) in counts.items():
            s.execute(update(InternalIncidentRow).where(InternalIncidentRow.id == incident_id)
                      .values(refused=InternalIncidentRow.refused + refused,
                              deferred=InternalIncidentRow.deferred + deferred))


def open_incident_ids(db: Database) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(select(InternalIncidentRow.account, InternalIncidentRow.id)
                         .where(InternalIncidentRow.status == "open")
                         .order_by(InternalIncidentRow.id)).all()
    return {a: i for a, i in rows}


def list_incidents(db: Database, *, account: str | None = None, status: str | None = None,
                   limit: int = 100, before_id: int | None = None) -> list[Incident]:
    with db.session() as s:
        stmt = select(InternalIncidentRow)
        if account:
            stmt = stmt.where(InternalIncidentRow.account == account.lower())
        if status:
            stmt = stmt.where(InternalIncidentRow.status == status)
        if before_id is not None:
            stmt = stmt.where(InternalIncidentRow.id < before_id)
        rows = s.scalars(stmt.order_by(InternalIncidentRow.id.desc()).limit(limit)).all()
        return [incident_of(r) for r in rows]


def get_incident(db: Database, incident_id: int) -> Incident:
    with db.session() as s:
        row = s.get(InternalIncidentRow, incident_id)
        if row is None:
            raise StoreError(f"no incident {incident_id}")
        return incident_of(row)


def close_incident(db: Database, incident_id: int, actor: str, note: str = "") -> Incident:
    from mailmoat.store.quarantine import audit

    with db.session() as s:
        row = s.get(InternalIncidentRow, incident_id)
        if row is None:
            raise StoreError(f"no incident {incident_id}")
        if row.status != "closed":
            row.status, row.closed_at, row.closed_by = "closed", datetime.now(UTC), actor[:255]
            row.note = note
        inc = incident_of(row)
    audit(db, actor, "internal.incident.close", f"incident:{incident_id}",
          account=inc.account, note=note)
    return inc


@dataclass(frozen=True)
class IncidentMessage:
    id: str  # the X-Mailmoat-ID
    message_id: str  # the Message-ID header, for recall at the mailbox
    received_at: float
    subject: str
    action: str  # the verdict: accept, tag, quarantine, reject
    recipients: dict[str, str]  # address -> delivery status
    status: str  # delivered | held | rejected | queued | failed | released | mixed


def _summary(statuses: list[str]) -> str:
    names = {"quarantined": "held", "deferred": "queued"}
    seen = {names.get(s, s) for s in statuses}
    return seen.pop() if len(seen) == 1 else "mixed" if seen else "queued"


def incident_messages(db: Database, incident_id: int, limit: int = 10_000
                      ) -> list[IncidentMessage]:
    """What the incident's account sent from the incident's window start until it closed
    (until now while open), oldest first, each with its delivery status per recipient."""
    inc = get_incident(db, incident_id)
    with db.session() as s:
        stmt = select(MessageRow).where(MessageRow.sender_account == inc.account,
                                        MessageRow.received_at >= to_dt(inc.window_start))
        if inc.closed_at is not None:
            stmt = stmt.where(MessageRow.received_at <= to_dt(max(inc.closed_at, inc.last_at)))
        msgs = list(s.scalars(stmt.order_by(MessageRow.received_at).limit(limit)))
        ids = [m.id for m in msgs]
        status: dict[str, dict[str, str]] = {i: {} for i in ids}
        for chunk in range(0, len(ids), 500):
            for mid, addr, st in s.execute(
                    select(RecipientRow.message_id, RecipientRow.address, RecipientRow.status)
                    .where(RecipientRow.message_id.in_(ids[chunk:chunk + 500]))):
                status[mid][addr] = st
        return [IncidentMessage(id=m.id, message_id=m.message_id,
                                received_at=from_dt(m.received_at) or 0.0, subject=m.subject,
                                action=m.action, recipients=status[m.id],
                                status=_summary(list(status[m.id].values())))
                for m in msgs]


def incident_message_ids(db: Database, incident_id: int,
                         statuses: tuple[str, ...] = ("delivered",)) -> list[str]:
    """The mailmoat IDs (X-Mailmoat-ID, `messages.id`) of the incident's messages that
    reached at least one recipient in one of `statuses` (default: delivered), oldest
    first: what recall takes back from the mailboxes. Stable interface for the recall
    feature; `incident_messages()` has the per-recipient detail."""
    return [m.id for m in incident_messages(db, incident_id)
            if any(st in statuses for st in m.recipients.values())]


# -- administrators' actions -----------------------------------------------------------------

def _redis_put(config: Config, r: Restriction) -> None:
    if not config.redis.url:
        return
    import redis

    client = redis.Redis.from_url(config.redis.url, socket_timeout=2)
    try:
        client.set(f"{config.redis.key_prefix}{REDIS_KEY}{r.account}", r.to_json())
    except redis.RedisError as exc:  # the database has it; nodes read it within sync_seconds
        log.warning("could not write %s's restriction to Redis (%s); gateways see it within "
                    "[internal] sync_seconds", r.account, exc)
    finally:
        client.close()


def restrict_account(config: Config, db: Database, account: str, actor: str, *,
                     kind: str = "suspend", minutes: float = 0, reason: str = "",
                     reply: str = "4xx", now: float | None = None) -> Restriction:
    """Hold, throttle or suspend an account by hand (console, API, CLI); audited."""
    from mailmoat.store.quarantine import audit

    if kind not in KINDS:
        raise StoreError(f"kind must be one of {', '.join(KINDS)}")
    if reply not in ("4xx", "5xx"):
        raise StoreError("reply must be 4xx or 5xx")
    if not 0 <= minutes <= MAX_MINUTES:
        raise StoreError("minutes must be between 0 (until released) and ten years")
    account = account.strip().lower()
    if not account or len(account) > 254 or not account.isprintable() or " " in account:
        raise StoreError("not an account: give its address (or login name)")
    at = datetime.now(UTC).timestamp() if now is None else now
    r = Restriction(account=account, kind=kind, reply=reply, since=at,
                    until=at + minutes * 60 if minutes > 0 else None, by=actor,
                    reason=reason or f"{kind} by {actor}")
    with db.session() as s:
        old = s.get(InternalRestrictionRow, account)
        if old is not None and old.incident_id is not None and old.released_at is None:
            r.incident_id = old.incident_id
        save_restriction(s, r)
    _redis_put(config, r)
    audit(db, actor, f"internal.{kind}", account, minutes=minutes, reason=reason, reply=reply)
    return r


def release_account(config: Config, db: Database, account: str, actor: str, *,
                    grace_hours: float | None = None, now: float | None = None) -> Restriction:
    """Lift an account's restriction; its mail flows again and flags nothing for
    `grace_hours` (default `[internal] release_grace_hours`). Audited."""
    from mailmoat.internal.settings import InternalSettings
    from mailmoat.store.quarantine import audit

    account = account.strip().lower()
    if grace_hours is None:
        grace_hours = config.section("internal", InternalSettings).release_grace_hours
    if not 0 <= grace_hours <= MAX_MINUTES / 60:
        raise StoreError("grace hours must be between 0 and ten years")
    at = datetime.now(UTC).timestamp() if now is None else now
    with db.session() as s:
        row = s.get(InternalRestrictionRow, account)
        if row is None:
            raise StoreError(f"{account} is not restricted")
        r = restriction_of(row)
        if r.released_at is not None:
            raise StoreError(f"{account} was already released by {r.released_by}")
        r.released_at, r.released_by = at, actor
        r.grace_until = at + grace_hours * 3600 if grace_hours > 0 else None
        save_restriction(s, r)
    _redis_put(config, r)
    audit(db, actor, "internal.release", account, grace_hours=grace_hours)
    return r


# -- what the console, the API and the CLI show --------------------------------------------

def baseline_summary(state: dict[str, Any]) -> dict[str, Any]:
    """The learned baseline of an account in words an administrator reads."""
    from mailmoat.internal.baseline import METRICS, AccountBaseline

    b = AccountBaseline.from_dict(state)
    peaks = dict(zip(METRICS, (round(p, 1) for p in b.decayed_peaks(b.last_seen))))
    return {
        "first_seen": to_dt(b.first_seen).isoformat() if b.first_seen else None,
        "last_seen": to_dt(b.last_seen).isoformat() if b.last_seen else None,
        "messages_learned": b.learned, "days_with_mail": b.days,
        "busiest_hour": peaks, "internal_recipients": b.internal_rcpts,
        "external_recipients": b.external_rcpts,
        "networks": sorted(b.networks), "agents": sorted(b.agents),
        "attachment_types": sorted(b.types), "messages_objected_to": b.bad,
        "last_flagged": to_dt(b.flagged_at).isoformat() if b.flagged_at else None,
    }


def account_view(db: Database, account: str) -> dict[str, Any]:
    """Restriction, learned baseline and incidents of one account."""
    from mailmoat.store.models import InternalBaselineRow

    account = account.strip().lower()
    with db.session() as s:
        row = s.get(InternalBaselineRow, account)
        state = dict(row.state) if row is not None else None
    r = get_restriction(db, account)
    return {"account": account, "restriction": r,
            "baseline": baseline_summary(state) if state else None,
            "incidents": list_incidents(db, account=account, limit=20)}


def list_restrictions(db: Database, *, include_released: bool = False,
                      now: float | None = None) -> list[Restriction]:
    """Accounts held, throttled or suspended now (and with `include_released`, every
    account ever restricted), most recent first."""
    at = datetime.now(UTC).timestamp() if now is None else now
    rs, _ = load_restrictions(db)
    if not include_released:
        rs = [r for r in rs if r.active(at)]
    return sorted(rs, key=lambda r: -r.since)
