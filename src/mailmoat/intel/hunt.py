"""Retro-hunt: which delivered mail carries an indicator, and the one hand-over to recall.

Each indicator is looked up in the delivery index (recall/index.py `find_messages`) over its
feed's look-back window (`lookback_days`, counted from now; an indicator's `valid_from` does
not shorten it: the point is the mail that arrived before anyone knew). Indicators of one
kind are looked up together, so 10,000 indicators are a few hundred index probes. For the
matched messages, `deliveries` lists the copies that reached a mailbox.

Routing: at or above the feed's `auto_recall_confidence` the copies are handed to recall
approved (an automatic recall); below it they are handed unapproved, which is recall's
approval queue. A message is handed once: not again after an automatic hunt handed it, and
not queued again while a queued hunt holds it. Every hunt that matched is recorded in
`intel_hunts` first (status pending), then handed, then marked handed (with recall's job
id) or failed (with the reason); failed
hunts, and those a crash left pending, are handed again on the next poll, so a crash or an
unavailable recall loses nothing.

`hand_to_recall` is the only call into the recall side; callers (and tests) may pass any
function of the same signature instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailmoat.config import Config
from mailmoat.intel.settings import FeedSettings
from mailmoat.intel.store import rows_by_id
from mailmoat.recall.index import deliveries, find_messages
from mailmoat.store.db import Database
from mailmoat.store.models import IntelHuntRow, IntelIndicatorRow, ObservableRow

__all__ = ["HuntMatch", "RecallHandler", "bind_recall", "hand_to_recall", "hand_pending",
           "hunt", "match_indicators"]

log = logging.getLogger("mailmoat.intel")


class RecallHandler(Protocol):
    def __call__(self, db: Database, mailmoat_ids: Sequence[str], *, reason: str,
                 requested_by: str, source: str, approved: bool = True) -> str: ...


def hand_to_recall(db: Database, mailmoat_ids: Sequence[str], *, reason: str,
                   requested_by: str, source: str, approved: bool = True,
                   own_domains: Collection[str] | None = None) -> str:
    """Create a recall job for every delivered copy of these messages; its id.
    `approved=False` puts it in recall's approval queue instead of running it. Copies
    outside `own_domains` are kept in the job as left out (see `bind_recall`)."""
    # The recall side, imported when a hunt first hands something over; where it is not
    # installed the import error is the hunt's recorded reason and it is handed again later.
    jobs = importlib.import_module("mailmoat.recall.jobs")
    job = jobs.create_recall_job(db, list(mailmoat_ids), reason=reason,
                                 requested_by=requested_by, source=source, approved=approved,
                                 own_domains=own_domains)
    return str(job)


def bind_recall(config: Config, recall: RecallHandler | None) -> RecallHandler | None:
    """`hand_to_recall` told the gateway's own domains, so that the job it creates shows an
    outbound message's external recipients as left out from the start (any other handler,
    or None, is returned as it is)."""
    if recall is not hand_to_recall:
        return recall
    settings = importlib.import_module("mailmoat.recall.settings")
    return cast(RecallHandler, functools.partial(hand_to_recall,
                                                 own_domains=settings.own_domains(config)))


@dataclass(frozen=True)
class HuntMatch:
    """One indicator's matches in the delivery index."""

    indicator_id: int
    feed: str
    source_id: str
    kind: str
    value: str
    confidence: int
    message_ids: tuple[str, ...]
    recipients: tuple[tuple[str, str], ...]  # (mailmoat id, address) of delivered copies


def _with_all_facts(s: Session, candidates: set[str],
                    also: Sequence[Sequence[str]]) -> set[str]:
    """The candidates that also have every fact in `also` (an AND inside one pattern)."""
    keep = set(candidates)
    for kind, value in also:
        if not keep:
            break
        ids = sorted(keep)
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            found.update(s.scalars(select(ObservableRow.message_id).where(
                ObservableRow.kind == kind, ObservableRow.value == value,
                ObservableRow.message_id.in_(ids[i:i + 500]))))
        keep &= found
    return keep


def match_indicators(s: Session, rows: Iterable[IntelIndicatorRow],
                     lookback: dict[str, float], now: datetime,
                     default_days: float = 14.0) -> list[HuntMatch]:
    """Match indicator rows against the delivery index: one `find_messages` per (kind,
    look-back window) for all their values, then `deliveries` for what matched."""
    groups: dict[tuple[str, float], list[IntelIndicatorRow]] = defaultdict(list)
    for r in rows:
        groups[(r.kind, lookback.get(r.feed, default_days))].append(r)
    per_row: dict[int, set[str]] = {}
    for (kind, days), members in groups.items():
        by_value: dict[str, list[IntelIndicatorRow]] = defaultdict(list)
        for r in members:
            by_value[r.value].append(r)
        since = now - timedelta(days=days)
        for mid, value in find_messages(s, kind, list(by_value), since):
            for r in by_value.get(value, ()):
                per_row.setdefault(r.id, set()).add(mid)
    rows_by_id = {r.id: r for rs in groups.values() for r in rs}
    for rid, mids in list(per_row.items()):
        also = rows_by_id[rid].also or []
        if also:
            per_row[rid] = _with_all_facts(s, mids, also)
    all_ids = sorted({m for mids in per_row.values() for m in mids})
    delivered: dict[str, list[str]] = defaultdict(list)
    for d in deliveries(s, all_ids):
        delivered[d.mailmoat_id].append(d.recipient)
    out: list[HuntMatch] = []
    for rid, mids in sorted(per_row.items()):
        if not mids:
            continue
        r = rows_by_id[rid]
        ids = tuple(sorted(mids))
        out.append(HuntMatch(
            indicator_id=r.id, feed=r.feed, source_id=r.source_id, kind=r.kind, value=r.value,
            confidence=r.confidence, message_ids=ids,
            recipients=tuple((m, a) for m in ids for a in delivered.get(m, ()))))
    return out


