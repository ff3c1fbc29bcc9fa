"""`mailmoat scan`: judge stored mail offline, exactly as the gateway would, without a server.

    mailmoat scan [--config FILE] PATH... [--format json|text] [--network] [--workers N]

PATH may be an `.eml` file, an mbox file (recognised by its first line starting "From "), or a
directory, which is walked recursively (hidden files skipped, every other file read as one
message or mbox). One result per message on stdout, in input order; mbox messages are named
`file.mbox#N` with N counting from 1. The same `Scanner` as the SMTP intake does the work,
with network look-ups off unless `--network` is given.

Exit codes: 0 when every message was scanned (whatever the verdicts), 1 when some message
could not be read or scanned (each is named on stderr, the others are still scanned), 2 for a
usage error: a missing path or an invalid config, reported before anything is scanned.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import mailbox
import multiprocessing
import os
import re
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mailmoat.config import Config, load_config
from mailmoat.errors import ConfigError
from mailmoat.message.model import Direction, Envelope, domain_of

__all__ = ["ScanItem", "collect", "envelope_for", "register", "scan_items"]

OUTPUT_KEYS = ("path", "action", "score", "category", "bulk_level", "symbols")


@dataclass(frozen=True)
class ScanItem:
    """One message to scan: how to name it, and where its bytes are."""

    display: str  # "dir/a.eml" or "box.mbox#3"
    path: Path
    mbox_key: str | None = None  # key in mailbox.mbox, for messages inside an mbox


def is_mbox(path: Path) -> bool:
    """An mbox starts with a "From " line; an .eml file is one message even when it does."""
    if path.suffix.lower() == ".eml":
        return False
    try:
        with path.open("rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False


def _files_under(directory: Path) -> Iterator[Path]:
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file():
            yield p


def collect(paths: Iterable[Path]) -> list[ScanItem]:
    """Every message under `paths`, in a stable order. Raises FileNotFoundError first."""
    paths = list(paths)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    items: list[ScanItem] = []
    for p in paths:
        for f in _files_under(p) if p.is_dir() else [p]:
            if is_mbox(f):
                box = mailbox.mbox(f, create=False)
                try:
                    keys = list(box.keys())
                finally:
                    box.close()
                items += [ScanItem(f"{f}#{i}", f, str(k)) for i, k in enumerate(keys, 1)]
            else:
                items.append(ScanItem(str(f), f))
    return items


class _Reader:
    """Reads each item's bytes, keeping the current mbox open between its messages."""

    def __init__(self) -> None:
        self._box: tuple[Path, mailbox.mbox] | None = None

    def read(self, item: ScanItem) -> bytes:
        if item.mbox_key is None:
            return item.path.read_bytes()
        if self._box is None or self._box[0] != item.path:
            self.close()
            self._box = (item.path, mailbox.mbox(item.path, create=False))
        # typeshed types every mailbox key as str; mbox keys are ints (a str raises KeyError).
        return self._box[1].get_bytes(int(item.mbox_key))  # type: ignore[arg-type]

    def close(self) -> None:
        if self._box is not None:
            self._box[1].close()
            self._box = None


_RECEIVED_IP = re.compile(rb"\[(?:IPv6:)?([0-9a-fA-F:.]+)\]")
_REPORT = re.compile(r"multipart/report\b.*\breport-type\s*=\s*\"?(?:delivery-status|"
                     r"disposition-notification)\b", re.I | re.S)
# The null sender as MTAs record it in Return-Path (see envelope_for).
_NULL_SENDER = re.compile(r"|mailer-daemon|#@\[\]", re.I)
_HEADER_VALUE = r"(?im)^{name}[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)"


def _header(raw_headers: bytes, name: str) -> str:
    m = re.search(_HEADER_VALUE.format(name=re.escape(name)).encode(), raw_headers)
    return m.group(1).decode("ascii", "replace") if m else ""


