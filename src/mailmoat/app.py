"""The app factory: `build(config)` wires every part of the gateway; `run()` serves it.

Nothing here happens at import time. `build` creates the objects (database, message-log
writer, spool, scanner, delivery workers, SMTP handler); `Gateway.start` opens sockets and
starts the workers, after moving anything a crash left in the spool's active/ back to
incoming/ so it is delivered again. Shutdown stops accepting first, then lets the workers
finish the message in hand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailmoat import maillog
from mailmoat.config import Config
from mailmoat.errors import MailmoatError
from mailmoat.intake import ScannerRef
from mailmoat.listen import open_listener
from mailmoat.dkimsign import DkimSigner
from mailmoat.ml.delivered import DeliveredSampler, sample_path
from mailmoat.ml.learn import expire_lessons, model_dir
from mailmoat.ml.scoring import ContentSettings
from mailmoat.relay.deliver import DeliveryManager
from mailmoat.relay.routes import parse_hostport
from mailmoat.reputation_memory import ObservationFeed, SenderMemory
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner
from mailmoat.smtp.limits import ConnectionLimiter, make_limiter
from mailmoat.smtp.server import GatewayHandler, start_smtp_server
from mailmoat.smtp.tls import server_context
from mailmoat.spool.queue import Spool
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter, log_failure
from mailmoat.store.quarantine import purge_expired
from mailmoat.store.retention import purge_old_messages

MAX_PENDING_OBSERVATIONS = 10_000

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    config: Config
    db: Database
    log_writer: LogWriter
    spool: Spool
    scanner_ref: ScannerRef  # the scanner in force, shared by intake and delivery
    delivery: DeliveryManager
    handler: GatewayHandler
    limiter: ConnectionLimiter
    io_executor: concurrent.futures.ThreadPoolExecutor | None = None
    memory_feed: ObservationFeed | None = None
    internal_guard: Any = None  # mailmoat.internal.guard.InternalGuard; None: [internal] off
    policy_version: int | None = None  # the console's policy version in force; None: TOML
    live_config: Config | None = None  # `config` with that version merged in
    _policy_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _purge_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _recall_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _intel: Any = field(default=None, repr=False)  # intel.poller.IntelService
    _retired: list[Scanner] = field(default_factory=list, repr=False)
    smtp_server: asyncio.Server | None = None
    web_server: Any = None
    _web_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def scanner(self) -> Scanner:
        return self.scanner_ref.current  # type: ignore[no-any-return]

    @property
    def smtp_port(self) -> int:
        assert self.smtp_server is not None
        return int(self.smtp_server.sockets[0].getsockname()[1])

    async def start(self, sock: socket.socket | None = None, web: bool = True,
                    recover: bool = True) -> None:
        """`recover=False` in a child of a multi-process serve: the parent recovered the
        spool before forking, and a child must never take back a live sibling's active/."""
        if recover:
            recovered = await asyncio.to_thread(self.spool.recover)
            if recovered:
                log.warning("recovered %d message(s) left in delivery by a crash", recovered)
        await self.delivery.start()
        if self.internal_guard is not None:  # suspensions read back before the first MAIL
            await self.internal_guard.start()
        self.smtp_server = await start_smtp_server(
            self.config, self.handler, self.limiter, tls_context=server_context(self.config),
            sock=sock)
        log.info("SMTP listening on %s", ", ".join(
            str(s.getsockname()) for s in self.smtp_server.sockets))
        if web and self.config.web.enabled:
            await self._start_web()
        if self.config.policy.reload_interval > 0:
            self._policy_task = asyncio.create_task(self._watch_policy(), name="policy-reload")
        if web or recover:  # one housekeeper: a single process, or child 0 of a multi-process
            self._purge_task = asyncio.create_task(self._purge_loop(), name="retention")
            # "antivirus off: ..." once at start when no clamd answers: a probe with a short
            # timeout in a thread of its own, so a slow clamd delays nothing.
            from mailmoat.web.health import log_at_start

            threading.Thread(target=log_at_start, args=(self.config,), name="av-probe",
                             daemon=True).start()
            # Recall jobs (console, API, threat intelligence): mailbox work in threads.
            from mailmoat.recall.service import start_recall_worker

            self._recall_task = start_recall_worker(self.config, self.db)
            from mailmoat.intel.settings import intel_settings

            # Threat-intelligence feeds: polled, hunted and handed to the recall worker.
            if intel_settings(self.config).feeds:  # the feed readers load only when needed
                from mailmoat.intel.poller import IntelService

                self._intel = IntelService(self.config, self.db)
                self._intel.start()

    # -- retention -------------------------------------------------------------------------

    async def purge(self) -> tuple[int, int]:
        """Delete message-log rows older than `[storage] log_retention_days` and quarantined
        mail past its expiry, and take back lessons older than `[content]
        lesson_max_age_days` when set; returns (log rows, quarantined messages) deleted. The web
        console purges quarantine on its own schedule when it runs in this process, so the
        gateway then leaves quarantine to it (purging twice would be harmless, just extra
        work)."""
        rows = await asyncio.to_thread(purge_old_messages, self.db,
                                       self.config.storage.log_retention_days)
        held = 0
        if self.web_server is None:
            held = await asyncio.to_thread(purge_expired, self.config, self.db)
        if rows or held:
            log.info("retention: deleted %d message-log rows and %d quarantined messages",
                     rows, held)
        max_age = self.config.section("content", ContentSettings).lesson_max_age_days
        if max_age > 0:
            taken = await asyncio.to_thread(expire_lessons, self.config, max_age)
            if taken:
                log.info("retention: took back the lessons of %d message(s) older than %g days",
                         taken, max_age)
        return rows, held

    async def _purge_loop(self) -> None:
        every = self.config.storage.purge_interval_hours * 3600
        await asyncio.sleep(min(60.0, every))
        while True:
            try:
                await self.purge()
            except Exception:  # the next round tries again
                log.exception("retention purge failed")
            await asyncio.sleep(every)

    # -- live policy -----------------------------------------------------------------------

    async def reload_policy(self) -> bool:
        """Apply the newest policy version saved by the web console, if it changed.

        The TOML config with the document merged in (`web.policy_store`) gets a new Scanner,
        built in a thread because checks read their settings when they are built; it is
        then swapped in for new messages at once (one assignment each on the loop). Messages
        being scanned finish with the old one, which is closed a minute later. A document
        that fails to apply is logged and the policy in force stays. True when swapped."""
        from mailmoat.web.policy_store import (
            apply_policy_document,
            current_overrides,
            latest_version_id,
        )

        version = await asyncio.to_thread(latest_version_id, self.db)
        if version == self.policy_version:
            return False
        try:
            doc = await asyncio.to_thread(current_overrides, self.db)
            live = apply_policy_document(self.config, doc)
            scanner = await asyncio.to_thread(
                Scanner, BuildContext(config=live, network=live.scan.network, database=self.db,
                                      extras=_scan_extras(self.internal_guard)))
        except Exception:
            log.exception("policy version %s could not be applied; keeping version %s",
                          version, self.policy_version)
            self.policy_version = version  # not retried until a newer version is saved
            raise
        old = self.scanner
        self.scanner_ref.current = scanner
        self.live_config = live
        self.policy_version = version
        self._retired.append(old)
        asyncio.get_running_loop().call_later(60, self._close_retired, old)
        log.info("policy version %s in force", version)
        return True

    def _close_retired(self, scanner: Scanner) -> None:
        if scanner in self._retired:
            self._retired.remove(scanner)
            asyncio.ensure_future(scanner.close())

    async def _watch_policy(self) -> None:
        while True:
            await asyncio.sleep(self.config.policy.reload_interval)
            try:
                await self.reload_policy()
            except asyncio.CancelledError:
                raise
            except Exception:  # logged by reload_policy, or the database is away: next round
                log.debug("policy reload failed", exc_info=True)

    async def _start_web(self) -> None:
        try:
            from mailmoat.web.app import create_app  # type: ignore[attr-defined]
        except ImportError as exc:
            log.info("web console not available (%s); serving SMTP only", exc)
            return
        import uvicorn

        class _Server(uvicorn.Server):
            # Signals belong to `mailmoat serve`, which stops everything in order.
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[no-untyped-def]
                yield

        # Bound here, so an address in use stops the start with one line (ConfigError).
        sock = open_listener("[web] listen", self.config.web.listen)
        host, port = parse_hostport(self.config.web.listen)
        try:
            app = create_app(self.config, self.db, internal_guard=self.internal_guard)
        except Exception:  # the console is optional; mail keeps flowing without it
            log.exception("web console failed to start; serving SMTP only")
            sock.close()
            return
        server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                        lifespan="auto"))

        async def serve_web() -> None:
            try:
                await server.serve(sockets=[sock])
            except (Exception, SystemExit):  # uvicorn exits the process on bind errors
                log.exception("web console stopped; SMTP and delivery carry on")

        self.web_server = server
        self._web_task = asyncio.create_task(serve_web(), name="web")
        log.info("web console on http://%s:%d", host, port)

    async def stop(self) -> None:
        if self._intel is not None:
            await self._intel.close()
        for task in (self._policy_task, self._purge_task, self._recall_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.smtp_server is not None:
            self.smtp_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.smtp_server.wait_closed(), 5)
        if self.web_server is not None and self._web_task is not None:
            self.web_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._web_task, 10)
        await self.delivery.stop()
        if self.internal_guard is not None:
            with contextlib.suppress(Exception):
                await self.internal_guard.close()
        for scanner in [self.scanner, *self._retired]:
            with contextlib.suppress(Exception):
                await scanner.close()
        self._retired.clear()
        with contextlib.suppress(Exception):
            await self.limiter.close()
        await asyncio.to_thread(self.log_writer.close)
        if self.io_executor is not None:
            self.io_executor.shutdown(wait=True)
        if self.memory_feed is not None:
            await asyncio.to_thread(self.memory_feed.close)
        self.db.dispose()


