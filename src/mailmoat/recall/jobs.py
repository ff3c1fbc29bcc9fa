"""Recall jobs: durable, resumable, idempotent.

A recall is a row in `recall_jobs` and one `recall_items` row per delivered (message,
recipient) copy, written before anything is touched. `RecallWorker` works the pending items
with the connectors; each item is claimed for `lease_seconds` (renewed while it is worked
on), so two workers never work one mailbox at once, and a crashed worker's items are taken
over once its lease runs out. Before a connector moves anything, the item records what is
about to move (status `working`); after, what did. A second run of an item therefore moves
nothing twice, adopts copies a crash left moved but unrecorded, and a restore moves back
exactly the copies its recall moved, to the folders they came from.

Public API (other parts, the threat-intelligence side included, call these):

    create_recall_job(db, mailmoat_ids, *, reason, requested_by, source, approved=True,
                      own_domains=...)
    create_restore_job(db, mailmoat_ids, *, reason, requested_by, source)
    undo(db, job_id, *, requested_by, reason="")
    approve(db, job_id, *, by, note="", two_person=False)
    deny(db, job_id, *, by, note="")
    retry_failed(db, job_id, *, by)
    preview(db, mailmoat_ids, ...)
    get_job(db, job_id), list_jobs(db, ...), job_items(db, job_id)
    RecallWorker(config, db).run_job(job_id) / .run_pending()

Only mailboxes in our own domains (`settings.own_domains`: the relay and internal domains
and the connectors' `domains`) are touched. A delivered copy elsewhere (an outbound
message's external recipient) is planned as `outside`: shown in the preview and kept in the
job as an item with status `outside`, never attempted. The worker checks again before it
logs in, so a job created without the list (an older caller) touches no foreign mailbox.

Every action is written to the audit log (who, what, why, and the counts).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import threading
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from mailmoat.config import Config
from mailmoat.errors import MailmoatError
from mailmoat.recall.connectors import Connectors
from mailmoat.recall.connectors.base import MailboxError, Moved, Outcome, Target
from mailmoat.recall.index import Delivery, deliveries, normalise
from mailmoat.recall.settings import own_domains, recall_settings
from mailmoat.store.db import Database
from mailmoat.store.models import (
    MessageRow,
    ObservableRow,
    RecallItemRow,
    RecallJobRow,
)
from mailmoat.store.quarantine import audit

__all__ = [
    "JOB_STATES",
    "ITEM_DONE",
    "OUTSIDE",
    "ItemView",
    "JobError",
    "JobView",
    "PlannedCopy",
    "RecallWorker",
    "approve",
    "create_recall_job",
    "create_restore_job",
    "deny",
    "get_job",
    "get_jobs",
    "is_ours",
    "job_items",
    "list_jobs",
    "plan",
    "preview",
    "retry_failed",
    "undo",
]

log = logging.getLogger(__name__)

JOB_STATES: Final = ("awaiting_approval", "pending", "running", "done", "denied")
ITEM_OPEN: Final = ("pending", "working")
ITEM_DONE: Final = ("moved", "restored", "not_found", "failed", "outside")
OUTSIDE: Final = "outside"  # a copy outside our domains: left out, never attempted
OUTSIDE_DETAIL: Final = ("outside our domains: not in [smtp] relay_domains or internal_domains "
                         "nor a recall connector's domains; not attempted")
FORWARD_DEPTH = 3


class JobError(MailmoatError):
    """A job request that cannot be done as asked (unknown job, wrong state, same approver
    as requester, too many copies); the text says which."""


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's rowcount; typed as plain Result)."""
    return int(result.rowcount or 0)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone=True columns; they were written as UTC.
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


# -- what a recall touches -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlannedCopy:
    """One mailbox copy a recall would touch, and why it is in the recall."""

    mailmoat_id: str
    message_id: str
    recipient: str
    subject: str
    mail_from: str
    delivered_at: datetime | None
    via: str = ""  # "" for the messages asked for; else how a forward was linked to them
    outside: bool = False  # the recipient is outside our domains: left out of the recall


def _in_domains(address: str, domains: Sequence[str]) -> bool:
    return not domains or address.rpartition("@")[2].lower() in {d.lower() for d in domains}


def is_ours(address: str, own_domains: Collection[str]) -> bool:
    """Whether `address` is a mailbox in one of our domains (compared exactly, as the SMTP
    listener compares relay_domains)."""
    return address.rpartition("@")[2].lower().strip(".") in own_domains


