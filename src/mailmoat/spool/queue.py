"""The durable spool: directories with a lifecycle, never pickle.

A message is two files: `<id>.eml` (the exact bytes) and `<id>.json` (envelope and state,
versioned). Writing goes tmp → fsync → rename → fsync(dir), so after `put()` returns the
message survives a crash or power loss; only then does SMTP answer 250. The directory
fsync is group-committed: concurrent puts share one, each waiting for an fsync that
began after its own renames.

    incoming/  accepted, not yet claimed by a delivery worker
    active/    claimed by a worker (renamed there, so two workers never take one file),
               or written there directly by the intake of the process that delivers it
    deferred/  waiting for a retry; `next_attempt` in the sidecar says when
    done/      delivered, bounced or handed to quarantine (kept briefly for tracing)
    shunt/     a bug hit this message: kept for an administrator, never dropped

On start, anything left in active/ (a crash mid-delivery) goes back to incoming/.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mailmoat.errors import SpoolError

STATES = ("incoming", "active", "deferred", "done", "shunt")
SIDECAR_VERSION = 1


class _RandomPool:
    """os.urandom in 4 KiB reads: the getrandom() call costs ~0.3 ms on a busy VM, and the
    intake takes one id per message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""

    def hex(self, nbytes: int) -> str:
        with self._lock:
            if len(self._buf) < nbytes:
                self._buf = os.urandom(4096)
            out, self._buf = self._buf[:nbytes], self._buf[nbytes:]
        return out.hex()


_random = _RandomPool()
# A forked `mailmoat serve` child must not reuse random bytes its parent had buffered.
os.register_at_fork(after_in_child=lambda: setattr(_random, "_buf", b""))
_tmp_counter = itertools.count()


def new_message_id() -> str:
    """Unique, sortable by time, unguessable: 11 hex digits of ms time + 16 random hex."""
    return f"{int(time.time() * 1000):011x}{_random.hex(8)}"


@dataclass
class Handover:
    """What intake (or a quarantine release, or a DSN) tells delivery about a spooled
    message besides its envelope: the verdict's plan, the message-log row, what decides
    about bounces.

    The sidecar stores it under "extra" with these field names, writing only the fields
    that differ from their defaults; a sidecar of an older version reads the same way, the
    fields it lacks taking their defaults (`from_json`).
    """

    # recipient -> "deliver" | "quarantine"; a recipient not named is delivered
    plan: dict[str, str] = field(default_factory=dict)
    # The message-log row (`store.log.message_log_data`); delivery writes it, once.
    log: dict[str, Any] | None = None
    logged: bool = False  # that row is in the database
    received: str = ""  # our Received value, for the headers a late scan adds
    # The sender failed SPF/DMARC (`relay.dsn.sender_auth_failed`), so no DSN goes to it.
    # None: not recorded (unscanned mail, or an entry spooled before the field existed).
    sender_auth_failed: bool | None = None
    dsn: bool = False  # a delivery status notification the gateway generated
    dsn_for: str = ""  # the spool id of the message it reports on
    mailmoat_id: str = ""  # the message-log id when it is not the spool id (a release)
    released_from: str = ""  # a quarantine release: the held message's id
    released_by: str = ""  # who released it

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != _HANDOVER_DEFAULTS[f.name]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Handover:
        # Keys no version of the record has (e.g. "tls", written once and never read)
        # are dropped.
        return cls(**{k: v for k, v in data.items() if k in _HANDOVER_DEFAULTS})


_HANDOVER_DEFAULTS: dict[str, Any] = {f.name: getattr(Handover(), f.name)
                                      for f in fields(Handover)}


@dataclass
class SpoolEntry:
    """The sidecar: what the delivery worker needs besides the bytes."""

    id: str
    mail_from: str
    rcpt_tos: list[str]
    received_at: float
    client_ip: str = ""
    helo: str = ""
    auth_user: str = ""
    direction: str = "inbound"
    # Recipients still to deliver (the others are done, bounced or held).
    pending: list[str] = field(default_factory=list)
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    scanned: bool = False  # True when the bytes already carry our verdict headers
    handover: Handover = field(default_factory=Handover)  # stored as "extra"
    version: int = SIDECAR_VERSION

    def to_json(self) -> bytes:
        # Shallow: `dataclasses.asdict` deep-copies the nested log data first, for nothing.
        data = {f: getattr(self, f) for f in _ENTRY_FIELDS}
        data["extra"] = self.handover.to_json()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpoolEntry:
        known = {k: v for k, v in data.items() if k in _ENTRY_FIELDS}
        return cls(**known, handover=Handover.from_json(data.get("extra") or {}))


_ENTRY_FIELDS = tuple(f.name for f in fields(SpoolEntry) if f.name != "handover")


