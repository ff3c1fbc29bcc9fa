"""Where account state lives.

* `MemoryStore` (always there): baselines and recent windows of the accounts seen lately,
  at most `[internal] max_accounts_in_memory` (least recently seen go first; what they
  learned is written to the database before they go). A first sight of an account reads
  its baseline from the database in a thread, so the event loop never waits on it.
* `RedisStore` (with `[redis] url`): the recent windows and the baselines live in Redis,
  so every gateway node sees one account, not two halves: one script reads the window,
  the baseline and the restriction before the verdict; a second appends the message to
  the window and writes the baseline back after it (the account's next message on this
  node waits for that). Two nodes writing one account's baseline in the same millisecond
  keep one of the two updates (its window, the part a burst is judged on, keeps both). If Redis does not answer, the message is judged by
  this node's memory and a warning is logged.
* The database (`internal_baselines`): every baseline written, every `sync_seconds`, so a
  restart, an evicted account or an emptied Redis starts from what was learned. Accounts
  silent for `forget_after_days` are deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from mailmoat.internal.baseline import AccountBaseline, Entry
from mailmoat.store.db import Database
from mailmoat.store.models import InternalBaselineRow

log = logging.getLogger(__name__)

PEERS_KEY = "@peers"  # never an account: identity.py accepts no name starting with @
MAX_WINDOW_ENTRIES = 1000  # per account: a burst past this is a burst already
MAX_ENTRY_RECIPIENTS = 1000  # recipient keys kept per message (all are counted)
REDIS_TIMEOUT = 0.5  # seconds; past it this node's memory judges the message

Loader = Callable[[str], dict[str, Any] | None]


# -- the database side -----------------------------------------------------------------------

def load_baseline(db: Database, account: str) -> dict[str, Any] | None:
    with db.session() as s:
        row = s.get(InternalBaselineRow, account)
        return dict(row.state) if row is not None else None


def save_baselines(db: Database, items: list[tuple[str, dict[str, Any], float]]) -> None:
    """Upsert (account, state, last seen) rows, a few hundred per statement."""
    if not items:
        return
    now = datetime.now(UTC)
    rows = [{"account": a, "state": st, "last_seen": datetime.fromtimestamp(max(ls, 0), UTC),
             "updated_at": now} for a, st, ls in items]
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    with db.session() as s:
        for i in range(0, len(rows), 200):
            stmt = dialect.insert(InternalBaselineRow).values(rows[i:i + 200])
            stmt = stmt.on_conflict_do_update(
                index_elements=[InternalBaselineRow.account],
                set_={"state": stmt.excluded.state, "last_seen": stmt.excluded.last_seen,
                      "updated_at": stmt.excluded.updated_at})
            s.execute(stmt)


def forget_idle(db: Database, before: datetime) -> int:
    with db.session() as s:
        res = s.execute(delete(InternalBaselineRow).where(
            InternalBaselineRow.last_seen < before, InternalBaselineRow.account != PEERS_KEY))
        return int(getattr(res, "rowcount", 0) or 0)


def count_baselines(db: Database) -> int:
    from sqlalchemy import func

    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(InternalBaselineRow)) or 0)


# -- memory ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Slot:
    base: AccountBaseline
    entries: list[Entry] = field(default_factory=list)


class MemoryStore:
    """Baselines and windows in this process, bounded; `loader` reads a baseline the
    memory does not have (from the database, in a thread)."""

    def __init__(self, *, window_seconds: float, max_accounts: int,
                 loader: Loader | None = None) -> None:
        self.window = window_seconds
        self.max_accounts = max_accounts
        self.loader = loader
        self.slots: OrderedDict[str, Slot] = OrderedDict()
        self.dirty: dict[str, AccountBaseline] = {}
        # Baselines of evicted accounts not yet written: the next flush writes them.
        self.evicted: dict[str, dict[str, Any]] = {}

    async def slot(self, account: str) -> Slot:
        slot = self.slots.get(account)
        if slot is not None:
            self.slots.move_to_end(account)
            return slot
        pending = self.evicted.pop(account, None)
        data = pending
        if data is None and self.loader is not None:
            try:
                data = await asyncio.to_thread(self.loader, account)
            except Exception:  # the database is away: start afresh, lose nothing but history
                log.exception("reading the baseline of %s failed; judging it as new", account)
            slot = self.slots.get(account)  # another message may have loaded it meanwhile
            if slot is not None:
                return slot
        slot = Slot(AccountBaseline.from_dict(data) if data else AccountBaseline())
        if pending is not None:
            self.dirty[account] = slot.base
        self.slots[account] = slot
        while len(self.slots) > self.max_accounts:
            old, gone = self.slots.popitem(last=False)
            if self.dirty.pop(old, None) is not None:
                self.evicted[old] = gone.base.to_dict()
        return slot

    async def begin(self, account: str, now: float) -> tuple[AccountBaseline, list[Entry]]:
        """The account's baseline and its window (entries since `now` - window)."""
        slot = await self.slot(account)
        entries = slot.entries
        cutoff = now - self.window
        if entries and (entries[0].at < cutoff or len(entries) >= MAX_WINDOW_ENTRIES):
            entries[:] = [e for e in entries if e.at >= cutoff][-(MAX_WINDOW_ENTRIES - 1):]
        return slot.base, list(entries)

    async def commit(self, account: str, base: AccountBaseline, entry: Entry | None) -> None:
        """The message's entry (if it was sent) joins the window; the baseline is to be
        written."""
        slot = self.slots.get(account)
        if slot is None:  # evicted while the message was judged: back it comes
            slot = self.slots[account] = Slot(base)
        slot.base = base
        if entry is not None:
            slot.entries.append(entry)
        self.dirty[account] = base

    def peek(self, account: str) -> AccountBaseline | None:
        slot = self.slots.get(account)
        return slot.base if slot is not None else None

    async def take_dirty(self) -> list[tuple[str, dict[str, Any], float]]:
        """What to write: (account, state, last seen); the dirty set starts afresh."""
        dirty, evicted = self.dirty, self.evicted
        self.dirty, self.evicted = {}, {}
        out = [(a, st, float(st.get("last_seen") or 0)) for a, st in evicted.items()]
        for i, (a, b) in enumerate(dirty.items()):
            out.append((a, b.to_dict(), b.last_seen or b.first_seen))
            if i % 256 == 255:  # thousands of baselines to write must not stall SMTP
                await asyncio.sleep(0)
        return out