def build(config: Config) -> Gateway:
    """Create every part from one config; no sockets are opened yet."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    maillog.set_format(config.log.format)
    db = Database(config.database_url)
    db.create_schema()
    writer = LogWriter(db)
    spool = Spool(config.data_dir / "spool")
    version, live = _saved_policy(config, db)
    guard = _internal_guard(config, db)
    scanner = ScannerRef(Scanner(BuildContext(config=live, network=live.scan.network,
                                              database=db, extras=_scan_extras(guard))))
    # fsync waits on the disk, not the CPU; enough threads let concurrent messages share
    # one journal commit (measured: 40 puts/s with one thread, 330/s with eight).
    io = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="mailmoat-spool")
    delivery = DeliveryManager(config, spool, db=db, log_writer=writer, scanner=scanner,
                               signer=DkimSigner.from_config(config), io_executor=io)

    def rejected(data: dict[str, Any]) -> None:
        log_failure(writer.log_message(data), log, f"logging rejected message {data['id']}")

    memory_feed = _sender_memory_feed(config, db)
    handler = GatewayHandler(config, scanner, spool, on_spooled=delivery.wake,
                             on_rejected=rejected, io_executor=io, spool_state="active",
                             on_verdict=_verdict_hook(config, memory_feed),
                             backlog_full=delivery.backlog_full, internal_guard=guard)
    limiter = make_limiter(config.smtp.max_connections_per_ip, config.redis.url,
                           config.redis.key_prefix)
    return Gateway(config=config, db=db, log_writer=writer, spool=spool, scanner_ref=scanner,
                   delivery=delivery, handler=handler, limiter=limiter, io_executor=io,
                   memory_feed=memory_feed, policy_version=version,
                   live_config=live, internal_guard=guard)


def _internal_guard(config: Config, db: Database) -> Any:
    """The account guard of `[internal]` (one per process: the SMTP intake asks it at MAIL
    and DATA, the scanner's `internal` check at every internal and outbound message), or
    None when the feature is off."""
    from mailmoat.internal.guard import InternalGuard
    from mailmoat.internal.settings import InternalSettings

    if not config.section("internal", InternalSettings).enabled:
        return None
    return InternalGuard(config, db)


def _scan_extras(guard: Any) -> dict[str, Any]:
    """What the checks get beyond the config: the process's account guard, so a scanner
    rebuilt for a new policy keeps judging accounts with what was learned."""
    return {"internal_guard": guard} if guard is not None else {}


def _saved_policy(config: Config, db: Database) -> tuple[int | None, Config]:
    """The newest policy version the web console saved, merged into the TOML config, so a
    restart keeps the console's policy; the TOML alone when there is none or it is bad."""
    from mailmoat.web.policy_store import (
        apply_policy_document,
        current_overrides,
        latest_version_id,
    )

    version = latest_version_id(db)
    if version is None:
        return None, config
    try:
        return version, apply_policy_document(config, current_overrides(db))
    except Exception:
        log.exception("saved policy version %s could not be applied; using the TOML policy",
                      version)
        return version, config


def _sender_memory_feed(config: Config, db: Database) -> ObservationFeed | None:
    """What feeds the sender memory (`reputation_memory`) after each verdict, on its own
    thread and in batches, or None when the memory is off."""
    from mailmoat.scan.reputation import ReputationSettings

    settings = config.section("reputation", ReputationSettings)
    if not (settings.enabled and settings.memory):
        return None
    return ObservationFeed(SenderMemory(db), max_pending=MAX_PENDING_OBSERVATIONS)


def _verdict_hook(config: Config,
                  memory_feed: ObservationFeed | None) -> Callable[[Any], None] | None:
    """What the SMTP intake tells about each judged message: the sender memory, and the
    delivered-mail sample that spam reports learn against (mailmoat.ml.delivered). Each
    listener fails alone; none is in the way of the reply."""
    hooks: list[Callable[[Any], object]] = []
    if memory_feed is not None:
        hooks.append(memory_feed.offer_outcome)
    content = config.section("content", ContentSettings)
    if content.enabled and content.delivered_sample_rate > 0:
        hooks.append(DeliveredSampler(sample_path(model_dir(config)),
                                      content.delivered_sample_rate).offer_outcome)
    if not hooks:
        return None

    def hook(outcome: Any) -> None:
        for h in hooks:
            try:
                h(outcome)
            except Exception:
                log.exception("verdict listener %s failed", getattr(h, "__qualname__", h))
    return hook


async def run(config: Config, stop: asyncio.Event | None = None,
              sock: socket.socket | None = None, child: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down in order.

    `child` is set in the processes of a multi-process serve (`serve_processes`): they
    accept on the inherited `sock`, skip spool recovery, and only child 0 runs the web
    console."""
    stop = stop or asyncio.Event()
    # The loop's socket calls release the GIL; the log-writer and spool threads then hold
    # it for up to the switch interval (5 ms by default) before the loop gets it back, a
    # GIL convoy. 0.5 ms measured 64/59/66 → 94/66/70 msg/s in three paired runs of
    # bench/throughput.py at 32 connections.
    sys.setswitchinterval(float(os.environ.get("MAILMOAT_SWITCH_INTERVAL", "0.0005")))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    gateway = build(config)
    try:
        await gateway.start(sock=sock, web=child in (None, 0), recover=child is None)
    except BaseException:  # e.g. [smtp] listen in use: close what did start, then report
        await gateway.stop()
        raise
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await gateway.stop()


def process_count(config: Config) -> int:
    n = config.smtp.processes
    return n if n > 0 else (os.cpu_count() or 1)


def serve_processes(config: Config, n: int) -> int:
    """Run `n` gateway processes on one listening socket and one spool; return an exit code.

    The parent does, once, what the children would race on: the database schema, spool
    recovery (moving a crashed run's active/ back to incoming/; a child never does this, so
    it cannot take a live sibling's message), the self-signed certificate, and the
    listening socket, which every child inherits and accepts on (the kernel spreads the
    connections). Each child runs intake and delivery; a claim is a rename, so each
    spooled message is delivered by exactly one of them. SIGTERM/SIGINT go to every child.
    If a child dies on its own, the others are stopped too and the exit code is 1: its
    active/ messages come back with the next start's recovery, never by a sibling.
    """
    db = Database(config.database_url)
    db.create_schema()
    db.dispose()
    recovered = Spool(config.data_dir / "spool").recover()
    if recovered:
        log.warning("recovered %d message(s) left in delivery by a crash", recovered)
    server_context(config)  # creates the self-signed certificate once, if needed
    sock = open_listener("[smtp] listen", config.smtp.listen)
    children: dict[int, int] = {}
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's cleanup
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                asyncio.run(run(config, sock=sock, child=i))
            except MailmoatError as exc:  # e.g. [web] listen in use: one line
                log.error("gateway process %d: %s", i, exc)
                code = 1
            except BaseException:
                log.exception("gateway process %d failed", i)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = i
    sock.close()
    log.info("serving with %d processes: %s", n, sorted(children))
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        i = children.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0 or not stopping:
            code = 1
            if not stopping:
                log.error("gateway process %d (pid %d) exited with %s; stopping the others",
                          i, pid, rc)
                forward(signal.SIGTERM, None)
    return code
