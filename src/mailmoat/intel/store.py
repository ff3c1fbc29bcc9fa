"""Indicators, feed state and hunts in the database.

`apply_batch` is the one writer of indicators: idempotent (a value read twice is one row,
keyed per feed by source id, kind and value), never letting an older version of a STIX
object overwrite a newer one, and withdrawing what a feed no longer holds (revoked=True):
for feeds read whole, whatever is not in this read; for a STIX object read again, the
values its new pattern dropped; for a MISP event read again, the attributes it dropped,
and for a static MISP feed, the events gone from its manifest. It returns the rows a
retro-hunt must look for: new live values, and values that came back to life or whose
confidence rose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mailmoat.intel.model import FeedBatch, Indicator
from mailmoat.store.models import IntelFeedRow, IntelHuntRow, IntelIndicatorRow

__all__ = ["ApplyResult", "apply_batch", "feed_state", "indicator_key", "is_live",
           "live_rows", "live_version", "record_poll"]


def indicator_key(source_id: str, kind: str, value: str) -> str:
    return hashlib.sha256(f"{source_id}\x00{kind}\x00{value}".encode()).hexdigest()


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns: they were written in UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


class _Validity(Protocol):
    @property
    def revoked(self) -> bool: ...
    @property
    def valid_from(self) -> datetime | None: ...
    @property
    def valid_until(self) -> datetime | None: ...


def is_live(row: _Validity, now: datetime) -> bool:
    """Not revoked, not expired, and already valid."""
    if row.revoked:
        return False
    until, start = _aware(row.valid_until), _aware(row.valid_from)
    if until is not None and until <= now:
        return False
    return start is None or start <= now


@dataclass
class ApplyResult:
    added: int = 0
    changed: int = 0
    withdrawn: int = 0
    to_hunt: list[int] = field(default_factory=list)  # indicator row ids


def _withdraw(row: IntelIndicatorRow, now: datetime, result: ApplyResult) -> None:
    if not row.revoked:
        row.revoked = True
        row.updated_at = now
        result.withdrawn += 1


def apply_batch(s: Session, feed: str, batch: FeedBatch, now: datetime) -> ApplyResult:
    result = ApplyResult()
    incoming: dict[str, Indicator] = {}
    for ind in batch.indicators:
        incoming[indicator_key(ind.source_id, ind.kind, ind.value)] = ind
    q = select(IntelIndicatorRow).where(IntelIndicatorRow.feed == feed)
    whole_feed = batch.snapshot or batch.replaced_groups or batch.live_groups is not None
    existing: dict[str, IntelIndicatorRow] = {}
    if whole_feed:
        existing = {r.key: r for r in s.scalars(q)}
    else:
        sources = sorted({i.source_id for i in incoming.values()})
        for i in range(0, len(sources), 500):
            for r in s.scalars(q.where(IntelIndicatorRow.source_id.in_(sources[i:i + 500]))):
                existing[r.key] = r
    # A source (STIX object, MISP attribute) read in an older version than the one stored
    # is passed over whole: none of its values are added, changed or withdrawn.
    newest: dict[str, datetime] = {}
    for r in existing.values():
        mod = _aware(r.source_modified)
        if mod is not None and (r.source_id not in newest or mod > newest[r.source_id]):
            newest[r.source_id] = mod
    stale = {i.source_id for i in incoming.values()
             if i.modified is not None and i.source_id in newest
             and i.modified < newest[i.source_id]}
    seen_sources = {i.source_id for i in incoming.values()}
    incoming = {k: i for k, i in incoming.items() if i.source_id not in stale}
    fresh: list[IntelIndicatorRow] = []
    for key, ind in incoming.items():
        row = existing.get(key)
        group = batch.groups.get((ind.source_id, ind.kind, ind.value), "")
        if row is None:
            row = IntelIndicatorRow(
                feed=feed, key=key, source_id=ind.source_id, kind=ind.kind, value=ind.value,
                also=[list(f) for f in ind.also], confidence=ind.confidence,
                valid_from=ind.valid_from, valid_until=ind.valid_until, revoked=ind.revoked,
                label=ind.label, group_id=group, source_modified=ind.modified,
                first_seen=now, updated_at=now)
            s.add(row)
            existing[key] = row
            result.added += 1
            if is_live(row, now):
                fresh.append(row)
            continue
        was_live, old_conf = is_live(row, now), row.confidence
        new = {"also": [list(f) for f in ind.also], "confidence": ind.confidence,
               "valid_from": ind.valid_from, "valid_until": ind.valid_until,
               "revoked": ind.revoked, "label": ind.label, "group_id": group,
               "source_modified": ind.modified}
        if any(_differs(getattr(row, k), v) for k, v in new.items()):
            for k, v in new.items():
                setattr(row, k, v)
            row.updated_at = now
            result.changed += 1
            if is_live(row, now) and (not was_live or row.confidence > old_conf):
                fresh.append(row)
    # What the feed withdrew.
    for key, row in existing.items():
        if key in incoming or row.source_id in stale:
            continue
        if (batch.snapshot
                or row.source_id in seen_sources  # a new version dropped this value
                or (row.group_id and row.group_id in batch.replaced_groups)
                or (batch.live_groups is not None and row.group_id
                    and row.group_id not in batch.live_groups)):
            _withdraw(row, now, result)
    s.flush()
    result.to_hunt = [r.id for r in fresh]
    return result


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, datetime) or isinstance(new, datetime):
        return _aware(old) != _aware(new)
    return bool(old != new)


def feed_state(s: Session, name: str, kind: str) -> IntelFeedRow:
    row = s.get(IntelFeedRow, name)
    if row is None:
        row = IntelFeedRow(name=name, kind=kind, cursor="", last_status="never", last_error="",
                           last_added=0, last_changed=0, last_withdrawn=0, last_skipped=0,
                           skipped=[])
        s.add(row)
    row.kind = kind
    return row


def record_poll(s: Session, name: str, kind: str, now: datetime, *, error: str = "",
                cursor: str | None = None, result: ApplyResult | None = None,
                batch: FeedBatch | None = None) -> None:
    row = feed_state(s, name, kind)
    row.last_poll_at = now
    if error:
        row.last_status, row.last_error = "error", error[:2000]
        return
    row.last_status, row.last_error, row.last_success_at = "ok", "", now
    if cursor is not None:
        row.cursor = cursor
    if result is not None:
        row.last_added, row.last_changed = result.added, result.changed
        row.last_withdrawn = result.withdrawn
    if batch is not None:
        row.last_skipped, row.skipped = batch.skipped_count, list(batch.skipped)


def live_rows(s: Session, now: datetime) -> list[IntelIndicatorRow]:
    """Indicators that are not revoked or expired (those valid only from a later time are
    included: the matcher checks `valid_from` at match time)."""
    q = select(IntelIndicatorRow).where(
        IntelIndicatorRow.revoked.is_(False),
        (IntelIndicatorRow.valid_until.is_(None)) | (IntelIndicatorRow.valid_until > now))
    return list(s.scalars(q))


def live_version(s: Session) -> tuple[int, str]:
    """Changes whenever an indicator is written: (rows, newest updated_at)."""
    n, newest = s.execute(select(func.count(IntelIndicatorRow.id),
                                 func.max(IntelIndicatorRow.updated_at))).one()
    return int(n or 0), str(newest or "")


def hunts(s: Session, *, mode: str | None = None, status: Sequence[str] | None = None,
          feed: str | None = None, limit: int = 100) -> list[IntelHuntRow]:
    q = select(IntelHuntRow).order_by(IntelHuntRow.id.desc()).limit(limit)
    if mode:
        q = q.where(IntelHuntRow.mode == mode)
    if status:
        q = q.where(IntelHuntRow.status.in_(list(status)))
    if feed:
        q = q.where(IntelHuntRow.feed == feed)
    return list(s.scalars(q))


def rows_by_id(s: Session, ids: Iterable[int]) -> list[IntelIndicatorRow]:
    ids = sorted(set(ids))
    out: list[IntelIndicatorRow] = []
    for i in range(0, len(ids), 500):
        out.extend(s.scalars(select(IntelIndicatorRow)
                             .where(IntelIndicatorRow.id.in_(ids[i:i + 500]))))
    return out


def purge_withdrawn(s: Session, before: datetime) -> int:
    """Delete indicators revoked or expired before `before` (their hunts stay: they are
    the record of what was recalled and why). How many were deleted."""
    result = s.execute(delete(IntelIndicatorRow).where(
        ((IntelIndicatorRow.revoked.is_(True)) & (IntelIndicatorRow.updated_at < before))
        | (IntelIndicatorRow.valid_until < before)))
    return int(getattr(result, "rowcount", 0) or 0)