def _forwards(s: Session, roots: Sequence[str], window: timedelta) -> dict[str, str]:
    """Later internal messages linked to `roots` by the same Message-ID (a redirect or
    resend keeps it) or a shared attachment (a forward carries the file), followed from
    each found message again up to FORWARD_DEPTH steps. Pictures are not links: a logo
    in a lure is also in legitimate mail. -> {mailmoat id: how it was linked}"""
    found: dict[str, str] = {}
    todo = list(roots)
    seen = set(roots)
    for _ in range(FORWARD_DEPTH):
        if not todo:
            break
        rows = s.execute(select(MessageRow.id, MessageRow.received_at, MessageRow.message_id,
                                MessageRow.attachments).where(MessageRow.id.in_(todo))).all()
        todo = []
        for row in rows:
            mid, header_id = str(row[0]), str(row[2] or "")
            attachments: list[dict[str, Any]] = list(row[3] or [])
            received: datetime = _aware(row[1]) or _now()
            links: list[tuple[str, str, str]] = []
            if header_id:
                links.append(("message_id", normalise("message_id", header_id),
                              f"same Message-ID as {mid}"))
            for att in attachments:
                kind = str(att.get("type") or "")
                digest = str(att.get("sha256") or "")
                if digest and not kind.startswith("image/"):
                    links.append(("sha256", normalise("sha256", digest),
                                  f"same attachment as {mid} ({att.get('filename') or digest[:12]})"))
            for kind, value, why in links:
                if not value:
                    continue
                q = (select(ObservableRow.message_id)
                     .join(MessageRow, MessageRow.id == ObservableRow.message_id)
                     .where(ObservableRow.kind == kind, ObservableRow.value == value,
                            ObservableRow.received_at >= received,
                            ObservableRow.received_at <= received + window,
                            MessageRow.direction == "internal"))
                for (other,) in s.execute(q):
                    if other not in seen:
                        seen.add(other)
                        found[other] = why
                        todo.append(other)
    return found


def plan(s: Session, mailmoat_ids: Iterable[str], *, domains: Sequence[str] = (),
         own_domains: Collection[str] | None = None, follow_forwards: bool = True,
         forward_window: timedelta = timedelta(days=7)) -> list[PlannedCopy]:
    """Every delivered copy of these messages (and of their internal forwards), within
    `domains` when given: what a recall of them would touch. With `own_domains`, copies
    delivered outside them are marked `outside` (left out of the recall)."""
    ids = sorted({i.strip() for i in mailmoat_ids if i and i.strip()})
    via = {i: "" for i in ids}
    if follow_forwards and ids:
        for fid, why in _forwards(s, ids, forward_window).items():
            via.setdefault(fid, why)
    out = []
    for d in deliveries(s, via):
        if _in_domains(d.recipient, domains):
            out.append(PlannedCopy(d.mailmoat_id, d.message_id, d.recipient, d.subject,
                                   d.mail_from, _aware(d.delivered_at), via[d.mailmoat_id],
                                   own_domains is not None
                                   and not is_ours(d.recipient, own_domains)))
    return out


def preview(db: Database, mailmoat_ids: Iterable[str], *, domains: Sequence[str] = (),
            own_domains: Collection[str] | None = None, follow_forwards: bool = True,
            forward_window: timedelta = timedelta(days=7)) -> list[PlannedCopy]:
    """The mailboxes a recall of these messages would touch, before anything is done (and,
    marked `outside`, the copies outside `own_domains` it leaves out)."""
    with db.session() as s:
        return plan(s, mailmoat_ids, domains=domains, own_domains=own_domains,
                    follow_forwards=follow_forwards, forward_window=forward_window)


# -- views ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ItemView:
    id: int
    job_id: int
    mailmoat_id: str
    message_id: str
    recipient: str
    connector: str
    status: str
    detail: str
    moved: list[dict[str, Any]]
    attempts: int
    via: str
    source_item: int | None
    updated_at: datetime | None

    @classmethod
    def of(cls, r: RecallItemRow) -> ItemView:
        return cls(r.id, r.job_id, r.mailmoat_id, r.message_id, r.recipient, r.connector,
                   r.status, r.detail, list(r.moved or []), r.attempts, r.via, r.source_item,
                   _aware(r.updated_at))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        return d


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    kind: str
    state: str
    reason: str
    requested_by: str
    source: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    decided_by: str
    decided_at: datetime | None
    decision_note: str
    undo_of: int | None
    domains: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def open(self) -> int:
        return sum(self.counts.get(s, 0) for s in ITEM_OPEN)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("created_at", "started_at", "finished_at", "decided_at"):
            d[k] = d[k].isoformat() if d[k] else None
        d["total"] = self.total
        return d


