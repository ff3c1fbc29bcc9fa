"""The message log write path: one writer thread, batched transactions, never in the way.

Order matters: a message is spooled (durable) before it is logged, so the log can fail
without losing mail. Writes go to one thread that drains a queue and commits many rows per
transaction (SQLite has one writer anyway; batching turns hundreds of commits a second into
a few). The event loop only enqueues and, when it cares, awaits the outcome.

What is logged for a message is computed once at intake (`message_log_data`) and kept in the
spool sidecar, so a message recovered after a crash is logged exactly as it was judged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from mailmoat.message.model import domain_of
from mailmoat.recall.index import observable_rows
from mailmoat.store.db import Database
from mailmoat.store.models import DeliveryEventRow, MessageRow, ObservableRow, RecipientRow

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_URLS_LOGGED = 200
MAX_BATCH = 500
MAX_ATTACHMENTS_LOGGED = 500
HEADERS_OF_INTEREST = ("Reply-To", "Return-Path", "To", "Cc", "Date", "List-Unsubscribe",
                       "X-Mailer", "User-Agent")


def log_failure(fut: concurrent.futures.Future[Any], logger: logging.Logger, what: str) -> None:
    """Log (on `logger`) when a LogWriter future fails: "`what` failed: <exception>". The
    callers go on without waiting for the write, so this is where its failure is seen."""
    def done(f: concurrent.futures.Future[Any]) -> None:
        exc = f.exception()
        if exc is not None:
            logger.error("%s failed: %s", what, exc)
    fut.add_done_callback(done)


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def message_log_data(*, mailmoat_id: str, envelope: Any, outcome: Any, node: str = "") -> dict[str, Any]:
    """Everything the message log keeps about one message, as JSON-able values.

    `envelope` is a `mailmoat.message.model.Envelope`; `outcome` a `ScanOutcome` or None
    when scanning failed (then only the envelope is known)."""
    data: dict[str, Any] = {
        "id": mailmoat_id, "received_at": envelope.received_at,
        "direction": getattr(envelope.direction, "value", str(envelope.direction)),
        "client_ip": envelope.client_ip or "", "client_name": envelope.client_name or "",
        "helo": envelope.helo or "", "auth_user": envelope.auth_user or "",
        "mail_from": envelope.mail_from or "", "node": node,
        "from_header": "", "from_domain": "", "subject": "", "message_id": "", "size": 0,
        "score": 0.0, "action": "accept", "category": "clean", "bulk_level": None,
        "reason": "not scanned",
        "symbols": [], "urls": [], "url_domains": [], "attachments": [], "headers": {},
        "scan_ms": 0.0, "recipients": {r: "accept" for r in envelope.rcpt_tos},
    }
    if outcome is None:
        return data
    msg, v = outcome.message, outcome.verdict
    fa = msg.from_addr
    urls = [u.url for u in msg.urls]
    data.update({
        "from_header": (fa.address if fa else "")[:512], "from_domain": msg.from_domain,
        "subject": msg.subject[:1000], "message_id": msg.message_id[:998], "size": msg.size,
        "score": v.score, "action": v.action.value, "category": v.category.value,
        "bulk_level": v.bulk_level, "reason": v.reason,
        "symbols": [{"name": s.name, "score": s.score, "category": s.category.value,
                     "reason": s.reason} for s in outcome.result.symbols],
        "urls": urls[:MAX_URLS_LOGGED],
        "url_domains": sorted({u.host for u in msg.urls if u.host})[:MAX_URLS_LOGGED],
        "attachments": attachment_records(msg, outcome.result),
        "headers": {h: msg.header(h) for h in HEADERS_OF_INTEREST if msg.header(h) is not None},
        "scan_ms": round(outcome.elapsed * 1000, 3),
        "recipients": {r: pv.action.value for r, pv in outcome.per_recipient.items()},
    })
    return data


def attachment_records(msg: Any, result: Any) -> list[dict[str, Any]]:
    """Every file the message carried, for recall and threat-intel look-ups by hash.

    The attachments family lists each file it walked, archive members and files taken out
    of PDFs included, in `result.facts.attachments` (`container` names the archive a member
    came from, "" for a top-level part); without it (family off or failed) the message's
    top-level parts are logged."""
    hashes = result.facts.attachments if result is not None else None
    if hashes:
        return [{"filename": h.filename, "type": h.type, "size": h.size, "sha256": h.sha256,
                 "container": h.container}
                for h in hashes[:MAX_ATTACHMENTS_LOGGED]]
    return [{"filename": a.filename, "type": a.detected_type or a.declared_type,
             "size": a.size, "sha256": a.sha256, "container": ""}
            for a in msg.attachments][:MAX_ATTACHMENTS_LOGGED]


_MESSAGE_COLUMNS = frozenset(MessageRow.__table__.columns.keys())
# Core tables, not ORM entities, on the hot path: an `insert(MessageRow)` goes through the
# ORM's bulk-persistence layer (about a third of the writer thread's time in a profile).
# SQLAlchemy types `__table__` as a FromClause; a declarative class with a `__tablename__`
# is always mapped to a Table, which is what insert()/update() want.
_MSG = cast(Table, MessageRow.__table__)
_RCPTS = cast(Table, RecipientRow.__table__)
_EVENTS = cast(Table, DeliveryEventRow.__table__)
_OBSERVABLES = cast(Table, ObservableRow.__table__)


def write_message(s: Session, data: dict[str, Any]) -> bool:
    """Insert the message and its recipients; False when it is already logged (a message
    recovered after a crash is logged once). Core statements, not ORM objects: this runs
    for every message, on the one writer thread."""
    return _write_messages(s, [data])[0]


def take_batch(q: queue.Queue[T | None] | queue.SimpleQueue[T | None], limit: int,
               wait: float = 0.0) -> tuple[list[T], bool]:
    """Block for one item, optionally `wait` seconds more for others to gather, then take
    whatever is queued, up to `limit`. Returns (items, stop): `stop` is True once the None
    sentinel was taken (the items before it are still returned)."""
    first = q.get()
    if first is None:
        return [], True
    if wait:
        time.sleep(wait)
    batch = [first]
    while len(batch) < limit:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            return batch, True
        batch.append(nxt)
    return batch, False


@dataclass
class _Op:
    kind: str  # "message" | "delivery" | "fn"
    payload: Any
    fut: concurrent.futures.Future[Any]


_UPDATE_RECIPIENT = (
    update(_RCPTS)
    .where(_RCPTS.c.message_id == bindparam("b_mid"), _RCPTS.c.address == bindparam("b_addr"))
    .values(status=bindparam("b_status"), last_response=bindparam("b_resp"),
            last_attempt_at=bindparam("b_at"), next_attempt_at=bindparam("b_next"),
            attempts=bindparam("b_attempts"), delivered_at=bindparam("b_delivered")))


def _write_messages(s: Session, items: list[dict[str, Any]]) -> list[bool]:
    """Many messages in three statements: which exist, insert messages, insert recipients."""
    ids = [d["id"] for d in items]
    existing: set[str] = set(s.execute(select(_MSG.c.id).where(_MSG.c.id.in_(ids))).scalars())
    fresh, seen, out = [], set(), []
    for d in items:
        new = d["id"] not in existing and d["id"] not in seen
        seen.add(d["id"])
        out.append(new)
        if new:
            fresh.append(d)
    if fresh:
        s.execute(insert(_MSG), [
            {**{k: v for k, v in d.items() if k in _MESSAGE_COLUMNS},
             "received_at": _ts(d["received_at"])} for d in fresh])
        rows = [{"message_id": d["id"], "address": addr, "domain": domain_of(addr),
                 "action": action, "status": "rejected" if action == "reject" else "queued",
                 "attempts": 0, "last_response": ""}
                for d in fresh for addr, action in d["recipients"].items()]
        if rows:
            s.execute(insert(_RCPTS), rows)
        facts = [row for d in fresh
                 for row in observable_rows(d, cast(datetime, _ts(d["received_at"])))]
        if facts:
            s.execute(insert(_OBSERVABLES), facts)
    return out


def _write_deliveries(s: Session, items: list[tuple[str, list[tuple[str, str, str]], int, float]]) -> None:
    now = datetime.now(UTC)
    events, updates = [], []
    for message_id, outcomes, attempts, next_attempt in items:
        for address, status, response in outcomes:
            events.append({"message_id": message_id, "address": address, "at": now,
                           "status": status, "response": response[:2000]})
            updates.append({"b_mid": message_id, "b_addr": address, "b_status": status,
                            "b_resp": response[:2000], "b_at": now,
                            "b_next": _ts(next_attempt) if status == "deferred" else None,
                            "b_attempts": attempts,
                            "b_delivered": now if status == "delivered" else None})
    if events:
        s.execute(insert(_EVENTS), events)
        s.execute(_UPDATE_RECIPIENT, updates)


class LogWriter:
    """One thread owns every message-log write.

    `log_message` and `log_delivery` are the hot path: whatever is queued when the thread
    wakes goes into one transaction with one statement per kind (executemany), which is
    what lets the log keep up with hundreds of messages a second on SQLite. `submit(fn)`
    runs any other `fn(session)` in the same order.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._q: queue.Queue[_Op | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mailmoat-log-writer", daemon=True)
        self._thread.start()

    def _put(self, kind: str, payload: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._q.put(_Op(kind, payload, fut))
        return fut

    def submit(self, fn: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        return self._put("fn", fn)

    def log_message(self, data: dict[str, Any]) -> concurrent.futures.Future[bool]:
        """Insert a message (from `message_log_data`); resolves False if already logged."""
        return self._put("message", data)

    def log_delivery(self, message_id: str, outcomes: list[tuple[str, str, str]],
                     attempts: int, next_attempt: float = 0.0) -> concurrent.futures.Future[None]:
        """Record (address, status, response) outcomes of one attempt."""
        return self._put("delivery", (message_id, outcomes, attempts, next_attempt))

    async def run(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def _run(self) -> None:
        while True:
            batch, stop = take_batch(self._q, MAX_BATCH)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _apply(self, s: Session, batch: list[_Op]) -> list[Any]:
        results: dict[int, Any] = {}
        # Messages first: a delivery in the same batch refers to its message's rows.
        msgs = [(i, op) for i, op in enumerate(batch) if op.kind == "message"]
        if msgs:
            for (i, _), res in zip(msgs, _write_messages(s, [op.payload for _, op in msgs])):
                results[i] = res
        dels = [(i, op) for i, op in enumerate(batch) if op.kind == "delivery"]
        if dels:
            _write_deliveries(s, [op.payload for _, op in dels])
            for i, _ in dels:
                results[i] = None
        for i, op in enumerate(batch):
            if op.kind == "fn":
                results[i] = op.payload(s)
        return [results[i] for i in range(len(batch))]

    def _commit(self, batch: list[_Op]) -> None:
        try:
            with self.db.session() as s:
                results = self._apply(s, batch)
        except Exception as exc:
            if len(batch) == 1:
                log.error("message-log write failed: %s", exc)
                batch[0].fut.set_exception(exc)
                return
            # One bad write must not sink the others: retry them one by one.
            for op in batch:
                self._commit([op])
            return
        for op, res in zip(batch, results):
            op.fut.set_result(res)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
