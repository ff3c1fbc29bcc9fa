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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mailmoat.message.model import domain_of
from mailmoat.store.db import Database
from mailmoat.store.models import DeliveryEventRow, MessageRow, RecipientRow

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_URLS_LOGGED = 200
MAX_BATCH = 500
HEADERS_OF_INTEREST = ("Reply-To", "Return-Path", "To", "Cc", "Date", "List-Unsubscribe",
                       "X-Mailer", "User-Agent")


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
        "score": 0.0, "action": "accept", "category": "clean", "reason": "not scanned",
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
        "reason": v.reason,
        "symbols": [{"name": s.name, "score": s.score, "category": s.category.value,
                     "reason": s.reason} for s in outcome.result.symbols],
        "urls": urls[:MAX_URLS_LOGGED],
        "url_domains": sorted({u.host for u in msg.urls if u.host})[:MAX_URLS_LOGGED],
        "attachments": [{"filename": a.filename, "type": a.detected_type or a.declared_type,
                         "size": a.size, "sha256": a.sha256} for a in msg.attachments],
        "headers": {h: msg.header(h) for h in HEADERS_OF_INTEREST if msg.header(h) is not None},
        "scan_ms": round(outcome.elapsed * 1000, 3),
        "recipients": {r: pv.action.value for r, pv in outcome.per_recipient.items()},
    })
    return data


_MESSAGE_COLUMNS = frozenset(MessageRow.__table__.columns.keys())


def write_message(s: Session, data: dict[str, Any]) -> bool:
    """Insert the message and its recipients; False when it is already logged (a message
    recovered after a crash is logged once). Core statements, not ORM objects: this runs
    for every message, on the one writer thread."""
    if s.execute(select(MessageRow.id).where(MessageRow.id == data["id"])).first() is not None:
        return False
    fields = {k: v for k, v in data.items() if k in _MESSAGE_COLUMNS}
    fields["received_at"] = _ts(data["received_at"])
    s.execute(insert(MessageRow), [fields])
    rows = [{"message_id": data["id"], "address": addr, "domain": domain_of(addr),
             "action": action, "status": "rejected" if action == "reject" else "queued",
             "attempts": 0, "last_response": ""}
            for addr, action in data["recipients"].items()]
    if rows:
        s.execute(insert(RecipientRow), rows)
    return True


def record_delivery(s: Session, message_id: str, address: str, status: str, response: str = "",
                    attempts: int | None = None, next_attempt: float | None = None) -> None:
    """A delivery attempt's outcome: one history event, and the recipient's current state."""
    now = datetime.now(UTC)
    s.execute(insert(DeliveryEventRow), [{"message_id": message_id, "address": address, "at": now,
                                          "status": status, "response": response[:2000]}])
    values: dict[str, Any] = {"status": status, "last_response": response[:2000],
                              "last_attempt_at": now,
                              "next_attempt_at": _ts(next_attempt) if status == "deferred" else None}
    if attempts is not None:
        values["attempts"] = attempts
    if status == "delivered":
        values["delivered_at"] = now
    done = s.execute(update(RecipientRow).where(RecipientRow.message_id == message_id,
                                                RecipientRow.address == address).values(**values))
    if done.rowcount == 0:  # e.g. a recipient added by release to an older message
        s.execute(insert(RecipientRow), [{"message_id": message_id, "address": address,
                                          "domain": domain_of(address), "action": "accept",
                                          **values}])


class LogWriter:
    """One thread owns every message-log write; callers submit `fn(session)`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._q: queue.Queue[tuple[Callable[[Session], Any], concurrent.futures.Future[Any]] | None] = (
            queue.Queue())
        self._thread = threading.Thread(target=self._run, name="mailmoat-log-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._q.put((fn, fut))
        return fut

    async def run(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Callable[[Session], Any], concurrent.futures.Future[Any]]]) -> None:
        try:
            results = []
            with self.db.session() as s:
                for fn, _ in batch:
                    results.append(fn(s))
            for (_, fut), res in zip(batch, results):
                fut.set_result(res)
            return
        except Exception:
            if len(batch) == 1:
                log.exception("message-log write failed")
                batch[0][1].set_exception(_current_exc())
                return
        # One bad write must not sink the others: retry them one by one.
        for item in batch:
            self._commit([item])

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)


def _current_exc() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc
