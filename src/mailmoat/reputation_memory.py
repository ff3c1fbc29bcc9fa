"""Local sender-reputation memory: who has written to whom, and how it was judged.

The gateway offers every judged message (inbound, outbound and internal alike) to an
`ObservationFeed`, whose thread writes them in batches with `SenderMemory.observe_many`
(one transaction and one upsert per batch: per-message ORM transactions cost the
gateway about 2 ms of CPU per message in bench/throughput.py). The reputation check then
asks `recall()` about a new inbound message: has this sender written to these recipients before, was that
mail clean, did our users write to the sender, is it a reply to a Message-ID we sent?
That gives first-contact, known-correspondent, reply-to-our-mail and bad-history signals
(`scan/reputation.py`) and the `first_contact` fact the BEC check reads.

Storage: `sender_memory` rows (sender, recipient) with counters, and `sent_message_ids`
for outbound Message-IDs, in the message store (SQLite or PostgreSQL). Calls are
synchronous SQLAlchemy; async callers run them in a thread.

Cache: every `SenderMemory` on one `Database` shares a small in-process LRU of
(sender, recipient) → counts and "the recipient wrote to the sender", each entry kept for
`CACHE_TTL` seconds (60). `observe` writes through it, so a gateway that saw a message
answers the next look-up for the same pair without a query; a miss costs one query for all
recipients (plus one for reply Message-IDs, only when the message has any). With several
gateway nodes on one database, a node learns another node's observations within the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailmoat.message.model import Direction, ParsedMessage
from mailmoat.store.db import Database
from mailmoat.store.log import take_batch
from mailmoat.store.models import SenderMemoryRow, SentMessageRow

log = logging.getLogger(__name__)

BAD_CATEGORIES = frozenset({"spam", "phishing", "malware", "bec"})

CACHE_TTL = 60.0
CACHE_SIZE = 50_000
UPSERT_CHUNK = 500  # pairs per statement: 8 parameters each, well under SQLite's limit

_MSGID = re.compile(r"<([^<>\s]+)>")


def normalise_message_id(value: str) -> str:
    value = value.strip()
    m = _MSGID.search(value)
    return (m.group(1) if m else value.strip("<>"))[:998]


def message_ids_in(header_value: str) -> list[str]:
    """Message-IDs in an In-Reply-To or References value, without the angle brackets."""
    return [m[:998] for m in _MSGID.findall(header_value or "")]


def sender_identity(msg: ParsedMessage) -> str:
    """Who the recipient sees as the sender: the From address, else the MAIL FROM."""
    addr = msg.from_addr.address if msg.from_addr else ""
    return (addr or msg.envelope.mail_from.strip().strip("<>")).lower()


@dataclass(frozen=True)
class PairStats:
    """The counters of one (sender, recipient) row, detached from the database."""

    messages: int
    clean: int
    bad: int
    first_seen: datetime
    last_seen: datetime
    outbound: bool


def _stats(row: SenderMemoryRow) -> PairStats:
    return PairStats(messages=row.messages, clean=row.clean, bad=row.bad,
                     first_seen=row.first_seen, last_seen=row.last_seen,
                     outbound=bool(row.outbound))


@dataclass(frozen=True)
class Observation:
    """One judged message, as the memory records it (addresses normalised)."""

    sender: str
    recipients: tuple[str, ...]
    category: str
    direction: Direction
    message_id: str
    at: datetime

    @classmethod
    def of(cls, sender: str, recipients: Iterable[str], verdict_category: str,
           direction: Direction | str, message_id: str = "",
           at: datetime | None = None) -> Observation:
        return cls(sender=sender.strip().strip("<>").lower(),
                   recipients=tuple(sorted({r.strip().strip("<>").lower()
                                            for r in recipients if r.strip()})),
                   category=str(getattr(verdict_category, "value", verdict_category)),
                   direction=Direction(getattr(direction, "value", direction)),
                   message_id=message_id, at=at or datetime.now(UTC))

    @classmethod
    def of_message(cls, msg: ParsedMessage, verdict_category: str) -> Observation:
        return cls.of(sender_identity(msg), msg.envelope.rcpt_tos, verdict_category,
                      msg.envelope.direction, message_id=msg.message_id)


def _dialect_insert(session: Session) -> Any:
    """The INSERT construct with ON CONFLICT of the session's database (SQLite or
    PostgreSQL, the two the store supports)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