def _job_view(row: RecallJobRow, counts: dict[str, int]) -> JobView:
    return JobView(row.id, row.kind, row.state, row.reason, row.requested_by, row.source,
                   _aware(row.created_at) or _now(), _aware(row.started_at),
                   _aware(row.finished_at), row.decided_by, _aware(row.decided_at),
                   row.decision_note, row.undo_of, list(row.domains or []), counts)


def _counts(s: Session, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {j: {} for j in job_ids}
    if not job_ids:
        return out
    q = (select(RecallItemRow.job_id, RecallItemRow.status, func.count())
         .where(RecallItemRow.job_id.in_(job_ids))
         .group_by(RecallItemRow.job_id, RecallItemRow.status))
    for job_id, status, n in s.execute(q):
        out[job_id][status] = n
    return out


def _job_row(s: Session, job_id: int, state: str | None = None) -> RecallJobRow:
    """The job's row; JobError when there is none, or when it is not in `state`."""
    row = s.get(RecallJobRow, job_id)
    if row is None:
        raise JobError(f"no recall job {job_id}")
    if state is not None and row.state != state:
        raise JobError(f"recall job {job_id} is {row.state}, not "
                       f"{state.replace('_', ' ')}")
    return row


def get_job(db: Database, job_id: int) -> JobView:
    with db.session() as s:
        row = _job_row(s, job_id)
        return _job_view(row, _counts(s, [job_id])[job_id])


def get_jobs(db: Database, job_ids: Iterable[int]) -> dict[int, JobView]:
    """The jobs of these ids that exist, by id."""
    ids = sorted(set(job_ids))
    with db.session() as s:
        rows = list(s.scalars(select(RecallJobRow).where(RecallJobRow.id.in_(ids)))) \
            if ids else []
        counts = _counts(s, [r.id for r in rows])
        return {r.id: _job_view(r, counts[r.id]) for r in rows}


def list_jobs(db: Database, *, state: str | None = None, limit: int = 50,
              before_id: int | None = None, domains: Sequence[str] = ()) -> list[JobView]:
    """Jobs, newest first; with `domains`, only jobs confined to some of those domains."""
    with db.session() as s:
        q = select(RecallJobRow).order_by(RecallJobRow.id.desc())
        if state:
            q = q.where(RecallJobRow.state == state)
        if before_id is not None:
            q = q.where(RecallJobRow.id < before_id)
        rows = list(s.scalars(q.limit(limit * 4 if domains else limit)))
        if domains:
            mine = {d.lower() for d in domains}
            rows = [r for r in rows if r.domains and set(r.domains) <= mine][:limit]
        counts = _counts(s, [r.id for r in rows])
        return [_job_view(r, counts[r.id]) for r in rows]


def job_items(db: Database, job_id: int, *, status: str | None = None) -> list[ItemView]:
    with db.session() as s:
        q = select(RecallItemRow).where(RecallItemRow.job_id == job_id)
        if status:
            q = q.where(RecallItemRow.status == status)
        return [ItemView.of(r) for r in s.scalars(q.order_by(RecallItemRow.id))]


# -- creating and deciding -----------------------------------------------------------------

def _new_job(s: Session, kind: str, *, reason: str, requested_by: str, source: str,
             approved: bool, domains: Sequence[str], undo_of: int | None = None) -> RecallJobRow:
    job = RecallJobRow(kind=kind, state="pending" if approved else "awaiting_approval",
                       reason=reason, requested_by=requested_by, source=source,
                       created_at=_now(), undo_of=undo_of,
                       domains=sorted({d.lower() for d in domains}))
    s.add(job)
    s.flush()
    return job


def create_recall_job(db: Database, mailmoat_ids: Iterable[str], *, reason: str,
                      requested_by: str, source: str, approved: bool = True,
                      domains: Sequence[str] = (), recipients: Iterable[str] | None = None,
                      own_domains: Collection[str] | None = None,
                      follow_forwards: bool = True,
                      forward_window: timedelta = timedelta(days=7),
                      max_items: int = 20_000) -> int:
    """A recall of every delivered copy of `mailmoat_ids` (and of their internal forwards
    when `follow_forwards`), limited to `domains` (a domain administrator's) and to
    `recipients` when given. Copies outside `own_domains` are recorded as `outside` items
    and never attempted. `approved=False` leaves it awaiting approval. Returns the job id;
    the worker does the rest. JobError when it would touch more than `max_items`."""
    ids = sorted({i.strip() for i in mailmoat_ids if i and i.strip()})
    only = {r.lower() for r in recipients} if recipients is not None else None
    with db.session() as s:
        copies = plan(s, ids, domains=domains, own_domains=own_domains,
                      follow_forwards=follow_forwards, forward_window=forward_window)
        if only is not None:
            copies = [c for c in copies if c.recipient.lower() in only]
        touched = sum(1 for c in copies if not c.outside)
        if touched > max_items:
            raise JobError(f"this recall would touch {touched} mailbox copies, more than "
                           f"[recall] max_items = {max_items}; narrow it down")
        job = _new_job(s, "recall", reason=reason, requested_by=requested_by, source=source,
                       approved=approved, domains=domains)
        now = _now()
        s.add_all(RecallItemRow(job_id=job.id, mailmoat_id=c.mailmoat_id,
                                message_id=c.message_id, recipient=c.recipient,
                                status=OUTSIDE if c.outside else "pending",
                                detail=OUTSIDE_DETAIL if c.outside else "", moved=[],
                                via=c.via, updated_at=now)
                  for c in copies)
        job_id = job.id
    audit(db, requested_by, "recall.create", f"recall-job:{job_id}", reason=reason,
          source=source, messages=ids[:100], copies=touched,
          outside=len(copies) - touched, approved=approved, domains=list(domains))
    return job_id


def _restore_items(s: Session, job: RecallJobRow, sources: Iterable[RecallItemRow]) -> int:
    n = 0
    now = _now()
    for src in sources:
        if any(m.get("handle") and not m.get("restored") for m in src.moved or []):
            s.add(RecallItemRow(job_id=job.id, mailmoat_id=src.mailmoat_id,
                                message_id=src.message_id, recipient=src.recipient,
                                connector=src.connector, status="pending", moved=[],
                                via=src.via, source_item=src.id, updated_at=now))
            n += 1
    return n


def undo(db: Database, job_id: int, *, requested_by: str, reason: str = "",
         source: str = "") -> int:
    """A restore job that moves back every copy recall job `job_id` moved (and no other);
    returns its id. JobError while that job still runs, or when it is not a recall."""
    with db.session() as s:
        src = _job_row(s, job_id)
        if src.kind != "recall":
            raise JobError(f"job {job_id} is a {src.kind}, not a recall")
        if src.state in ("pending", "running"):
            raise JobError(f"recall job {job_id} is still {src.state}; undo it once it is done")
        job = _new_job(s, "restore", reason=reason or f"undo of recall job {job_id}",
                       requested_by=requested_by, source=source or f"undo:{job_id}",
                       approved=True, domains=list(src.domains or []), undo_of=job_id)
        items = s.scalars(select(RecallItemRow).where(RecallItemRow.job_id == job_id)
                          .order_by(RecallItemRow.id))
        n = _restore_items(s, job, items)
        new_id = job.id
    audit(db, requested_by, "recall.undo", f"recall-job:{job_id}", restore_job=new_id,
          copies=n, reason=reason)
    return new_id


def create_restore_job(db: Database, mailmoat_ids: Iterable[str], *, reason: str,
                       requested_by: str, source: str, domains: Sequence[str] = ()) -> int:
    """A restore of every copy of these messages that any recall moved and nothing has
    moved back yet; returns the job id."""
    ids = sorted({i.strip() for i in mailmoat_ids if i and i.strip()})
    with db.session() as s:
        job = _new_job(s, "restore", reason=reason, requested_by=requested_by, source=source,
                       approved=True, domains=domains)
        items = [r for r in s.scalars(
            select(RecallItemRow).join(RecallJobRow, RecallJobRow.id == RecallItemRow.job_id)
            .where(RecallItemRow.mailmoat_id.in_(ids), RecallJobRow.kind == "recall")
            .order_by(RecallItemRow.id)) if _in_domains(r.recipient, domains)]
        n = _restore_items(s, job, items)
        job_id = job.id
    audit(db, requested_by, "recall.restore", f"recall-job:{job_id}", reason=reason,
          source=source, messages=ids[:100], copies=n)
    return job_id


def approve(db: Database, job_id: int, *, by: str, note: str = "",
            two_person: bool = False) -> None:
    """Let a job awaiting approval run. With `two_person`, its requester cannot."""
    with db.session() as s:
        job = _job_row(s, job_id, "awaiting_approval")
        if two_person and by.lower() == job.requested_by.lower():
            raise JobError("two-person approval: a second administrator must approve this "
                           "recall, not the one who asked for it")
        job.state, job.decided_by, job.decided_at, job.decision_note = (
            "pending", by, _now(), note)
    audit(db, by, "recall.approve", f"recall-job:{job_id}", note=note)


def deny(db: Database, job_id: int, *, by: str, note: str = "") -> None:
    """Drop a job awaiting approval: nothing is touched."""
    with db.session() as s:
        job = _job_row(s, job_id, "awaiting_approval")
        job.state, job.decided_by, job.decided_at, job.decision_note = (
            "denied", by, _now(), note)
        job.finished_at = _now()
    audit(db, by, "recall.deny", f"recall-job:{job_id}", note=note)


def retry_failed(db: Database, job_id: int, *, by: str) -> int:
    """Put a finished job's failed items back in the queue; returns how many."""
    with db.session() as s:
        job = _job_row(s, job_id)
        if job.state != "done":
            raise JobError(f"recall job {job_id} is {job.state}; retry failed items once done")
        n = _rowcount(s.execute(update(RecallItemRow).where(
            RecallItemRow.job_id == job_id, RecallItemRow.status == "failed")
            .values(status="pending", updated_at=_now())))
        if n:
            job.state, job.finished_at = "pending", None
    audit(db, by, "recall.retry", f"recall-job:{job_id}", items=n)
    return int(n or 0)


# -- the worker ------------------------------------------------------------------------------

class RecallWorker:
    """Works pending jobs' items with the connectors, in threads (blocking I/O, never the
    SMTP event loop). One per process; several processes may share a database."""

    def __init__(self, config: Config, db: Database, connectors: Connectors | None = None,
                 *, lease_seconds: float | None = None) -> None:
        self.config = config
        self.db = db
        self.connectors = connectors or Connectors(config)
        settings = recall_settings(config)
        self.lease = timedelta(seconds=lease_seconds or settings.lease_seconds)
        self.own_domains = own_domains(config)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(64, self.connectors.total_connections()),
            thread_name_prefix="mailmoat-recall")
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Start no further mailbox; those in hand finish."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
        self.connectors.close()

    # -- jobs ------------------------------------------------------------------------------

    def runnable_jobs(self) -> list[int]:
        with self.db.session() as s:
            return list(s.scalars(select(RecallJobRow.id)
                                  .where(RecallJobRow.state.in_(("pending", "running")))
                                  .order_by(RecallJobRow.id)))

    def run_pending(self) -> int:
        """Work every runnable job once; returns how many were looked at."""
        jobs = self.runnable_jobs()
        for job_id in jobs:
            if self._stop.is_set():
                break
            self.run_job(job_id)
        return len(jobs)

    def run_job(self, job_id: int) -> JobView:
        """Work the job's open items (those no live worker holds) until none is left, or
        until the items left are another worker's; then mark the job done."""
        with self.db.session() as s:
            job = _job_row(s, job_id)
            if job.state == "awaiting_approval":
                raise JobError(f"recall job {job_id} awaits approval")
            if job.state in ("done", "denied"):
                return _job_view(job, _counts(s, [job_id])[job_id])
            if job.state == "pending":
                job.state, job.started_at = "running", job.started_at or _now()
            kind = job.kind
        ids = self._open_items(job_id)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(done,), daemon=True,
                                name=f"recall-lease-{job_id}")
        beat.start()
        try:
            futures = [self._pool.submit(self._work, item_id, kind) for item_id in ids]
            for f in concurrent.futures.as_completed(futures):
                f.result()
        finally:
            done.set()
            beat.join()
        return self._finish(job_id)

    def _open_items(self, job_id: int) -> list[int]:
        with self.db.session() as s:
            return list(s.scalars(select(RecallItemRow.id).where(
                RecallItemRow.job_id == job_id, RecallItemRow.status.in_(ITEM_OPEN))
                .order_by(RecallItemRow.id)))

    def _finish(self, job_id: int) -> JobView:
        finished = False
        with self.db.session() as s:
            job = s.get(RecallJobRow, job_id)
            assert job is not None
            counts = _counts(s, [job_id])[job_id]
            if not any(counts.get(st) for st in ITEM_OPEN) and job.state == "running":
                job.state, job.finished_at = "done", _now()
                finished = True
            view = _job_view(job, counts)
        if finished:
            audit(self.db, "mailmoat", f"recall.{view.kind}_done", f"recall-job:{job_id}",
                  counts=view.counts, requested_by=view.requested_by, source=view.source)
            log.info("recall job %d (%s) done: %s", job_id, view.kind, view.counts)
        return view

    def _heartbeat(self, stop: threading.Event) -> None:
        every = max(0.2, self.lease.total_seconds() / 3)
        while not stop.wait(every):
            with self._held_lock:
                held = sorted(self._held)
            if held:
                try:
                    with self.db.session() as s:
                        s.execute(update(RecallItemRow)
                                  .where(RecallItemRow.id.in_(held),
                                         RecallItemRow.claimed_by == self.me)
                                  .values(claimed_until=_now() + self.lease))
                except Exception:  # the next beat tries again; the lease is long enough
                    log.warning("recall lease renewal failed", exc_info=True)

    # -- items -----------------------------------------------------------------------------

    def _claim(self, item_id: int) -> bool:
        now = _now()
        with self.db.session() as s:
            n = _rowcount(s.execute(update(RecallItemRow).where(
                RecallItemRow.id == item_id, RecallItemRow.status.in_(ITEM_OPEN),
                or_(RecallItemRow.claimed_until.is_(None), RecallItemRow.claimed_until < now,
                    RecallItemRow.claimed_by == self.me))
                .values(claimed_by=self.me, claimed_until=now + self.lease)))
        if n:
            with self._held_lock:
                self._held.add(item_id)
        return bool(n)

    def _save(self, item_id: int, **values: Any) -> None:
        with self.db.session() as s:
            s.execute(update(RecallItemRow).where(RecallItemRow.id == item_id)
                      .values(updated_at=_now(), **values))

    def _work(self, item_id: int, kind: str) -> None:
        if self._stop.is_set() or not self._claim(item_id):
            return
        try:
            with self.db.session() as s:
                item = s.get(RecallItemRow, item_id)
                assert item is not None
                target = Target(item.mailmoat_id, normalise("message_id", item.message_id),
                                item.recipient)
                previous = [Moved.of(m) for m in item.moved or []]
                attempts = item.attempts
                source_item = item.source_item
                source_moved: list[Moved] = []
                if source_item is not None:
                    src = s.get(RecallItemRow, source_item)
                    source_moved = [Moved.of(m) for m in (src.moved if src else [])]
            if kind == "recall" and not is_ours(target.recipient, self.own_domains):
                # Another organisation's mailbox: nothing of ours to log in to, ever.
                self._save(item_id, status=OUTSIDE, detail=OUTSIDE_DETAIL, claimed_by="",
                           claimed_until=None)
                return
            name = self.connectors.name_for(target.recipient)
            if name is None:
                out = Outcome("failed", f"no connector serves {target.recipient} (set "
                              "[recall.imap], [recall.graph] or [recall.gmail] domains)")
            else:
                try:
                    connector = self.connectors.get(name)
                except MailboxError as exc:
                    out = Outcome("failed", str(exc))
                else:
                    if kind == "recall":
                        def remember(planned: list[Moved]) -> None:
                            self._save(item_id, status="working", connector=name,
                                       moved=[m.as_dict() for m in planned])
                        out = connector.recall(target, previous, remember)
                    else:
                        out = connector.restore(target, source_moved)
                        self._save_source(source_item, source_moved)
            values: dict[str, Any] = {}
            if kind == "restore":
                values["moved"] = [m.as_dict() for m in source_moved]
            elif out.status != "failed":
                values["moved"] = [m.as_dict() for m in out.moved]
            # A failed recall keeps what it last recorded: copies it may have moved before
            # the failure are adopted when the item is retried.
            self._save(item_id, status=out.status, detail=out.detail[:2000],
                       connector=name or "", attempts=attempts + out.attempts,
                       claimed_by="", claimed_until=None, **values)
        except Exception:  # the database went away mid-item: the lease lets it be retried
            log.exception("recall item %d could not be worked", item_id)
        finally:
            with self._held_lock:
                self._held.discard(item_id)

    def _save_source(self, source_item: int | None, moved: list[Moved]) -> None:
        if source_item is not None:
            self._save(source_item, moved=[m.as_dict() for m in moved])