def envelope_for(raw: bytes, config: Config) -> Envelope:
    """Stored mail has no SMTP envelope: rebuild the parts its headers record.

    The envelope sender is Return-Path (else From); the client IP is the bracketed address
    in the topmost Received header, which the last receiving MTA wrote; the direction is
    outbound when the sender's domain is one of ours. A delivery status report or read
    receipt (`multipart/report`) stored without Return-Path came from the null sender: RFC
    5321 section 4.5.5 and RFC 3464 require it of bounces (RFC 8098 of read receipts), and its
    From is the reporting MTA's mailbox, never the envelope's. The null sender, as delivering
    MTAs record it in Return-Path, is "<>", "<MAILER-DAEMON>" (Sendmail, Exchange) or
    "<#@[]>" (qmail): a mailbox without a domain, never a sender to judge.
    """
    import email.utils

    head = raw[: min(len(raw), 256 * 1024)].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    return_path = _header(head, "Return-Path")
    if not return_path and _REPORT.search(_header(head, "Content-Type")):
        sender = ""
    elif return_path and _NULL_SENDER.fullmatch(email.utils.parseaddr(return_path)[1]):
        sender = ""
    else:
        sender = email.utils.parseaddr(return_path or _header(head, "From"))[1]
    received = _header(head, "Received").encode()
    m = _RECEIVED_IP.search(received)
    direction = Direction.INBOUND
    if sender and domain_of(sender) in config.internal_domains:
        direction = Direction.OUTBOUND
    return Envelope(
        mail_from=sender.lower(),
        rcpt_tos=(),
        client_ip=m.group(1).decode() if m else None,
        direction=direction,
    )


# --- one scanner per process ---------------------------------------------------------------

_worker: dict[str, Any] = {}

# Variables that size the thread pools of OpenMP, OpenBLAS and MKL when they load: a pool
# worker sets them to 1 before building its scanner (the processes are the parallelism).
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(config: Config, network: bool) -> None:
    """Build the scanner (models, lists) once per process."""
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner

    _worker["loop"] = asyncio.new_event_loop()
    _worker["config"] = config
    _worker["scanner"] = Scanner(BuildContext(config=config, network=network))


def _init_pool_worker(config: Config, network: bool) -> None:
    """Process-pool initializer (a fresh, spawned process).

    One thread per library: N workers each running BLAS, OpenMP or onnxruntime on every core
    oversubscribe the machine. A config a family refuses is kept and raised with the first
    batch, so the parent reports it (exit 2) instead of seeing a broken pool.
    """
    for var in _THREAD_ENV:
        os.environ[var] = "1"
    from threadpoolctl import threadpool_limits

    from mailmoat.ml.deep import engine

    _worker["thread_limits"] = threadpool_limits(limits=1)  # libraries already loaded
    engine.set_max_threads(1)
    _worker["reader"] = _Reader()
    try:
        _init_worker(config, network)
    except ConfigError as exc:
        _worker["error"] = exc


def _close_worker() -> None:
    if "scanner" in _worker:
        _worker["loop"].run_until_complete(_worker["scanner"].close())
        _worker["loop"].close()
        _worker.clear()


def _scan_one(display: str, raw: bytes) -> dict[str, Any]:
    scanner = _worker["scanner"]
    try:
        env = envelope_for(raw, _worker["config"])
        outcome = _worker["loop"].run_until_complete(scanner.scan(raw, env))
    except Exception as exc:  # a scanner bug: report this message, go on with the others
        return {"path": display, "error": f"scan failed: {type(exc).__name__}: {exc}"}
    d = outcome.as_dict()
    d["path"] = display
    return {k: d[k] for k in OUTPUT_KEYS if k in d}


def _scan_batch(items: list[ScanItem]) -> list[dict[str, Any]]:
    """In a pool worker: read and scan a run of messages (paths in, result dicts out)."""
    if "error" in _worker:
        raise _worker["error"]
    reader: _Reader = _worker["reader"]
    out: list[dict[str, Any]] = []
    for item in items:
        try:
            raw = reader.read(item)
        except (OSError, KeyError, ValueError, mailbox.Error) as exc:
            out.append(_error(item.display, exc))
            continue
        out.append(_scan_one(item.display, raw))
    return out


def _error(display: str, exc: Exception) -> dict[str, Any]:
    return {"path": display, "error": f"{type(exc).__name__}: {exc}"}