# -- Redis -----------------------------------------------------------------------------------

_HEAD = struct.Struct("<dQHHHBH")

# One call each way (a script is one command: redis-py spends most of a round trip's CPU
# per command, and a pipeline of three cost half as much again as one script).
# KEYS: window, baseline, restriction.
_BEGIN_LUA = """
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('GET', KEYS[2]),
        redis.call('GET', KEYS[3])}
"""
# KEYS: window, baseline. ARGV: entry ("" when the message was not sent), window entries
# kept, window TTL in ms, baseline state, baseline TTL in s.
_COMMIT_LUA = """
if ARGV[1] ~= '' then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
return 1
"""


def pack_entry(e: Entry) -> bytes:
    rcpts = e.recipients[:MAX_ENTRY_RECIPIENTS]
    flags = (1 if e.external_attachments else 0) | (2 if e.forwarded else 0) | \
        (4 if e.copy else 0) | (8 if e.drop else 0)
    return _HEAD.pack(e.at, e.fingerprint, min(e.new, 65535), min(e.external, 65535),
                      min(e.freemail, 65535), flags, len(rcpts)) + \
        struct.pack(f"<{len(rcpts)}I", *rcpts)


def unpack_entry(raw: bytes) -> Entry | None:
    try:
        at, fp, new, ext, free, flags, n = _HEAD.unpack_from(raw)
        rcpts = struct.unpack_from(f"<{n}I", raw, _HEAD.size)
    except struct.error:
        return None
    return Entry(at=at, fingerprint=fp, recipients=rcpts, new=new, external=ext,
                 external_attachments=bool(flags & 1), freemail=free, forwarded=bool(flags & 2),
                 copy=bool(flags & 4), drop=bool(flags & 8))


class RedisStore:
    """Windows and baselines in Redis (see the module doc); `fallback` judges when Redis
    does not answer."""

    def __init__(self, redis: Any, prefix: str, *, window_seconds: float, ttl_days: int,
                 fallback: MemoryStore, loader: Loader | None = None) -> None:
        self.redis = redis
        self.prefix = f"{prefix}internal:"
        self.window = window_seconds
        self.ttl = int(ttl_days * 86400)
        self.fallback = fallback
        self.loader = loader
        self.dirty: dict[str, tuple[dict[str, Any], float]] = {}
        self._warned = 0.0
        self._begin = redis.register_script(_BEGIN_LUA)
        self._commit = redis.register_script(_COMMIT_LUA)

    def _key(self, kind: str, account: str) -> str:
        return f"{self.prefix}{kind}:{account}"

    def _down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("internal: Redis did not answer (%s: %s); judging accounts by this "
                        "node's memory until it does", type(exc).__name__, exc)

    async def begin(self, account: str, now: float
                    ) -> tuple[AccountBaseline, list[Entry], bytes | None, bool]:
        """(baseline, window, the raw restriction, shared?) in one round trip. `shared` is
        False when Redis did not answer and this node's memory stood in."""
        try:
            raw_entries, raw_base, raw_restriction = await asyncio.wait_for(self._begin(
                keys=[self._key("w", account), self._key("b", account),
                      self._key("r", account)]), REDIS_TIMEOUT)
        except Exception as exc:  # Redis away or slow: this node judges alone
            self._down(exc)
            base, entries = await self.fallback.begin(account, now)
            return base, entries, None, False
        cutoff = now - self.window
        entries = [e for e in (unpack_entry(r) for r in raw_entries)
                   if e is not None and e.at >= cutoff]
        data: dict[str, Any] | None = None
        if raw_base:
            try:
                data = json.loads(raw_base)
            except ValueError:
                log.warning("internal: unreadable baseline of %s in Redis; reading the "
                            "database's", account)
        if data is None and self.loader is not None:
            try:
                data = await asyncio.to_thread(self.loader, account)
            except Exception:
                log.exception("reading the baseline of %s failed; judging it as new", account)
        base = AccountBaseline.from_dict(data) if data else AccountBaseline()
        return base, entries, raw_restriction, True

    async def commit(self, account: str, base: AccountBaseline, entry: Entry | None,
                     shared: bool) -> None:
        """Append the entry to the shared window and write the baseline back, in one
        transaction."""
        state = base.to_dict()
        self.dirty[account] = (state, base.last_seen or base.first_seen)
        if not shared:
            await self.fallback.commit(account, base, entry)
            return
        try:
            await asyncio.wait_for(self._commit(
                keys=[self._key("w", account), self._key("b", account)],
                args=[pack_entry(entry) if entry is not None else b"", MAX_WINDOW_ENTRIES,
                      int((self.window + 60) * 1000), json.dumps(state), self.ttl]),
                REDIS_TIMEOUT)
        except Exception as exc:
            self._down(exc)
            await self.fallback.commit(account, base, entry)

    async def take_dirty(self) -> list[tuple[str, dict[str, Any], float]]:
        out = [(a, st, ls) for a, (st, ls) in self.dirty.items()]
        self.dirty = {}
        return out + await self.fallback.take_dirty()