def _handed(s: Session, since: datetime) -> dict[str, set[str]]:
    """Messages that hunts since `since` handed, or are about to hand, to recall, by mode
    (auto, queued): older hunts cannot have matched mail inside today's look-back."""
    out: dict[str, set[str]] = {"auto": set(), "queued": set()}
    rows = s.execute(select(IntelHuntRow.mode, IntelHuntRow.message_ids).where(
        IntelHuntRow.mode.in_(("auto", "queued")),
        IntelHuntRow.status.in_(("pending", "handed", "failed")), IntelHuntRow.at >= since))
    for mode, mids in rows:
        out[str(mode)].update(str(m) for m in cast(list[str], mids or []))
    return out


def hunt(db: Database, feeds: dict[str, FeedSettings], indicator_ids: Sequence[int], *,
         recall: RecallHandler | None = hand_to_recall, origin: str = "feed",
         now: datetime | None = None) -> list[IntelHuntRow]:
    """Hunt these indicators, record what each matched, and hand the delivered copies to
    `recall` (None: record only). Returns the recorded hunts."""
    now = now or datetime.now(UTC)
    if not indicator_ids:
        return []
    lookback = {name: f.lookback_days for name, f in feeds.items()}
    recorded: list[IntelHuntRow] = []
    longest = max((f.lookback_days for f in feeds.values()), default=14.0)
    with db.session() as s:
        rows = rows_by_id(s, indicator_ids)
        matches = match_indicators(s, rows, lookback, now)
        handed = _handed(s, now - timedelta(days=2 * longest)) if matches else {}
        for m in matches:
            feed = feeds.get(m.feed)
            threshold = feed.auto_recall_confidence if feed else 101
            delivered = sorted({mid for mid, _ in m.recipients})
            auto = m.confidence >= threshold
            # Handed once: an automatic recall covers a message for good; a queued one
            # covers it for queueing, not for a later indicator sure enough to recall it.
            to_hand = [x for x in delivered if x not in handed["auto"]
                       and (auto or x not in handed["queued"])]
            mode = ("auto" if auto else "queued") if to_hand else "none"
            if to_hand:
                handed[mode].update(to_hand)
            keep = set(to_hand)
            row = IntelHuntRow(
                at=now, feed=m.feed, indicator_id=m.indicator_id, source_id=m.source_id,
                kind=m.kind, value=m.value, confidence=m.confidence, mode=mode,
                status="pending" if to_hand and recall is not None else "nothing",
                message_ids=to_hand or list(m.message_ids),
                recipients=[list(x) for x in m.recipients if not keep or x[0] in keep],
                job_id="", origin=origin,
                error="every delivered copy was already handed to recall by an earlier hunt"
                if delivered and not to_hand else "")
            s.add(row)
            recorded.append(row)
            log.info("intel hunt: %s %s from feed %s (confidence %d) matched %d message(s), "
                     "%d delivered cop(ies): %s", m.kind, m.value[:200], m.feed, m.confidence,
                     len(m.message_ids), len(row.recipients), mode)
    if recall is not None:
        hand_pending(db, recall, [r.id for r in recorded if r.status == "pending"])
        with db.session() as s:
            recorded = [s.get(IntelHuntRow, r.id) or r for r in recorded]
    return recorded


def hand_pending(db: Database, recall: RecallHandler,
                 hunt_ids: Sequence[int] | None = None,
                 stale_before: datetime | None = None) -> int:
    """Hand pending (and earlier failed) hunts to recall; how many were handed now.

    With `stale_before`, only failed hunts and those pending since before it: a hunt
    pending since a crash, not one a poll in another thread is handing over right now."""
    with db.session() as s:
        q = select(IntelHuntRow).where(IntelHuntRow.status.in_(("pending", "failed")),
                                       IntelHuntRow.mode.in_(("auto", "queued")))
        if stale_before is not None:
            q = q.where((IntelHuntRow.status == "failed") | (IntelHuntRow.at < stale_before))
        if hunt_ids is not None:
            if not hunt_ids:
                return 0
            q = q.where(IntelHuntRow.id.in_(list(hunt_ids)))
        todo = [(h.id, h.feed, h.source_id, h.kind, h.value, h.confidence, h.mode,
                 list(h.message_ids)) for h in s.scalars(q.order_by(IntelHuntRow.id))]
    handed = 0
    for hid, feed, source_id, kind, value, confidence, mode, mids in todo:
        if kind == "rescan":  # intel/rescan.py: the value is the new verdict
            reason = value[:500]
        else:
            reason = (f"threat intelligence: {kind} {value[:300]} is listed by feed {feed} "
                      f"(indicator {source_id}, confidence {confidence})")
        try:
            job = recall(db, mids, reason=reason, requested_by=f"intel:{feed}",
                         source=f"intel:{feed}/{source_id}", approved=(mode == "auto"))
        except Exception as exc:  # recall missing or refusing: kept, handed again later
            log.error("intel hunt %d: recall of %d message(s) not started: %s", hid, len(mids),
                      exc)
            _mark(db, hid, "failed", "", f"{type(exc).__name__}: {exc}")
            continue
        _mark(db, hid, "handed", job, "")
        handed += 1
    return handed


def _mark(db: Database, hunt_id: int, status: str, job: str, error: str) -> None:
    with db.session() as s:
        row = s.get(IntelHuntRow, hunt_id)
        if row is not None:
            row.status, row.job_id, row.error = status, job[:64], error[:2000]