class _GroupDirSync:
    """Group commit for directory fsyncs: a caller returns once an fsync of the directory
    that *started after* its call has finished. Concurrent puts into one directory (one
    per SMTP connection) then share a single fsync instead of queueing one each; every
    caller still waits for an fsync that covers its own renames."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asked: dict[Path, int] = {}
        self._synced: dict[Path, int] = {}
        self._busy: set[Path] = set()
        self.fsyncs = 0  # how many were really issued (for tests and the bench)

    def sync(self, path: Path) -> None:
        with self._cond:
            ticket = self._asked[path] = self._asked.get(path, 0) + 1
            while True:
                if self._synced.get(path, 0) >= ticket:
                    return
                if path not in self._busy:
                    break
                self._cond.wait()
            self._busy.add(path)
            covers = self._asked[path]  # every ticket issued before this fsync starts
        try:
            _fsync_dir(path)
            self.fsyncs += 1
        except BaseException:
            with self._cond:
                self._busy.discard(path)
                self._cond.notify_all()  # a waiter takes over and tries again
            raise
        with self._cond:
            self._busy.discard(path)
            self._synced[path] = max(self._synced.get(path, 0), covers)
            self._cond.notify_all()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes) -> tuple[Path, int]:
    """Write `data` to a fresh temporary file beside `path`; returns it and its open fd."""
    # Unique across threads (counter) and processes (pid); it need not be unguessable.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{next(_tmp_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except BaseException:
        os.close(fd)
        raise
    return tmp, fd


def _write_durably(path: Path, data: bytes, sync: bool = True) -> None:
    tmp, fd = _write_tmp(path, data)
    try:
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _write_pair_durably(first: tuple[Path, bytes], second: tuple[Path, bytes]) -> None:
    """Two files made durable together, then renamed into place in order (`first` first).

    Both are written before either is synced: on a journaling file system the first fsync
    then usually commits both files' blocks in one journal transaction and the second
    finds little left to do, instead of two commits per message."""
    written: list[tuple[Path, int]] = []
    try:
        for path, data in (first, second):
            written.append(_write_tmp(path, data))
        for _, fd in reversed(written):
            os.fsync(fd)
    finally:
        for _, fd in written:
            os.close(fd)
    os.rename(written[0][0], first[0])
    os.rename(written[1][0], second[0])


class Spool:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)
        self.dir_sync = _GroupDirSync()

    def dir(self, state: str) -> Path:
        return self.root / state

    def put(self, entry: SpoolEntry, raw: bytes, state: str = "incoming") -> str:
        """Write a message durably into `state`. Returns its id. Raises SpoolError."""
        if not entry.pending:
            entry.pending = list(entry.rcpt_tos)
        d = self.dir(state)
        try:
            # Bytes first, sidecar last: a sidecar without its .eml never exists.
            _write_pair_durably((d / f"{entry.id}.eml", raw),
                                (d / f"{entry.id}.json", entry.to_json()))
            self.dir_sync.sync(d)
        except OSError as exc:
            raise SpoolError(f"cannot spool message {entry.id}: {exc}") from exc
        return entry.id

    def read(self, state: str, msg_id: str) -> tuple[SpoolEntry, bytes]:
        d = self.dir(state)
        entry = SpoolEntry.from_json(json.loads((d / f"{msg_id}.json").read_text()))
        return entry, (d / f"{msg_id}.eml").read_bytes()

    def update(self, state: str, entry: SpoolEntry, sync: bool = True) -> None:
        """Rewrite the sidecar atomically; `sync=False` skips fsync where losing the update
        to a power cut only repeats work (never loses mail)."""
        d = self.dir(state)
        _write_durably(d / f"{entry.id}.json", entry.to_json(), sync)

    def move(self, msg_id: str, src: str, dst: str, sync: bool = True) -> bool:
        """Atomically move a message between states; False if another worker took it.

        `sync=False` skips the directory fsync: right for a worker's claim (a lost rename
        leaves the message in incoming/, where it is delivered anyway) and for done/ (a
        lost rename means a repeat delivery, never a lost one)."""
        s, d = self.dir(src), self.dir(dst)
        try:
            os.rename(s / f"{msg_id}.json", d / f"{msg_id}.json")  # the claim
        except FileNotFoundError:
            return False
        try:
            os.rename(s / f"{msg_id}.eml", d / f"{msg_id}.eml")
        except FileNotFoundError:
            # An earlier move of this message was cut short after its sidecar moved
            # (see recover()); the bytes are wherever that left them.
            if not self._reunite(msg_id, dst):
                raise SpoolError(f"message {msg_id}: bytes missing from the spool") from None
        if sync:
            self.dir_sync.sync(d)
        return True

    def claim(self, msg_id: str) -> tuple[SpoolEntry, bytes] | None:
        """incoming/ → active/ and read it, for a delivery worker; None if taken."""
        if not self.move(msg_id, "incoming", "active", sync=False):
            return None
        return self.read("active", msg_id)

    def ids(self, state: str) -> list[str]:
        """Ids in a state, oldest first (ids sort by time)."""
        return sorted(p.stem for p in self.dir(state).glob("*.json"))

    def _reunite(self, msg_id: str, state: str) -> bool:
        """Bring a message's .eml next to its sidecar in `state`, from wherever an
        interrupted move left it. False when the bytes exist nowhere."""
        target = self.dir(state) / f"{msg_id}.eml"
        if target.exists():
            return True
        for other in STATES:
            src = self.dir(other) / f"{msg_id}.eml"
            if other != state and src.exists():
                os.rename(src, target)
                return True
        return False

    def recover(self) -> int:
        """After a crash: messages left in active/ go back to incoming/. Returns how many.

        A move renames the sidecar, then the bytes; a crash in between leaves the two in
        different states, so halves are reunited (next to the sidecar) before anything
        else. Only then is a .eml with no sidecar anywhere removed: put() writes the
        bytes before the sidecar, so such a file was never acknowledged with 250."""
        sidecars = {p.stem: state for state in STATES for p in self.dir(state).glob("*.json")}
        for state in STATES:
            for eml in self.dir(state).glob("*.eml"):
                home = sidecars.get(eml.stem)
                if home is None:
                    eml.unlink(missing_ok=True)
                elif home != state:
                    os.rename(eml, self.dir(home) / eml.name)
            for tmp in self.dir(state).glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        n = 0
        for msg_id in self.ids("active"):
            if self.move(msg_id, "active", "incoming"):
                n += 1
        for state in STATES:
            _fsync_dir(self.dir(state))
        return n