def scan_items(
    items: list[ScanItem], config: Config, *, network: bool = False, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Results in input order. An item that cannot be read or scanned yields {"path", "error"}.

    With `workers` > 1, that many spawned processes each build their own scanner and read
    and scan batches of messages; a config a family refuses raises ConfigError here.
    """
    if workers <= 1:
        reader = _Reader()
        _init_worker(config, network)
        try:
            for item in items:
                try:
                    raw = reader.read(item)
                except (OSError, KeyError, ValueError, mailbox.Error) as exc:
                    yield _error(item.display, exc)
                    continue
                yield _scan_one(item.display, raw)
        finally:
            _close_worker()
            reader.close()
        return
    # Workers get paths, not bytes, and send results back a batch at a time: per-message
    # hand-over (pickling, pipes, wake-ups) costs about as much as a small scan. Small
    # inputs get small batches, so every worker has some. A bounded window of batches in
    # flight keeps memory flat on big mailboxes while every worker stays busy; results come
    # back in submission order.
    #
    # "spawn", not fork: a forked child inherits the parent's threads as dead objects (tier
    # 2's single model thread among them: every deep-scored message then waits out its
    # budget and gets DEEP_FAIL) and the thread pools of BLAS and onnxruntime sized for the
    # whole machine.
    size = max(1, min(32, len(items) // (workers * 16)))
    batches = (items[i:i + size] for i in range(0, len(items), size))
    window = workers * 3
    pending: collections.deque[Future[list[dict[str, Any]]]] = collections.deque()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_pool_worker,
        initargs=(config, network),
    ) as pool:
        try:
            while True:
                while len(pending) < window:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    pending.append(pool.submit(_scan_batch, batch))
                if not pending:
                    break
                yield from pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def format_text(r: dict[str, Any]) -> str:
    """The verdict on one line (symbols and scores, for grep), then each symbol's reason on
    an indented line of its own, strongest first."""
    if "error" in r:
        return f"{r['path']}: ERROR {r['error']}"
    syms = " ".join(f"{s['name']}({s['score']:g})" for s in r["symbols"])
    head = f"{r['path']}: {r['action']} score={r['score']:g} category={r['category']} {syms}".rstrip()
    reasons = [f"    {s['name']} {s['score']:+g}: {' '.join(str(s.get('reason') or '').split())}".rstrip(": ")
               for s in r["symbols"]]
    return "\n".join([head, *reasons])


def register(app: typer.Typer) -> None:
    @app.command()
    def scan(
        paths: Annotated[list[Path], typer.Argument(help=".eml files, mbox files or directories")],
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="TOML config file")
        ] = None,
        format: Annotated[
            str, typer.Option("--format", "-f", help="json (one object per line) or text")
        ] = "json",
        network: Annotated[
            bool, typer.Option("--network", help="allow DNS and other look-ups")
        ] = False,
        workers: Annotated[
            int, typer.Option("--workers", "-w", min=1, help="scanner processes")
        ] = 1,
    ) -> None:
        """Scan stored mail offline and print one verdict per message."""
        if format not in ("json", "text"):
            typer.echo(f"error: --format must be json or text, not {format!r}", err=True)
            raise typer.Exit(2)
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            items = collect(paths)
        except FileNotFoundError as exc:
            typer.echo(f"error: no such file or directory: {exc}", err=True)
            raise typer.Exit(2) from None
        except (OSError, mailbox.Error) as exc:
            typer.echo(f"error: cannot read input: {exc}", err=True)
            raise typer.Exit(2) from None

        failed = 0
        progress = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            progress = Progress(console=Console(stderr=True), transient=True)
            progress.start()
            task = progress.add_task("scanning", total=len(items))
        try:
            results = scan_items(items, cfg, network=network, workers=workers)
            try:
                first = next(results, None)
            except ConfigError as exc:  # a family refused its config while being built
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            for r in itertools.chain([first] if first is not None else [], results):
                if "error" in r:
                    failed += 1
                    typer.echo(f"error: {r['path']}: {r['error']}", err=True)
                else:
                    typer.echo(
                        json.dumps(r, ensure_ascii=False) if format == "json" else format_text(r)
                    )
                if progress is not None:
                    progress.advance(task)
        finally:
            if progress is not None:
                progress.stop()
        raise typer.Exit(1 if failed else 0)