class _PairCache:
    """(sender, recipient) → (expiry, stats or None, recipient wrote to sender)."""

    def __init__(self, ttl: float = CACHE_TTL, size: int = CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[str, str], tuple[float, PairStats | None, bool]] = \
            OrderedDict()

    def get(self, key: tuple[str, str]) -> tuple[PairStats | None, bool] | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self.items[key]
                return None
            self.items.move_to_end(key)
            return hit[1], hit[2]

    def put(self, key: tuple[str, str], stats: PairStats | None, wrote: bool) -> None:
        with self.lock:
            self.items[key] = (time.monotonic() + self.ttl, stats, wrote)
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def update(self, key: tuple[str, str], stats: PairStats | None = None,
               wrote: bool | None = None) -> None:
        """Write-through after an observation: refresh a cached entry (its expiry stays, so
        what other nodes wrote is read again within the TTL); an uncached pair is left to
        the next query."""
        with self.lock:
            hit = self.items.get(key)
            if hit is None:
                return
            self.items[key] = (hit[0], stats if stats is not None else hit[1],
                               hit[2] if wrote is None else wrote)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


_CACHES: weakref.WeakKeyDictionary[Database, _PairCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_for(db: Database) -> _PairCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(db)
        if cache is None:
            cache = _CACHES[db] = _PairCache()
        return cache


@dataclass
class Correspondence:
    """What the memory knows about one inbound message's sender and its recipients."""

    sender: str
    history: dict[str, PairStats] = field(default_factory=dict)  # recipient -> counters
    wrote_to_sender: list[str] = field(default_factory=list)  # our users who wrote to them
    replied_ids: list[str] = field(default_factory=list)  # Message-IDs we sent, replied to

    @property
    def first_contact(self) -> bool:
        return not self.history and not self.wrote_to_sender and not self.replied_ids


class SenderMemory:
    def __init__(self, database: Database) -> None:
        self.db = database
        self.cache = _cache_for(database)

    # Writing --------------------------------------------------------------------------------

    def observe_message(self, msg: ParsedMessage, verdict_category: str) -> None:
        """Record one judged message; call after each verdict (see module docstring)."""
        self.observe_many([Observation.of_message(msg, verdict_category)])

    async def aobserve_message(self, msg: ParsedMessage, verdict_category: str) -> None:
        """`observe_message` from async code (the database calls run in a thread)."""
        await asyncio.to_thread(self.observe_message, msg, verdict_category)

    def observe(self, sender: str, recipients: Iterable[str], verdict_category: str,
                direction: Direction | str, message_id: str = "",
                at: datetime | None = None) -> None:
        """Count a message from `sender` to each recipient with its verdict category.

        Inbound: the sender is outside, the recipients ours. Outbound/internal: the sender
        is our user; the rows mark whom they wrote to, and the Message-ID is kept so a
        reply to it is recognised."""
        self.observe_many([Observation.of(sender, recipients, verdict_category, direction,
                                          message_id, at)])

    def observe_many(self, observations: Iterable[Observation]) -> None:
        """Record a batch of observations in one transaction.

        The gateway's feed hands over whatever queued up while the last batch was written:
        the counters of each (sender, recipient) pair are summed first and written with one
        upsert statement per chunk (`INSERT … ON CONFLICT DO UPDATE`, adding to the stored
        counters, so concurrent writers on other nodes never lose an increment)."""
        pairs: dict[tuple[str, str], dict[str, Any]] = {}
        sent: dict[str, tuple[str, datetime]] = {}
        for ob in observations:
            if not ob.sender or not ob.recipients:
                continue
            ours = ob.direction is not Direction.INBOUND
            for r in ob.recipients:
                row = pairs.get((ob.sender, r))
                if row is None:
                    row = pairs[(ob.sender, r)] = {
                        "sender": ob.sender, "recipient": r, "first_seen": ob.at,
                        "last_seen": ob.at, "messages": 0, "clean": 0, "bad": 0,
                        "outbound": False}
                row["messages"] += 1
                row["clean"] += ob.category == "clean"
                row["bad"] += ob.category in BAD_CATEGORIES
                row["outbound"] = row["outbound"] or ours
                row["first_seen"] = min(row["first_seen"], ob.at)
                row["last_seen"] = max(row["last_seen"], ob.at)
            if ours and ob.message_id:
                mid = normalise_message_id(ob.message_id)
                if mid:
                    sent.setdefault(mid, (ob.sender, ob.at))
        if not pairs and not sent:
            return
        rows = list(pairs.values())
        with self.db.session() as s:
            insert = _dialect_insert(s)
            table = SenderMemoryRow.__table__
            for i in range(0, len(rows), UPSERT_CHUNK):
                stmt = insert(table).values(rows[i:i + UPSERT_CHUNK])
                stmt = stmt.on_conflict_do_update(
                    index_elements=[table.c.sender, table.c.recipient],
                    set_={"messages": table.c.messages + stmt.excluded.messages,
                          "clean": table.c.clean + stmt.excluded.clean,
                          "bad": table.c.bad + stmt.excluded.bad,
                          "last_seen": stmt.excluded.last_seen,
                          "outbound": table.c.outbound | stmt.excluded.outbound},
                ).returning(table.c.sender, table.c.recipient, table.c.messages,
                            table.c.clean, table.c.bad, table.c.first_seen,
                            table.c.last_seen, table.c.outbound)
                for got in s.execute(stmt):
                    self._refresh_cache(got.sender, got.recipient, PairStats(
                        messages=got.messages, clean=got.clean, bad=got.bad,
                        first_seen=got.first_seen, last_seen=got.last_seen,
                        outbound=bool(got.outbound)))
            if sent:
                sent_table = SentMessageRow.__table__
                values = [{"message_id": mid, "sender": snd, "sent_at": at}
                          for mid, (snd, at) in sent.items()]
                for i in range(0, len(values), UPSERT_CHUNK):
                    s.execute(insert(sent_table).values(values[i:i + UPSERT_CHUNK])
                              .on_conflict_do_nothing(index_elements=[sent_table.c.message_id]))

    def _refresh_cache(self, sender: str, recipient: str, stats: PairStats) -> None:
        self.cache.update((sender, recipient), stats=stats)
        if stats.outbound:
            self.cache.update((recipient, sender), wrote=True)

    # Reading --------------------------------------------------------------------------------

    def recall(self, sender: str, recipients: Iterable[str],
               reply_ids: Iterable[str] = ()) -> Correspondence:
        sender = sender.strip().strip("<>").lower()
        rcpts = sorted({r.strip().strip("<>").lower() for r in recipients if r.strip()})
        ids = sorted(set(reply_ids))[:100]
        out = Correspondence(sender=sender)
        if not sender:
            return out
        missing: list[str] = []
        for r in rcpts:
            hit = self.cache.get((sender, r))
            if hit is None:
                missing.append(r)
                continue
            stats, wrote = hit
            if stats is not None:
                out.history[r] = stats
            if wrote:
                out.wrote_to_sender.append(r)
        if not missing and not ids:
            return out
        with self.db.session() as s:
            if missing:
                # One query for both directions: the sender's rows to these recipients, and
                # these recipients' outbound rows to the sender.
                found: dict[str, PairStats] = {}
                writers: set[str] = set()
                for row in s.scalars(select(SenderMemoryRow).where(or_(
                        and_(SenderMemoryRow.sender == sender,
                             SenderMemoryRow.recipient.in_(missing)),
                        and_(SenderMemoryRow.recipient == sender,
                             SenderMemoryRow.sender.in_(missing),
                             SenderMemoryRow.outbound.is_(True))))):
                    if row.sender == sender and row.recipient in missing:
                        found[row.recipient] = _stats(row)
                    if row.recipient == sender and row.outbound and row.sender in missing:
                        writers.add(row.sender)
                for r in missing:
                    self.cache.put((sender, r), found.get(r), r in writers)
                out.history.update(found)
                out.wrote_to_sender = sorted({*out.wrote_to_sender, *writers})
            if ids:
                out.replied_ids = sorted(s.scalars(select(SentMessageRow.message_id).where(
                    SentMessageRow.message_id.in_(ids))))
        out.wrote_to_sender = sorted(out.wrote_to_sender)
        return out

    def recall_cached(self, msg: ParsedMessage) -> Correspondence | None:
        """`recall_message` answered from the cache alone, or None when it needs a query
        (a pair not cached, or reply Message-IDs to look up)."""
        if message_ids_in(msg.header("in-reply-to") or "") or msg.header_all("references"):
            return None
        sender = sender_identity(msg)
        if not sender:
            return Correspondence(sender="")
        rcpts = {r.strip().strip("<>").lower() for r in msg.envelope.rcpt_tos if r.strip()}
        out = Correspondence(sender=sender)
        for r in sorted(rcpts):
            hit = self.cache.get((sender, r))
            if hit is None:
                return None
            if hit[0] is not None:
                out.history[r] = hit[0]
            if hit[1]:
                out.wrote_to_sender.append(r)
        return out

    def recall_message(self, msg: ParsedMessage) -> Correspondence:
        ids = message_ids_in(msg.header("in-reply-to") or "") + \
            message_ids_in(" ".join(msg.header_all("references")))
        return self.recall(sender_identity(msg), msg.envelope.rcpt_tos, ids)


class ObservationFeed:
    """The gateway's hook into the memory: `offer()` queues an observation and returns at
    once; one background thread writes whatever has queued up as one batch
    (`observe_many`). A slow or failing database can then neither delay nor lose mail:
    failures are logged, and beyond `max_pending` waiting observations new ones are
    dropped with a warning (the memory is a signal, not a record)."""

    MAX_BATCH = 1000

    def __init__(self, memory: SenderMemory, max_pending: int = 10_000,
                 coalesce: float = 0.2) -> None:
        self.memory = memory
        self.coalesce = coalesce
        self.max_pending = max_pending
        self._q: queue.SimpleQueue[Observation | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mailmoat-memory", daemon=True)
        self._thread.start()

    def offer(self, msg: ParsedMessage, verdict_category: str) -> bool:
        """Queue one judged message; False when it was dropped (closed or too far behind)."""
        with self._lock:
            if self._closed:
                return False
            if self._pending >= self.max_pending:
                log.warning("sender memory is behind; one observation dropped")
                return False
            self._pending += 1
        self._q.put(Observation.of_message(msg, verdict_category))
        return True

    def offer_outcome(self, outcome: Any) -> bool:
        """`offer` for a `ScanOutcome`: the gateway's verdict hook."""
        return self.offer(outcome.message, outcome.verdict.category.value)

    def _run(self) -> None:
        while True:
            # A short wait lets a busy gateway's observations gather: one transaction for
            # many messages costs far less than one each, and nothing waits on them.
            batch, stop = take_batch(self._q, self.MAX_BATCH, wait=self.coalesce)
            if batch:
                try:
                    self.memory.observe_many(batch)
                except Exception:
                    log.exception("sender memory: recording %d observation(s) failed",
                                  len(batch))
                finally:
                    with self._lock:
                        self._pending -= len(batch)
            if stop:
                return

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._q.put(None)
        self._thread.join(timeout)
