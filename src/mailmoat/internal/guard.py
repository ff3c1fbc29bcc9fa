"""The account guard: one per gateway process, shared by the SMTP intake (refusals at
MAIL and DATA) and the behaviour check in the scan pipeline (judging and learning).

`observe()` is the per-message work, for one account at a time (a lock per account):

1. the store appends the message to the account's window and hands back its baseline
   and window (memory, or Redis in one round trip);
2. a finished hour is folded into the account's peaks (and the peers' histograms);
3. `signals.evaluate` compares window and message with the limits; the check's weights
   turn the signals into scores (the caller's `score_of`, so `[policy] scores` apply);
4. scores adding up to `[internal] flag_score` flag the account: an incident opens (or
   the open one grows), the action's restriction is written to the database (awaited, in
   a thread: a suspension must survive a crash) and to Redis, and the alerts go out;
5. what raised nothing is learned; the baseline goes back to the store, and to the
   database with the next sync.

All times are the message's (`Envelope.received_at`), never the wall clock, so months
of mail can be replayed through it quickly and deterministically; only the refusals at
MAIL, which have no message yet, ask the caller for the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailmoat.config import Config
from mailmoat.internal import accounts, store
from mailmoat.internal.accounts import Restriction
from mailmoat.internal.alerts import Alert, Alerter
from mailmoat.internal.baseline import AccountBaseline, Entry, PeerStats, window_stats
from mailmoat.internal.identity import SenderIdentity
from mailmoat.internal.settings import InternalSettings
from mailmoat.internal.fingerprint import recipient_key
from mailmoat.internal.signals import BAD_CONTENT, Context, MessageFacts, Signal, evaluate
from mailmoat.store.db import Database

log = logging.getLogger("mailmoat.internal")

MAX_SKEW = 300.0  # seconds a message may be older than the newest seen before a warning
MAX_FLAGS_KEPT = 10_000
SCORE_CAP = 1.5  # × flag_score: the most the behaviour symbols of one message add
SHARED_SECONDS = 3600.0  # how far back a network new to several accounts is looked for
MAX_SHARED_NETWORKS = 4096
MAX_COMPANY_NETWORKS = 100_000  # wide networks our accounts' good mail came from
COMPANY_LEARNING = 2 * 86400.0  # before this much mail time, every network is new to us
COMPANY_ESTABLISHED = 86400.0  # a network is ours a day after our good mail first used it
ScoreOf = Callable[[str, float], float]


def suspend_reply(account: str, reply: str) -> str:
    if reply == "5xx":
        return (f"550 5.7.1 Sending from {account} is suspended after unusual activity; "
                "contact your administrator")
    return (f"451 4.7.1 Sending from {account} is suspended after unusual activity; "
            "try again later or contact your administrator")


def throttle_reply(account: str, per_hour: int) -> str:
    return (f"451 4.7.1 Sending from {account} is throttled to {per_hour} messages an hour "
            "after unusual activity; try again later")


def defer_reply(account: str) -> str:
    return (f"451 4.7.1 Unusual sending from {account}; deferred for review, "
            "try again later")


@dataclass(frozen=True)
class Scored:
    signal: Signal
    score: float
    counted: bool  # False within a release's grace: shown, not scored


@dataclass(frozen=True)
class Judgement:
    """What the guard made of one message (`ScanResult.facts.internal`)."""

    account: str
    source: str  # smtp_auth | header | envelope
    score: float  # of the INTERNAL_* signals that counted
    flagged: bool  # this message flagged the account
    action: str  # none | tag | hold | defer | refuse
    reply: str  # the SMTP reply for defer and refuse
    reason: str  # one line: why the action
    incident_id: int | None = None
    restriction: Restriction | None = None
    signals: tuple[Scored, ...] = ()
    # Reviewers who get a copy of this message ([internal] review_copy_to): set when it
    # flags the account or a rule with action copy matches, and it is delivered.
    copy_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flag:
    """One flagging, as the guard saw it (kept for the evaluation and the console)."""

    account: str
    at: float
    score: float
    action: str
    incident_id: int | None
    signals: tuple[str, ...]


@dataclass
class _Counts:
    refused: int = 0
    deferred: int = 0


@dataclass
class Stats:
    observed: int = 0
    flagged: int = 0
    refused: int = 0
    deferred: int = 0
    held: int = 0
    skew_warnings: int = 0
    last: dict[str, float] = field(default_factory=dict)


class InternalGuard:
    def __init__(self, config: Config, db: Database | None = None, *, node: str = "",
                 redis: Any = None) -> None:
        self.config = config
        self.settings = config.section("internal", InternalSettings)
        self.db = db
        self.node = node or config.smtp.hostname
        s = self.settings
        loader = functools.partial(store.load_baseline, db) if db is not None else None
        self.memory = store.MemoryStore(window_seconds=s.window_minutes * 60,
                                        max_accounts=s.max_accounts_in_memory, loader=loader)
        self.redis = redis
        if self.redis is None and config.redis.url:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(config.redis.url)
        self.shared: store.RedisStore | None = None
        if self.redis is not None:
            self.shared = store.RedisStore(
                self.redis, config.redis.key_prefix, window_seconds=s.window_minutes * 60,
                ttl_days=s.forget_after_days, fallback=self.memory, loader=loader)
        self.peers = PeerStats()
        self.restrictions: dict[str, Restriction] = {}
        self.open_incidents: dict[str, int] = {}
        self.flags: list[Flag] = []
        self.alerter = Alerter(config, s)
        self.exempt = frozenset(a.strip().lower() for a in s.exempt_accounts)
        self.stats = Stats()
        self.clock = 0.0  # the newest message time seen
        self._counts: dict[int, _Counts] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._writes: set[asyncio.Future[Any]] = set()
        self._next_incident = 1  # without a database
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._restrictions_seen: datetime | None = None
        self._skew_warned = 0.0
        # Wide networks (/16, /32 for IPv6) that were new to an account lately:
        # network -> [(time, account, agent new to it or "")], the last hour's.
        self._fresh_networks: dict[str, deque[tuple[float, str, str]]] = {}
        # Wide public networks any of our accounts sent good mail from (this node's view):
        # network -> when first. One an intruder's first, unflagged messages came from is
        # not the company's until a day later.
        self._company_networks: dict[str, float] = {}
        self._first_clock = 0.0

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Read suspensions, open incidents and the peers from the database, and start
        the sync loop. Called by the gateway; `observe` calls it on first use."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            if self.db is not None:
                try:
                    await asyncio.to_thread(self._load)
                except Exception:
                    log.exception("internal: reading accounts' state failed; starting without")
            self._sync_task = asyncio.create_task(self._sync_loop(), name="internal-sync")
            self._loop = asyncio.get_running_loop()
            self._started = True

    def _load(self) -> None:
        assert self.db is not None
        rs, self._restrictions_seen = accounts.load_restrictions(self.db)
        self.restrictions = {r.account: r for r in rs}
        self.open_incidents = accounts.open_incident_ids(self.db)
        peers = store.load_baseline(self.db, store.PEERS_KEY)
        if peers:
            self.peers = PeerStats.from_dict(peers)

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(BaseException):
                await self._sync_task
            self._sync_task = None
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=10)
        if self._started:
            try:
                await self.sync()
            except Exception:
                log.exception("internal: last write of accounts' state failed")
        await self.alerter.drain()
        self.alerter.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        self._started = False

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_seconds)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the next round writes it all
                log.exception("internal: writing accounts' state failed")

    async def sync(self) -> None:
        """Write learned baselines, the peers and refusal counts to the database; read back
        restrictions changed elsewhere (console, CLI, another node)."""
        if self.db is None:
            return
        src = self.shared if self.shared is not None else self.memory
        dirty = await src.take_dirty()
        if dirty:
            dirty.append((store.PEERS_KEY, self.peers.to_dict(), self.clock))
        counts = {i: (c.refused, c.deferred) for i, c in self._counts.items()}
        self._counts.clear()
        forget = self.clock - self.settings.forget_after_days * 86400 if self.clock else 0.0
        changed = await asyncio.to_thread(self._write_and_read, dirty, counts, forget)
        for r in changed:
            self._apply_restriction(r)

    def _write_and_read(self, dirty: list[tuple[str, dict[str, Any], float]],
                        counts: dict[int, tuple[int, int]], forget: float) -> list[Restriction]:
        assert self.db is not None
        store.save_baselines(self.db, dirty)
        accounts.add_incident_counts(self.db, counts)
        if forget > 0:
            gone = store.forget_idle(self.db, datetime.fromtimestamp(forget, UTC))
            if gone:
                log.info("internal: forgot %d accounts silent for %d days", gone,
                         self.settings.forget_after_days)
        changed, self._restrictions_seen = accounts.load_restrictions(
            self.db, self._restrictions_seen)
        return changed

    def restriction_changed(self, r: Restriction) -> None:
        """A suspension or release made in this process (the console): applied now, not at
        the next sync, so an administrator who releases an account and flushes the mail
        server's queue sees it flow. Callable from any thread."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._apply_restriction, r)
        else:
            self._apply_restriction(r)

    def _apply_restriction(self, r: Restriction) -> None:
        mine = self.restrictions.get(r.account)
        if mine is None or r.updated_at >= mine.updated_at or r.released_at is not None:
            self.restrictions[r.account] = r

    # -- at MAIL and DATA: is the account suspended? ----------------------------------------

    async def restriction(self, account: str) -> Restriction | None:
        """The account's restriction: Redis's (shared by every node) when there is one,
        else this node's."""
        if self.shared is not None:
            try:
                raw = await asyncio.wait_for(
                    self.redis.get(f"{self.config.redis.key_prefix}{accounts.REDIS_KEY}{account}"),
                    store.REDIS_TIMEOUT)
                if raw:
                    r = Restriction.from_json(raw)
                    if r is not None:
                        self._apply_restriction(r)
            except Exception as exc:
                self.shared._down(exc)
        return self.restrictions.get(account)

    async def refusal(self, account: str, now: float) -> str | None:
        """The reply refusing `account`'s mail while it is suspended, or None."""
        if not self.settings.enabled or not account:
            return None
        await self.start()
        r = await self.restriction(account.lower())
        if r is None or r.kind != "suspend" or not r.active(now):
            return None
        self.stats.refused += 1
        if r.incident_id is not None:
            self._counts.setdefault(r.incident_id, _Counts()).refused += 1
        return suspend_reply(r.account, r.reply)

    # -- the per-message work -------------------------------------------------------------

    def _lock(self, account: str) -> asyncio.Lock:
        lock = self._locks.get(account)
        if lock is None:
            lock = self._locks[account] = asyncio.Lock()
        return lock

    def _time(self, at: float, account: str) -> float:
        if self.clock and at < self.clock - MAX_SKEW:
            self.stats.skew_warnings += 1
            wall = time.monotonic()
            if wall - self._skew_warned > 60:
                self._skew_warned = wall
                log.warning("internal: message from %s is dated %.0f s before the newest "
                            "seen (clock skew between nodes or upstream?); judged as dated",
                            account, self.clock - at)
        else:
            self.clock = max(self.clock, at)
            if not self._first_clock:
                self._first_clock = at
        return at

    async def observe(self, identity: SenderIdentity, facts: MessageFacts, entry: Entry,
                      score_of: ScoreOf, *, exempt: bool = False) -> Judgement:
        """Judge one message of `identity.account` and learn from it (see the module doc).
        `exempt`: no burst or fan-out signals (mail a list server expands)."""
        await self.start()
        account = identity.account
        now = self._time(facts.at, account)
        lock = self._lock(account)
        await lock.acquire()
        held = True
        try:
            judgement, commit = await self._observe(identity, facts, entry, score_of, now,
                                                    exempt)
            if commit is not None:
                # Redis: the write-back goes on while the message is answered; the account's
                # next message here waits for it (the lock is released when it is done).
                task = asyncio.ensure_future(commit)
                self._writes.add(task)
                task.add_done_callback(functools.partial(self._written, account, lock))
                held = False
            return judgement
        finally:
            if held:
                self._unlock(account, lock)

    def _unlock(self, account: str, lock: asyncio.Lock) -> None:
        lock.release()
        if not lock.locked() and not getattr(lock, "_waiters", None):
            self._locks.pop(account, None)

    def _written(self, account: str, lock: asyncio.Lock, task: asyncio.Future[Any]) -> None:
        self._writes.discard(task)
        self._unlock(account, lock)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal: writing %s's state back failed: %s", account, task.exception())

    async def _observe(self, identity: SenderIdentity, m: MessageFacts, entry: Entry,
                       score_of: ScoreOf, now: float, exempt: bool
                       ) -> tuple[Judgement, Coroutine[Any, Any, None] | None]:
        s = self.settings
        account = identity.account
        shared = False
        if self.shared is not None:
            base, entries, raw_r, shared = await self.shared.begin(account, now)
            if raw_r:
                r0 = Restriction.from_json(raw_r)
                if r0 is not None:
                    self._apply_restriction(r0)
        else:
            base, entries = await self.memory.begin(account, now)
        # First-time recipients, by the correspondents learned before this message.
        drop = entry.external_attachments and any(
            base.drop_address(k, now) for k in m.freemail_keys)
        entry = dataclasses.replace(
            entry, new=sum(1 for k in set(entry.recipients) if not base.knows(k)), drop=drop)
        ctx = self._context(account, base, m, now)
        self.stats.observed += 1
        for metric, old, new in base.roll_hour(now):
            self.peers.move(metric, old, new)
        r = self.restrictions.get(account)
        since = now - s.window_minutes * 60
        if r is not None and r.released_at is not None:
            since = max(since, r.released_at)  # what was released is not judged again
        w = window_stats(entries, entry, since, s.similarity_bits)
        signals = evaluate(s, base, self.peers, w, m, exempt=exempt or account in self.exempt,
                           ctx=ctx)
        grace = r is not None and r.in_grace(now)
        scored = tuple(Scored(sig, 0.0 if grace else score_of(sig.name, sig.factor), not grace)
                       for sig in signals)
        total = round(sum(x.score for x in scored), 3)
        cap = s.flag_score * SCORE_CAP
        if total > cap:
            # Behaviour alone adds at most this to the message's score: past the flag, what
            # the message gets is the internal action's to say (a hold, not a 550 that an
            # upstream turns into a bounce), unless its content earns more on its own.
            k = cap / total
            scored = tuple(Scored(Signal(x.signal.name, round(x.signal.factor * k, 4),
                                         x.signal.reason), round(x.score * k, 3), x.counted)
                           for x in scored)
        active = r if r is not None and r.active(now) else None
        # An account already restricted is not flagged again: its incident counts what it
        # still tries to send.
        flagged = not grace and active is None and total >= s.flag_score
        action, reply, reason = "none", "", ""
        if active is not None:
            if active.kind == "suspend":
                action, reply = "refuse", suspend_reply(account, active.reply)
                reason = f"{account} is {active.describe()}"
            elif active.kind == "hold":
                action, reason = "hold", f"{account} is {active.describe()}: its mail is held"
            elif active.kind == "throttle":
                hour = [e for e in entries if e.at >= max(active.since, now - 3600)]
                if len(hour) >= s.throttle_per_hour:
                    action, reply = "defer", throttle_reply(account, s.throttle_per_hour)
                    reason = f"{account} is {active.describe()}"
        incident_id = active.incident_id if active is not None else None
        restriction = active if active is not None else r if grace else None
        if flagged:
            base.hour_flagged = True
            base.flagged_at = now
            action, reply, reason, incident_id, restriction = await self._flag(
                identity, scored, total, w.span, active, now, action, reply, reason)
        bad = any(x.signal.name == BAD_CONTENT for x in scored)
        # Deferred or refused mail was not sent: it stays out of the window and the counts
        # (an upstream retrying a throttled account must not keep it over the limit).
        accepted = action not in ("defer", "refuse")
        if accepted:
            first = not entry.copy  # a list post's later transactions are the same message
            base.count(int(first), m.recipients if first else 0, entry.new, w.fanout,
                       int(entry.external_attachments and first))
        if bad:
            base.bad += 1
        if not flagged and not bad and action in ("none", "tag"):
            wide = _wide(m.network, public_only=True)
            if wide and wide not in self._company_networks:
                self._company_networks[wide] = now
                if len(self._company_networks) > MAX_COMPANY_NETWORKS:
                    del self._company_networks[next(iter(self._company_networks))]
            base.learn(now, recipient_keys=entry.recipients, internal=m.internal,
                       external=m.external, network=m.network, agent=m.agent, types=m.types,
                       link_domains=m.link_domains, reply_to=m.reply_to, size=0)
        else:
            base.last_seen = max(base.last_seen, now)
        commit = None
        if self.shared is not None:
            commit = self.shared.commit(account, base, entry if accepted else None, shared)
        else:
            await self.memory.commit(account, base, entry if accepted else None)
        if action == "hold":
            self.stats.held += 1
        elif action == "defer":
            self.stats.deferred += 1
            if incident_id is not None:
                self._counts.setdefault(incident_id, _Counts()).deferred += 1
        elif action == "refuse":
            self.stats.refused += 1
            if incident_id is not None:
                self._counts.setdefault(incident_id, _Counts()).refused += 1
        return Judgement(account=account, source=identity.source, score=total, flagged=flagged,
                         action=action, reply=reply, reason=reason, incident_id=incident_id,
                         restriction=restriction, signals=scored), commit

    def _context(self, account: str, base: AccountBaseline, m: MessageFacts,
                 now: float) -> Context:
        """Forwards counted, the hour, and the networks new to several accounts at once."""
        forwards, forward_new = 0, False
        if m.forwarded and m.forward_to:
            if m.forward_to in base.fwd or not base.knows(recipient_key(m.forward_to)):
                forwards, forward_new = base.note_forward(m.forward_to, now), True
            else:
                forwards = 1
        shared, shared_net, shared_agent = 0, "", ""
        wide = _wide(m.network, public_only=True)
        if wide and now - self._company_networks.get(wide, now) < COMPANY_ESTABLISHED \
                and now - self._first_clock >= COMPANY_LEARNING \
                and base.learned > 0 and not base.knows_network(m.network):
            new_agent = m.agent if m.agent and base.agents and m.agent not in base.agents else ""
            seen = self._fresh_networks.get(wide)
            if seen is None:
                if len(self._fresh_networks) >= MAX_SHARED_NETWORKS:
                    self._prune_fresh(now)
                seen = self._fresh_networks[wide] = deque()
            while seen and (seen[0][0] < now - SHARED_SECONDS or len(seen) > 256):
                seen.popleft()
            others = {a for _, a, _ in seen if a != account}
            if others:
                shared, shared_net = len(others), wide
                agents = {g for _, a, g in seen if a != account and g}
                if new_agent and new_agent in agents:
                    shared_agent = new_agent
            seen.append((now, account, new_agent))
        return Context(forwards=forwards, forward_new=forward_new,
                       quiet_hour=base.quiet_hour(now), shared_accounts=shared,
                       shared_network=shared_net, shared_agent=shared_agent)

    def _prune_fresh(self, now: float) -> None:
        for key in [k for k, v in self._fresh_networks.items()
                    if not v or v[-1][0] < now - SHARED_SECONDS]:
            del self._fresh_networks[key]
        while len(self._fresh_networks) >= MAX_SHARED_NETWORKS:
            del self._fresh_networks[next(iter(self._fresh_networks))]

    async def flag_by_rule(self, identity: SenderIdentity, kind: str, score: float,
                           lines: list[dict[str, Any]], at: float
                           ) -> tuple[str, str, str, int | None, Restriction | None]:
        """An `[[internal.rules]]` rule's account action (`alert`, `throttle`, `suspend`):
        as a flag by behaviour does, with the rule's kind for `[internal] action`; `lines`
        are the symbols that say why ({name, score, reason}). What the message gets."""
        await self.start()
        r = self.restrictions.get(identity.account)
        active = r if r is not None and r.active(at) else None
        scored = tuple(Scored(Signal(str(x["name"]), 1.0, str(x["reason"])), float(x["score"]),
                              True) for x in lines)
        why = "; ".join(str(x["reason"]) for x in lines[:2])
        # Its incident lists what the account sent in the recent window, as a flag's does.
        span = self.settings.window_minutes * 60.0
        return await self._flag(identity, scored, score, span, active, at, "none", "", "",
                                kind="tag" if kind == "alert" else kind,
                                why=f"{identity.account} flagged by {why}")

    async def _flag(self, identity: SenderIdentity, scored: tuple[Scored, ...],
                    total: float, span: float, active: Restriction | None, now: float,
                    action: str, reply: str, reason: str, *, kind: str | None = None,
                    why: str = "") -> tuple[str, str, str, int | None, Restriction | None]:
        """Open or grow the incident, restrict the account (as `kind`, by default
        `[internal] action`), alert: what the message gets."""
        s = self.settings
        kind = kind or s.action
        account = identity.account
        self.stats.flagged += 1
        lines = [{"name": x.signal.name, "score": x.score, "reason": x.signal.reason}
                 for x in sorted(scored, key=lambda x: -x.score)]
        top = "; ".join(f"{x['name']}: {x['reason']}" for x in lines[:2])
        new_incident = account not in self.open_incidents
        incident_id = await self._record_flag(account, now, now - max(span, 0.0), kind,
                                              total, lines)
        restriction = active
        new_restriction = False
        if kind != "tag" and active is None:
            restriction = Restriction(
                account=account, kind=kind, reply=s.suspend_reply, since=now,
                until=now + s.action_minutes * 60 if s.action_minutes else None, by="mailmoat",
                reason=(why or f"score {total:g} reached {s.flag_score:g}: {top}")[:2000],
                incident_id=incident_id, updated_at=time.time())
            await self._save_restriction(restriction)
            new_restriction = True
        if action == "none":
            # The message that flagged the account: held for review, or deferred under a
            # throttle (the upstream keeps it); a suspension refuses only what follows.
            action = {"tag": "tag", "hold": "hold", "suspend": "hold",
                      "throttle": "defer"}[kind]
            reason = why or f"{account} flagged (score {total:g} ≥ {s.flag_score:g}): {top}"
            if action == "defer":
                reply = defer_reply(account)
        self.flags.append(Flag(account=account, at=now, score=total, action=kind,
                               incident_id=incident_id,
                               signals=tuple(str(x["name"]) for x in lines)))
        del self.flags[:-MAX_FLAGS_KEPT]
        if new_incident or new_restriction:
            self.alerter.send(Alert(
                account=account, action=kind,
                until=restriction.until if restriction is not None else None,
                incident_id=incident_id, score=total, at=now, source=identity.source,
                client_ip=identity.client_ip, signals=lines, node=self.node))
        return action, reply, reason, incident_id, restriction

    async def _record_flag(self, account: str, now: float, window_start: float, action: str,
                           score: float, lines: list[dict[str, Any]]) -> int:
        if self.db is None:
            incident_id = self.open_incidents.get(account)
            if incident_id is None:
                incident_id = self.open_incidents[account] = self._next_incident
                self._next_incident += 1
            return incident_id
        try:
            incident_id = await asyncio.to_thread(
                accounts.record_flag, self.db, account=account, at=now,
                window_start=window_start, action=action, score=score, signals=lines,
                node=self.node)
        except Exception:
            log.exception("internal: recording the incident of %s failed", account)
            return self.open_incidents.get(account, 0) or 0
        self.open_incidents[account] = incident_id
        return incident_id

    async def _save_restriction(self, r: Restriction) -> None:
        self.restrictions[r.account] = r
        if self.db is not None:
            def write() -> None:
                assert self.db is not None
                with self.db.session() as sess:
                    accounts.save_restriction(sess, r)
            try:
                await asyncio.to_thread(write)
            except Exception:  # this node still enforces it; the next flag tries again
                log.exception("internal: writing the restriction of %s failed", r.account)
        if self.redis is not None:
            key = f"{self.config.redis.key_prefix}{accounts.REDIS_KEY}{r.account}"
            try:
                await asyncio.wait_for(self.redis.set(key, r.to_json()), store.REDIS_TIMEOUT)
            except Exception as exc:
                if self.shared is not None:
                    self.shared._down(exc)

    # -- for the console, the CLI and the evaluation --------------------------------------

    def baseline(self, account: str) -> AccountBaseline | None:
        """This node's in-memory baseline of `account` (None when not in memory)."""
        return self.memory.peek(account.lower())


def _wide(network: str, *, public_only: bool = False) -> str:
    """The /16 of an IPv4 /24 ("192.0.2.0/24" -> "192.0.0.0/16"), an IPv6 /48's /32;
    with `public_only`, "" for private, loopback and other non-global networks (our own
    offices and servers)."""
    if not network:
        return ""
    addr = network.split("/")[0]
    if public_only:
        try:
            if not ipaddress.ip_address(addr).is_global:
                return ""
        except ValueError:
            return ""
    if ":" in addr:
        groups = (addr.split(":") + ["0", "0"])[:2]
        return f"{groups[0]}:{groups[1] or '0'}::/32"
    parts = addr.split(".")
    return f"{parts[0]}.{parts[1]}.0.0/16" if len(parts) == 4 else ""
