"""What the CLI, the REST API and the console read and ask of threat intelligence, as plain
dicts: feed status, indicators, hunts (with the recall job each was handed to) and the
approval queue and its decisions, and a hunt on demand. Nothing here returns a secret:
feeds are described by name, kind, URL and state only."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from mailmoat.config import Config
from mailmoat.intel.fetch import redact
from mailmoat.intel.hunt import bind_recall, hand_to_recall, hunt, match_indicators
from mailmoat.intel.settings import intel_settings
from mailmoat.intel.store import hunts, is_live, live_rows, rows_by_id
from mailmoat.recall.index import OBSERVABLE_KINDS, normalise
from mailmoat.store.db import Database
from mailmoat.store.models import IntelFeedRow, IntelHuntRow, IntelIndicatorRow, MessageRow
from mailmoat.store.quarantine import audit

__all__ = ["QueueError", "attach_jobs", "decide_queued", "feed_status", "hunt_detail",
           "hunt_dict", "hunt_now", "hunt_page", "indicator_dict", "indicator_page"]


class QueueError(ValueError):
    """An approval-queue decision that cannot be made (no such hunt, not queued, not
    handed to recall yet, or recall refused it); the text says which."""


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
                   limit: int = 100, contains: str | None = None) -> list[dict[str, Any]]:
    """Indicators, newest first: of `feed` and `kind`, equal to `value` (normalised as the
    kind's values are), or holding `contains` anywhere in the value or label."""
    now = datetime.now(UTC)
    q = select(IntelIndicatorRow).order_by(IntelIndicatorRow.id.desc()).limit(limit)
    if contains and contains.strip():
        needle = contains.strip().lower()
        q = q.where(func.lower(IntelIndicatorRow.value).contains(needle, autoescape=True)
                    | func.lower(IntelIndicatorRow.label).contains(needle, autoescape=True))
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


def _jobs_module() -> Any:
    # The recall side, loaded when first asked for, as hunt.hand_to_recall loads it.
    return importlib.import_module("mailmoat.recall.jobs")


def attach_jobs(db: Database, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each hunt dict with its recall job's `job_state` ("" before it is handed, or when
    the job is gone) and `job_counts` (the job's mailbox copies by status)."""
    wanted = sorted({int(h["job_id"]) for h in items if str(h.get("job_id") or "").isdigit()})
    views = _jobs_module().get_jobs(db, wanted) if wanted else {}
    for h in items:
        v = views.get(int(h["job_id"])) if str(h.get("job_id") or "").isdigit() else None
        h["job_state"] = v.state if v is not None else ""
        h["job_counts"] = dict(v.counts) if v is not None else {}
    return items


def hunt_detail(db: Database, hunt_id: int) -> dict[str, Any] | None:
    """One hunt as the console shows it: the hunt, the indicator it was (if still stored),
    the messages it matched (subject, sender, time), its recall job and that job's
    per-recipient outcome. None when there is no such hunt."""
    found = hunt_page(db, hunt_id=hunt_id)
    if not found:
        return None
    h = attach_jobs(db, found)[0]
    now = datetime.now(UTC)
    with db.session() as s:
        ind = s.get(IntelIndicatorRow, h["indicator_id"]) if h["indicator_id"] else None
        h["indicator"] = indicator_dict(ind, now) if ind is not None else None
        rows = {r.id: r for r in s.scalars(select(MessageRow).where(
            MessageRow.id.in_(h["message_ids"][:1000])))}
        h["messages"] = [{"id": m, "subject": rows[m].subject if m in rows else "",
                          "mail_from": rows[m].mail_from if m in rows else "",
                          "received_at": _iso(rows[m].received_at) if m in rows else None}
                         for m in h["message_ids"]]
    jobs = _jobs_module()
    h["job"] = jobs.get_jobs(db, [int(h["job_id"])]).get(int(h["job_id"])) \
        if str(h["job_id"]).isdigit() else None
    h["items"] = jobs.job_items(db, h["job"].id) if h["job"] is not None else []
    return h


def decide_queued(config: Config, db: Database, hunt_id: int, op: str, *, by: str,
                  note: str = "") -> dict[str, Any]:
    """Approve or deny the recall a queued hunt is waiting on, with recall's own
    `approve`/`deny` (which audit the decision on the job); the decision is audited on the
    hunt too. Returns the hunt with its job's new state. QueueError when it cannot be."""
    if op not in ("approve", "deny"):
        raise QueueError(f"unknown decision {op!r}: approve or deny")
    found = hunt_page(db, hunt_id=hunt_id)
    if not found:
        raise QueueError(f"no hunt {hunt_id}")
    h = found[0]
    if h["mode"] != "queued":
        raise QueueError(f"hunt {hunt_id} is not in the approval queue ({h['mode']})")
    if not str(h["job_id"]).isdigit():
        raise QueueError(f"hunt {hunt_id} has not been handed to recall yet ({h['status']}); "
                         "it is handed again on the feed's next poll")
    job_id = int(h["job_id"])
    jobs = _jobs_module()
    two_person = importlib.import_module("mailmoat.recall.settings").recall_settings(
        config).two_person_approval
    try:
        if op == "approve":
            jobs.approve(db, job_id, by=by, note=note, two_person=two_person)
        else:
            jobs.deny(db, job_id, by=by, note=note)
    except jobs.JobError as exc:
        raise QueueError(str(exc)) from exc
    audit(db, by, f"intel.{op}", f"intel-hunt:{hunt_id}", recall_job=job_id, note=note,
          feed=h["feed"], indicator=f"{h['kind']} {h['value'][:300]}",
          confidence=h["confidence"])
    return attach_jobs(db, [h])[0]


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
        recorded = hunt(db, feeds, ids, recall=bind_recall(config, hand_to_recall),
                        origin="manual", now=now)
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
