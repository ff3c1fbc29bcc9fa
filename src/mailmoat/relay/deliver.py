"""Delivery: spooled mail → the next hop for each recipient, with retries and bounces.

Workers claim a message by renaming it incoming/ → active/ (two workers never take one
file), then for the recipients still pending:

    1. log it (first time only; a logging failure is reported, never fatal)
    2. hand recipients whose verdict is quarantine to the quarantine store
    3. group the others by route ([delivery] routes → downstream, outbound_relay for
       foreign domains) and relay each group with aiosmtplib
    4. 2xx: delivered; 4xx or no connection: try again per [delivery] retry_schedule
       (deferred/); 5xx, or too old to retry ([delivery] max_age): a DSN to the sender
    5. done/ when nobody is pending, deferred/ otherwise

An unexpected exception moves the message to shunt/ for an administrator: never dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiosmtplib

from mailmoat import maillog
from mailmoat.config import Config
from mailmoat.dkimsign import DkimSigner
from mailmoat.errors import RelayError, SpoolError
from mailmoat.intake import ScannerRef, extra_recipients, prepare_delivery
from mailmoat.message.model import Direction, Envelope, domain_of
from mailmoat.relay.dsn import build_dsn, dsn_refusal, status_code
from mailmoat.relay.headers import add_gateway_headers
from mailmoat.relay.longlines import fit_line_length
from mailmoat.relay.routes import route_for
from mailmoat.spool.queue import Handover, Spool, SpoolEntry, new_message_id
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter, log_failure, message_log_data
from mailmoat.store.quarantine import quarantine_message

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEDULER_TICK = 0.5
SWEEP_INTERVAL = 2.0  # seconds between looks at incoming/ for mail spooled by other processes


@dataclass(frozen=True)
class RcptResult:
    status: str  # delivered | deferred | failed
    response: str
    unreachable: bool = False  # no SMTP conversation with the next hop (the mail log's outage)


class ConnectionPool:
    """Open SMTP connections per next hop, reused across messages (as Postfix does).

    A connection is reused at most MAX_USES times and for at most IDLE_SECONDS of idleness,
    so a downstream that times idle clients out does not see us hold stale sockets.
    """

    MAX_USES = 100
    IDLE_SECONDS = 10.0

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[tuple[aiosmtplib.SMTP, float, int]]] = {}

    async def acquire(self, config: Config, host: str, port: int) -> tuple[aiosmtplib.SMTP, int]:
        stack = self.idle.get((host, port), [])
        now = time.monotonic()
        while stack:
            client, last, uses = stack.pop()
            if client.is_connected and now - last < self.IDLE_SECONDS:
                return client, uses
            _drop(client)
        d = config.delivery
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=d.connect_timeout,
                                 local_hostname=config.smtp.hostname, start_tls=False,
                                 validate_certs=False)
        await client.connect()
        await client.ehlo()
        if d.tls != "none" and client.supports_extension("starttls"):
            await client.starttls(validate_certs=False)
            await client.ehlo()
        elif d.tls == "required":
            _drop(client)
            raise RelayError(f"{host}:{port} does not offer STARTTLS and [delivery] tls is "
                             f"required")
        return client, 0

    def release(self, host: str, port: int, client: aiosmtplib.SMTP, uses: int) -> None:
        if uses + 1 >= self.MAX_USES or not client.is_connected:
            _quit_later(client)
            return
        self.idle.setdefault((host, port), []).append((client, time.monotonic(), uses + 1))

    async def close(self) -> None:
        for stack in self.idle.values():
            for client, _, _ in stack:
                try:
                    await asyncio.wait_for(client.quit(), 2)
                except Exception:
                    _drop(client)
        self.idle.clear()


def _drop(client: aiosmtplib.SMTP) -> None:
    try:
        client.close()
    except Exception:
        pass


def _quit_later(client: aiosmtplib.SMTP) -> None:
    async def bye() -> None:
        try:
            await asyncio.wait_for(client.quit(), 5)
        except Exception:
            _drop(client)

    asyncio.get_running_loop().create_task(bye())


async def _transaction(client: aiosmtplib.SMTP, mail_from: str, rcpts: list[str], raw: bytes,
                       where: str) -> dict[str, RcptResult]:
    options = []
    encoding = "ascii"
    if not raw.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if not all(a.isascii() for a in [mail_from, *rcpts]):
        if not client.supports_extension("smtputf8"):
            # RFC 6531: the next hop cannot take internationalised addresses at all.
            return _all(rcpts, "failed", f"{where}: 553 5.6.7 the next hop does not "
                                         f"support SMTPUTF8 for non-ASCII addresses")
        options.append("SMTPUTF8")
        encoding = "utf-8"
    out: dict[str, RcptResult] = {}
    try:
        await client.mail(mail_from, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        await client.rset()
        return _all(rcpts, *_kind(exc.code, exc.message, where))
    accepted = []
    for rcpt in rcpts:
        try:
            await client.rcpt(rcpt, encoding=encoding)
            accepted.append(rcpt)
        except aiosmtplib.SMTPRecipientRefused as exc:
            out[rcpt] = _classify(exc.code, exc.message, where)
    if not accepted:
        await client.rset()
        return out
    try:
        response = await client.data(raw)
    except aiosmtplib.SMTPResponseException as exc:
        out.update(_all(accepted, *_kind(exc.code, exc.message, where)))
        return out
    out.update({r: RcptResult("delivered", f"{where}: {response.code} {response.message}")
                for r in accepted})
    return out


async def send_to_route(config: Config, host: str, port: int, mail_from: str, rcpts: list[str],
                        raw: bytes, pool: ConnectionPool | None = None) -> dict[str, RcptResult]:
    """One SMTP transaction; every recipient comes back with its own outcome."""
    pool = pool or ConnectionPool()
    where = f"{host}:{port}"
    for attempt in (1, 2):
        try:
            client, uses = await pool.acquire(config, host, port)
        except RelayError as exc:
            return _all(rcpts, "deferred", str(exc))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return _all(rcpts, "deferred", f"{where}: {type(exc).__name__}: {exc}",
                        unreachable=True)
        try:
            result = await _transaction(client, mail_from, rcpts, raw, where)
        except aiosmtplib.SMTPServerDisconnected as exc:
            _drop(client)
            if uses and attempt == 1:
                continue  # a reused connection the server had closed: once more, fresh
            return _all(rcpts, "deferred", f"{where}: {type(exc).__name__}: {exc}")
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            _drop(client)
            return _all(rcpts, "deferred", f"{where}: {type(exc).__name__}: {exc}")
        pool.release(host, port, client, uses)
        return result
    raise AssertionError("unreachable")


def _kind(code: int, message: str, where: str) -> tuple[str, str]:
    text = f"{where}: {code} {message}"
    return ("failed", text) if 500 <= code < 600 else ("deferred", text)


def _classify(code: int, message: str, where: str) -> RcptResult:
    return RcptResult(*_kind(code, message, where))


def _all(rcpts: list[str], status: str, text: str,
         unreachable: bool = False) -> dict[str, RcptResult]:
    return {r: RcptResult(status, text, unreachable) for r in rcpts}


class DeliveryManager:
    """The workers that drain the spool. `wake(id)` after a message is spooled."""

    def __init__(self, config: Config, spool: Spool, db: Database | None = None,
                 log_writer: LogWriter | None = None, scanner: Any = None,
                 signer: DkimSigner | None = None,
                 sender: Callable[..., Any] = send_to_route,
                 io_executor: concurrent.futures.Executor | None = None) -> None:
        self.config = config
        self.spool = spool
        self.db = db
        self.log_writer = log_writer
        # Shared with intake (app.build passes one ScannerRef to both).
        self.scanner_ref = ScannerRef.of(scanner)
        self.signer = signer or DkimSigner.from_config(config)
        self.sender = sender
        self.pool = ConnectionPool()
        self.outages = maillog.OutageWatch()  # unreachable next hops, for the mail log
        self.io_executor = io_executor
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._deferred: list[tuple[float, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._busy = 0
        self._last_cleanup = 0.0
        self._last_sweep = 0.0
        self._queued: set[str] = set()
        # Messages handed over by the intake in this process: id → (sidecar, bytes), so a
        # worker's claim is two renames instead of two reads and a JSON parse. Only while
        # they fit [delivery] max_bytes_in_memory / max_messages_in_memory (counted with
        # what the workers hold); past that the intake's mail waits on disk only, its id in
        # `_spilled` (in active/ already, read back when its attempt starts).
        self._handed: dict[str, tuple[SpoolEntry, bytes]] = {}
        self._handed_bytes = 0
        self._spilled: set[str] = set()
        self._in_flight_bytes = 0  # bytes of the messages workers are delivering now
        # The delivery backlog: every message this process has queued, is delivering or has
        # deferred (id → its size), read by the intake to answer 451 past [delivery]
        # max_backlog / max_backlog_bytes.
        self._backlog: dict[str, int] = {}
        self._backlog_bytes = 0
        self._finisher: concurrent.futures.ThreadPoolExecutor | None = None
        self._finishing: set[asyncio.Future[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for msg_id in self.spool.ids("incoming"):
            self.wake(msg_id)
        for msg_id in self.spool.ids("deferred"):
            try:
                entry, raw = self.spool.read("deferred", msg_id)
                heapq.heappush(self._deferred, (entry.next_attempt, msg_id))
                self._count(msg_id, len(raw))
            except (OSError, ValueError) as exc:
                log.error("deferred message %s unreadable (%s); moving it to shunt/", msg_id, exc)
                self.spool.move(msg_id, "deferred", "shunt")
        self._finisher = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mailmoat-finish")
        n = max(1, self.config.delivery.workers)
        self._tasks = [asyncio.create_task(self._worker(i), name=f"delivery-{i}") for i in range(n)]
        self._tasks.append(asyncio.create_task(self._scheduler(), name="delivery-scheduler"))

    async def stop(self, grace: float = 10.0) -> None:
        """Let workers finish the message in hand (so nothing is sent twice), then stop."""
        self._stopping = True
        for _ in self._tasks:
            self.queue.put_nowait("")
        deadline = time.monotonic() + grace
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        if self._finisher is not None:
            self._finisher.shutdown(wait=True)
            self._finisher = None
        await self.pool.close()

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Spool file work (fsync) off the event loop, on the spool's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self.io_executor, fn, *args)

    def wake(self, msg_id: str, entry: SpoolEntry | None = None, raw: bytes | None = None) -> None:
        """Queue a message spooled in incoming/. With `entry` and `raw`, the caller has
        spooled it straight into active/ for this process (the intake does): the worker
        does not claim it, and while the bytes fit the in-memory budget it does not read
        it back either. After a crash, recovery returns it to incoming/."""
        if entry is not None and raw is not None:
            self._count(msg_id, len(raw))
            if msg_id not in self._handed and msg_id not in self._spilled:
                if self._fits(len(raw)):
                    self._handed[msg_id] = (entry, raw)
                    self._handed_bytes += len(raw)
                else:
                    self._spilled.add(msg_id)
        else:
            self._count(msg_id, 0)  # its size is learnt when a worker reads it
        if msg_id not in self._queued:
            self._queued.add(msg_id)
            self.queue.put_nowait(msg_id)

    def idle(self) -> bool:
        return self.queue.empty() and not self._busy

    # -- memory and backlog ----------------------------------------------------------------

    def memory_held(self) -> tuple[int, int]:
        """(messages, bytes) of mail the delivery side holds in memory: handed over by the
        intake and not yet started, plus what the workers are delivering."""
        return len(self._handed) + self._busy, self._handed_bytes + self._in_flight_bytes

    def backlog(self) -> tuple[int, int]:
        """(messages, bytes) waiting in the spool for this process's delivery: queued,
        being delivered or deferred. Kept as a count, so reading it costs nothing."""
        return len(self._backlog), self._backlog_bytes

    def backlog_full(self) -> bool:
        """True when the intake should answer 451 4.3.1 ([delivery] max_backlog,
        max_backlog_bytes; 0 = no limit)."""
        d = self.config.delivery
        return bool((d.max_backlog and len(self._backlog) >= d.max_backlog)
                    or (d.max_backlog_bytes and self._backlog_bytes >= d.max_backlog_bytes))

    def _fits(self, n: int, more: int = 1) -> bool:
        """Whether `more` messages of `n` bytes more stay within the in-memory caps."""
        d = self.config.delivery
        messages, held = self.memory_held()
        return messages + more <= d.max_messages_in_memory and held + n <= d.max_bytes_in_memory

    def _count(self, msg_id: str, size: int) -> None:
        old = self._backlog.get(msg_id)
        if old is None or (size and size != old):
            self._backlog[msg_id] = size
            self._backlog_bytes += size - (old or 0)

    def _uncount(self, msg_id: str) -> None:
        self._backlog_bytes -= self._backlog.pop(msg_id, 0)

    def _evict(self) -> None:
        """Leave handed-over mail on disk only (newest first) until what is held fits."""
        while self._handed and not self._fits(0, 0):
            msg_id, (_, raw) = self._handed.popitem()
            self._handed_bytes -= len(raw)
            self._spilled.add(msg_id)

    async def _take(self, msg_id: str) -> tuple[SpoolEntry, bytes] | None:
        """The message for a worker: from the hand-over, else read from active/ (handed
        over but left on disk), else claimed from incoming/. None: another worker (or
        process) took it."""
        handed = self._handed.pop(msg_id, None)
        if handed is not None:
            self._handed_bytes -= len(handed[1])
            return handed
        if msg_id in self._spilled:
            self._spilled.discard(msg_id)
            return await self._io(self.spool.read, "active", msg_id)
        return await self._io(self.spool.claim, msg_id)

    # -- loops -----------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        while not self._stopping:
            now = time.time()
            while self._deferred and self._deferred[0][0] <= now:
                _, msg_id = heapq.heappop(self._deferred)
                if await self._io(self.spool.move, msg_id, "deferred", "incoming"):
                    self.wake(msg_id)
                else:
                    self._uncount(msg_id)  # another process retried it
            if now - self._last_sweep > SWEEP_INTERVAL:
                # Other processes (the CLI, the console) release quarantined mail by writing
                # into incoming/; pick those up too.
                self._last_sweep = now
                for msg_id in await self._io(self.spool.ids, "incoming"):
                    self.wake(msg_id)
            if now - self._last_cleanup > 600:
                self._last_cleanup = now
                await asyncio.to_thread(self._cleanup_done, now)
            await asyncio.sleep(SCHEDULER_TICK)

    def _cleanup_done(self, now: float) -> None:
        """Delivered mail past [delivery] keep_delivered_hours leaves done/."""
        keep = self.config.delivery.keep_delivered_hours * 3600
        for p in self.spool.dir("done").glob("*"):
            try:
                if now - p.stat().st_mtime > keep:
                    p.unlink()
            except OSError:
                pass

    async def _worker(self, n: int) -> None:
        while True:
            msg_id = await self.queue.get()
            if self._stopping or not msg_id:
                return
            self._queued.discard(msg_id)
            self._busy += 1
            size = 0
            try:
                try:
                    # Mail the intake handed over was spooled straight into active/ (it is
                    # ours already); anything else is claimed by rename from incoming/.
                    claimed = await self._take(msg_id)
                except (OSError, ValueError, SpoolError):
                    log.exception("message %s is unreadable; moved to shunt/", msg_id)
                    self._uncount(msg_id)
                    await self._io(self._shunt, msg_id)
                    continue
                if claimed is None:
                    self._uncount(msg_id)
                    continue  # another worker took it, or it was already handled
                size = len(claimed[1])
                self._in_flight_bytes += size
                self._count(msg_id, size)
                self._evict()  # a message read back may push what is held past the cap
                try:
                    await self.process(msg_id, *claimed)
                except asyncio.CancelledError:
                    raise  # left in active/: recovered on the next start
                except Exception:
                    log.exception("delivery of %s failed unexpectedly; moved to shunt/", msg_id)
                    self._uncount(msg_id)
                    await self._io(self._shunt, msg_id)
            finally:
                self._in_flight_bytes -= size
                self._busy -= 1

    def _shunt(self, msg_id: str) -> None:
        try:
            self.spool.move(msg_id, "active", "shunt")
        except OSError:
            log.exception("could not shunt %s; it stays in active/ and is recovered on restart",
                          msg_id)

    # -- one message -----------------------------------------------------------------------

    async def process(self, msg_id: str, entry: SpoolEntry, raw: bytes) -> None:
        log_id = entry.handover.mailmoat_id or entry.id
        if not entry.scanned:
            raw = await self._scan_late(entry, raw)
        plan = entry.handover.plan
        if entry.handover.log is not None and not entry.handover.logged and self.log_writer:
            # The writer applies a message before any delivery record queued after it, so
            # delivery waits for the database only when a quarantine row will refer to the
            # message (with several processes on one SQLite file that wait was the
            # bottleneck). A write that fails is logged and, as `logged` stays unset, tried
            # again on the next attempt.
            logged = self._log_message(entry, log_id)
            if "quarantine" in plan.values():
                with contextlib.suppress(Exception):  # reported by _log_message
                    await asyncio.wrap_future(logged)
        events: list[tuple[str, str, str]] = []
        hold = [r for r in entry.pending if plan.get(r) == "quarantine"]
        if hold:
            if await self._quarantine(entry, log_id, raw, hold):
                entry.pending = [r for r in entry.pending if r not in hold]
                events += [(r, "quarantined", "held in quarantine") for r in hold]
                maillog.quarantine_action(log_id, "hold", "policy", hold)
        failures: list[tuple[str, str, str]] = []
        targets = [r for r in entry.pending if r not in hold]
        if targets:
            results = await self._deliver(entry, raw, targets)
            for rcpt, res in results.items():
                events.append((rcpt, res.status, res.response))
                self._log_attempt(log_id, entry, rcpt, res.status, res.response,
                                  "4.4.1" if res.unreachable else None)
                if res.status == "delivered":
                    entry.pending.remove(rcpt)
                elif res.status == "failed":
                    entry.pending.remove(rcpt)
                    failures.append((rcpt, status_code(res.response), res.response))
                else:
                    entry.last_error = res.response
        now = time.time()
        if entry.pending and now - entry.received_at >= self.config.delivery.max_age:
            for rcpt in entry.pending:
                why = f"gave up after {int(now - entry.received_at)}s: {entry.last_error}"
                failures.append((rcpt, "4.4.7", why))
                events.append((rcpt, "failed", why))
                self._log_attempt(log_id, entry, rcpt, "failed", why, "4.4.7")
            entry.pending = []
        if entry.pending:
            entry.attempts += 1
            sched = self.config.delivery.retry_schedule or [300]
            entry.next_attempt = now + sched[min(entry.attempts - 1, len(sched) - 1)]
        self._record(log_id, events, entry)
        if failures:
            await self._bounce(entry, raw, failures)
        if entry.pending:
            await self._io(self._finish, entry)  # the retry state is fsync'd first
        else:
            # Nothing depends on the move to done/ (a message lost in active/ is delivered
            # again, never lost), so the worker does not wait for it: one thread does
            # these in order, and stop() waits for them.
            fut = asyncio.get_running_loop().run_in_executor(self._finisher, self._finish, entry)
            self._finishing.add(fut)
            fut.add_done_callback(self._finished)
        if entry.pending:
            heapq.heappush(self._deferred, (entry.next_attempt, entry.id))
        else:
            self._uncount(entry.id)

    def _log_attempt(self, log_id: str, entry: SpoolEntry, rcpt: str, status: str,
                     response: str, dsn: str | None) -> None:
        """The mail log's line for one recipient of one attempt (maillog.delivery)."""
        try:
            host, port = route_for(self.config, rcpt)
            relay = f"{host}:{port}"
            reply = response[len(relay) + 2:] if response.startswith(relay + ": ") else response
            dsn = dsn or status_code(reply, {"delivered": "2.0.0",
                                             "deferred": "4.0.0"}.get(status, "5.0.0"))
            maillog.delivery(log_id, to=rcpt, relay=relay, status=status, dsn=dsn,
                             delay=time.time() - entry.received_at, reply=reply)
        except Exception:
            log.exception("mail log line for %s failed", log_id)

    def _finished(self, fut: asyncio.Future[None]) -> None:
        self._finishing.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("moving a delivered message to done/ failed: %s (it stays in active/ "
                      "and is delivered again after a restart)", fut.exception())

    def _finish(self, entry: SpoolEntry) -> None:
        # A deferred message's retry state is rewritten and fsync'd. A finished one just
        # moves (two renames, no fsync): its outcome is in the message log, and done/
        # keeps the bytes and the sidecar as accepted, for tracing.
        if entry.pending:
            self.spool.update("active", entry, sync=True)
            self.spool.move(entry.id, "active", "deferred", sync=True)
        else:
            self.spool.move(entry.id, "active", "done", sync=False)

    @property
    def scanner(self) -> Any:
        return self.scanner_ref.current

    async def _scan_late(self, entry: SpoolEntry, raw: bytes) -> bytes:
        """Mail spooled while the scanner was broken is scanned before it goes anywhere;
        if the scanner is still broken the exception shunts it for an administrator."""
        if self.scanner is None:
            raise RuntimeError("message was spooled unscanned and no scanner is available")
        env = Envelope(mail_from=entry.mail_from, rcpt_tos=tuple(entry.rcpt_tos),
                       client_ip=entry.client_ip or None, helo=entry.helo or None,
                       auth_user=entry.auth_user or None, direction=Direction(entry.direction),
                       received_at=entry.received_at)
        outcome = await self.scanner.scan(raw, env)
        data = message_log_data(mailmoat_id=entry.id, envelope=env, outcome=outcome,
                                node=self.config.smtp.hostname)
        raw, handover = prepare_delivery(outcome, raw, mailmoat_id=entry.id,
                                         received=entry.handover.received, log=data,
                                         config=self.config)
        entry.handover = replace(entry.handover, plan=handover.plan, log=handover.log,
                                 sender_auth_failed=handover.sender_auth_failed)
        copies = extra_recipients(handover.plan, entry.rcpt_tos)  # review copies
        entry.rcpt_tos = [*entry.rcpt_tos, *copies]
        entry.pending = [*entry.pending, *copies]
        entry.scanned = True
        await self._io(self.spool.put, entry, raw, "active")
        return raw

    def _log_message(self, entry: SpoolEntry, log_id: str) -> concurrent.futures.Future[bool]:
        assert self.log_writer is not None
        loop = asyncio.get_running_loop()

        def done(fut: concurrent.futures.Future[bool]) -> None:
            exc = fut.exception()
            if exc is not None:
                log.error("logging %s failed (the message itself is safe in the spool): %s",
                          log_id, exc)
                return
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to mark
                loop.call_soon_threadsafe(setattr, entry.handover, "logged", True)

        assert entry.handover.log is not None
        fut = self.log_writer.log_message(entry.handover.log)
        fut.add_done_callback(done)
        return fut

    def _record(self, log_id: str, events: list[tuple[str, str, str]], entry: SpoolEntry) -> None:
        if self.log_writer is None or not events:
            return
        attempts = entry.attempts + (0 if entry.pending else 1)
        log_failure(self.log_writer.log_delivery(log_id, events, attempts, entry.next_attempt),
                    log, f"recording delivery of {log_id}")

    async def _quarantine(self, entry: SpoolEntry, log_id: str, raw: bytes,
                          hold: list[str]) -> bool:
        if self.db is None:
            log.error("message %s should be quarantined but no database is configured", log_id)
            return False
        try:
            await asyncio.to_thread(quarantine_message, self.config, self.db, log_id, raw,
                                    entry.mail_from, list(entry.rcpt_tos), hold)
            return True
        except Exception as exc:  # kept pending: the next attempt tries again
            entry.last_error = f"quarantine failed: {exc}"
            log.exception("quarantining %s failed; will retry", log_id)
            return False

    async def _deliver(self, entry: SpoolEntry, raw: bytes, rcpts: list[str]) -> dict[str, RcptResult]:
        # Every path out (scanned, released, DSN) passes here: lines over RFC 5322's 998
        # bytes are re-encoded before sending and before our DKIM signature, which must cover
        # the bytes sent. Mail within the limit comes back untouched.
        raw = fit_line_length(raw)
        if entry.direction == Direction.OUTBOUND.value and not entry.handover.dsn:
            # Sign for the From header's domain (what DMARC aligns with), else the sender's.
            domain = str((entry.handover.log or {}).get("from_domain") or "") or \
                domain_of(entry.mail_from)
            try:
                raw = self.signer.sign(raw, domain)
            except Exception:
                log.exception("DKIM signing of %s for %s failed; sending unsigned",
                              entry.id, domain)
        groups: dict[tuple[str, int], list[str]] = {}
        for r in rcpts:
            groups.setdefault(route_for(self.config, r), []).append(r)
        results: dict[str, RcptResult] = {}
        outs = await asyncio.gather(*(self.sender(self.config, host, port, entry.mail_from, rs, raw,
                                                  pool=self.pool)
                                      for (host, port), rs in groups.items()))
        now = time.monotonic()
        for (host, port), out in zip(groups, outs):
            results.update(out)
            down = next((r for r in out.values() if r.unreachable), None)
            if down is not None:
                self.outages.failed(f"{host}:{port}", down.response, now)
            else:
                self.outages.answered(f"{host}:{port}", now)
        return results

    async def _bounce(self, entry: SpoolEntry, raw: bytes, failures: list[tuple[str, str, str]]) -> None:
        # A review copy that fails is the gateway's business, never the sender's: a DSN
        # would tell a compromised account that its mail is watched.
        logged = (entry.handover.log or {}).get("recipients") or {}
        for rcpt, _, response in failures:
            if logged.get(rcpt) == "copy":
                log.warning("review copy of %s to %s could not be delivered: %s", entry.id,
                            rcpt, response[:200])
        failures = [f for f in failures if logged.get(f[0]) != "copy"]
        if not failures:
            return
        why = dsn_refusal(entry.mail_from, entry.handover)
        if why:
            log.info("not sending a DSN for %s (%s)", entry.id, why)
            return
        host = self.config.smtp.hostname
        dsn = build_dsn(reporting_mta=host, original_id=entry.handover.mailmoat_id or entry.id,
                        mail_from=entry.mail_from, received_at=entry.received_at,
                        failures=failures, original=raw)
        dsn_id = new_message_id()
        env = Envelope(mail_from="", rcpt_tos=(entry.mail_from,), helo=host,
                       direction=Direction.INTERNAL)
        data = message_log_data(mailmoat_id=dsn_id, envelope=env, outcome=None, node=host)
        data.update(reason="delivery status notification", subject="Undelivered Mail Returned to Sender")
        dsn_entry = SpoolEntry(id=dsn_id, mail_from="", rcpt_tos=[entry.mail_from],
                               received_at=time.time(), helo=host,
                               direction=Direction.INTERNAL.value, scanned=True,
                               handover=Handover(dsn=True, dsn_for=entry.id, log=data,
                                                 plan={entry.mail_from: "deliver"}))
        raw_dsn = add_gateway_headers(dsn, mailmoat_id=dsn_id, verdict=None, result=None,
                                      hostname=host)
        await self._io(self.spool.put, dsn_entry, raw_dsn)
        self.wake(dsn_id)
