"""What the CLI and the REST API read and ask of threat intelligence, as plain dicts: feed
status, indicators, hunts and the approval queue, and a hunt on demand. Nothing here returns
a secret: feeds are described by name, kind, URL and state only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from mailmoat.config import Config
from mailmoat.intel.fetch import redact
from mailmoat.intel.hunt import hand_to_recall, hunt, match_indicators
from mailmoat.intel.settings import intel_settings
from mailmoat.intel.store import hunts, is_live, live_rows, rows_by_id
from mailmoat.recall.index import OBSERVABLE_KINDS, normalise
from mailmoat.store.db import Database
from mailmoat.store.models import IntelFeedRow, IntelHuntRow, IntelIndicatorRow

__all__ = ["feed_status", "hunt_dict", "hunt_now", "hunt_page", "indicator_dict",
           "indicator_page"]


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


def feed_status(config: Config, db: Database) -> list[dict[str, Any]]:
    """Every configured feed (and any the database still holds indicators of), with its
    last poll and its number of live indicators."""
    settings = intel_settings(config)
    now = datetime.now(UTC)
    with db.session() as s:
        states = {r.name: r for r in s.scalars(select(IntelFeedRow))}
        live = dict(s.execute(
            select(IntelIndicatorRow.feed, func.count(IntelIndicatorRow.id))
            .where(IntelIndicatorRow.revoked.is_(False),
                   (IntelIndicatorRow.valid_until.is_(None))
                   | (IntelIndicatorRow.valid_until > now))
            .group_by(IntelIndicatorRow.feed)).all())
    out: list[dict[str, Any]] = []
    configured = {f.name: f for f in settings.feeds}
    for name in [*configured, *sorted(set(states) - set(configured))]:
        f = configured.get(name)
        st = states.get(name)
        out.append({
            "name": name, "kind": f.kind if f else (st.kind if st else ""),
            "configured": f is not None, "enabled": bool(f and f.enabled and settings.enabled),
            "url": redact(f.url) if f and f.url else (f.path if f else ""),
            "collection": f.collection if f else "",
            "poll_interval": f.poll_interval if f else None,
            "auto_recall_confidence": f.auto_recall_confidence if f else None,
            "lookback_days": f.lookback_days if f else None,
            "last_status": st.last_status if st else "never",
            "last_poll_at": _iso(st.last_poll_at) if st else None,
            "last_success_at": _iso(st.last_success_at) if st else None,
            "last_error": st.last_error if st else "",
            "last_added": st.last_added if st else 0,
            "last_changed": st.last_changed if st else 0,
            "last_withdrawn": st.last_withdrawn if st else 0,
            "last_skipped": st.last_skipped if st else 0,
            "skipped": list(st.skipped or []) if st else [],
            "live_indicators": int(live.get(name, 0)),
        })
    return out


def indicator_dict(r: IntelIndicatorRow, now: datetime) -> dict[str, Any]:
    return {"id": r.id, "feed": r.feed, "source_id": r.source_id, "kind": r.kind,
            "value": r.value, "also": [list(x) for x in r.also or []],
            "confidence": r.confidence, "valid_from": _iso(r.valid_from),
            "valid_until": _iso(r.valid_until), "revoked": r.revoked, "live": is_live(r, now),
            "label": r.label, "first_seen": _iso(r.first_seen), "updated_at": _iso(r.updated_at)}


def indicator_page(db: Database, *, feed: str | None = None, kind: str | None = None,
                   value: str | None = None, live_only: bool = True,
                   limit: int = 100) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    q = select(IntelIndicatorRow).order_by(IntelIndicatorRow.id.desc()).limit(limit)
    if feed:
        q = q.where(IntelIndicatorRow.feed == feed)
    if kind:
        if kind not in OBSERVABLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(OBSERVABLE_KINDS)}")
        q = q.where(IntelIndicatorRow.kind == kind)
        if value:
            q = q.where(IntelIndicatorRow.value == normalise(kind, value))
    elif value:
        q = q.where(IntelIndicatorRow.value == value.strip())
    if live_only:
        q = q.where(IntelIndicatorRow.revoked.is_(False),
                    (IntelIndicatorRow.valid_until.is_(None))
                    | (IntelIndicatorRow.valid_until > now))
    with db.session() as s:
        return [indicator_dict(r, now) for r in s.scalars(q)]


def hunt_dict(h: IntelHuntRow) -> dict[str, Any]:
    return {"id": h.id, "at": _iso(h.at), "feed": h.feed, "indicator_id": h.indicator_id,
            "source_id": h.source_id, "kind": h.kind, "value": h.value,
            "confidence": h.confidence, "mode": h.mode, "status": h.status,
            "message_ids": list(h.message_ids or []),
            "recipients": [{"id": m, "recipient": a} for m, a in h.recipients or []],
            "job_id": h.job_id, "error": h.error, "origin": h.origin}


def hunt_page(db: Database, *, mode: str | None = None, status: list[str] | None = None,
              feed: str | None = None, limit: int = 100,
              hunt_id: int | None = None) -> list[dict[str, Any]]:
    with db.session() as s:
        if hunt_id is not None:
            row = s.get(IntelHuntRow, hunt_id)
            return [hunt_dict(row)] if row is not None else []
        return [hunt_dict(h) for h in hunts(s, mode=mode, status=status, feed=feed,
                                             limit=limit)]


def hunt_now(config: Config, db: Database, *, feed: str | None = None,
             kind: str | None = None, value: str | None = None, days: float = 14.0,
             recall: bool = False) -> list[dict[str, Any]]:
    """A retro-hunt on demand. With `kind` and `value`: that one value over `days`, reported
    only. Otherwise the live indicators (of `feed`, or all), each over its feed's look-back;
    with `recall`, recorded as hunts (origin manual) and handed to recall as a poll would."""
    now = datetime.now(UTC)
    feeds = {f.name: f for f in intel_settings(config).feeds}
    if feed is not None and feed not in feeds:
        raise ValueError(f"no feed named {feed} in [[intel.feeds]]")
    if kind is not None and value is not None:
        if kind not in OBSERVABLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(OBSERVABLE_KINDS)}")
        probe = IntelIndicatorRow(id=0, feed="", source_id="", kind=kind,
                                  value=normalise(kind, value), also=[], confidence=0)
        with db.session() as s:
            found = match_indicators(s, [probe], {"": days}, now, default_days=days)
        return [{"feed": "", "source_id": "", "kind": m.kind, "value": m.value,
                 "confidence": 0, "message_ids": list(m.message_ids),
                 "recipients": [{"id": a, "recipient": b} for a, b in m.recipients]}
                for m in found]
    with db.session() as s:
        ids = [r.id for r in live_rows(s, now) if (feed is None or r.feed == feed)
               and r.feed in feeds and is_live(r, now)]
    if recall:
        recorded = hunt(db, feeds, ids, recall=hand_to_recall, origin="manual", now=now)
        return [hunt_dict(h) for h in recorded]
    lookback = {n: f.lookback_days for n, f in feeds.items()}
    out: list[dict[str, Any]] = []
    with db.session() as s:
        rows = rows_by_id(s, ids)
        for m in match_indicators(s, rows, lookback, now):
            out.append({"feed": m.feed, "source_id": m.source_id, "kind": m.kind,
                        "value": m.value, "confidence": m.confidence,
                        "message_ids": list(m.message_ids),
                        "recipients": [{"id": a, "recipient": b} for a, b in m.recipients]})
    return out
