"""The one interface every mailbox connector offers, and what is common to all of them.

A connector opens one recipient's mailbox (`Connector.mailbox`) as a `Mailbox` with four
primitives: find every copy of a message, move copies to the recall folder, move a recalled
copy back, and delete a recalled copy. `recall`, `restore` and `delete` here put the
primitives together into per-recipient outcomes (moved, restored, not_found, failed with a
reason), with retries and backoff on temporary errors and at most `max_connections`
mailboxes open at once per connector. All of it is blocking: callers run it in threads,
never on the SMTP event loop.

What a recall moved is returned as `Moved` entries (the folder each copy came from, and the
handle of the copy in the recall folder), and the job store keeps them: a restore moves back
exactly those, so it never touches a copy the recall did not move. Before a move the
caller is told what is about to move (`remember`), so a crash between the server's move and
the job store's write is recognised on the next run: the copies then sit in the recall
folder unclaimed, and are adopted instead of being reported as recalled by someone else.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

__all__ = [
    "STATUSES",
    "Connector",
    "Copy",
    "Mailbox",
    "MailboxError",
    "Moved",
    "Outcome",
    "Status",
    "Target",
    "TemporaryError",
]

log = logging.getLogger(__name__)

Status = Literal["moved", "restored", "not_found", "failed", "deleted"]
STATUSES: Final[tuple[Status, ...]] = ("moved", "restored", "not_found", "failed", "deleted")
T = TypeVar("T")


class MailboxError(Exception):
    """A failure of one mailbox that retrying will not mend (login refused, no such
    mailbox, permission denied): the item fails with this text as its reason."""


class TemporaryError(MailboxError):
    """A failure worth retrying (network, timeout, 429, 5xx); `retry_after` is the server's
    own wait, in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Target:
    """One delivered copy to act on."""

    mailmoat_id: str  # the X-Mailmoat-ID header the gateway added
    message_id: str  # the Message-ID header, without <>
    recipient: str


@dataclass(frozen=True, slots=True)
class Copy:
    """A copy of the message found in a mailbox: its folder (name or id), a handle the
    connector can act on, and whether it already sits in the recall folder."""

    folder: str
    handle: str
    in_recall: bool = False


@dataclass(slots=True)
class Moved:
    """A copy a recall moved: where it was, and its handle in the recall folder (empty
    while the move is under way)."""

    folder: str
    handle: str = ""
    restored: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"folder": self.folder, "handle": self.handle, "restored": self.restored}

    @classmethod
    def of(cls, d: dict[str, object]) -> Moved:
        return cls(str(d.get("folder", "")), str(d.get("handle", "")), bool(d.get("restored")))


@dataclass(slots=True)
class Outcome:
    status: Status
    detail: str = ""
    moved: list[Moved] = field(default_factory=list)
    attempts: int = 1


class Mailbox(ABC):
    """One recipient's mailbox, open for the duration of a `with connector.mailbox(...)`."""

    @abstractmethod
    def find(self, target: Target) -> list[Copy]:
        """Every copy of the message in the mailbox, in every folder, the recall folder's
        copies marked `in_recall`."""

    @abstractmethod
    def move_to_recall(self, copies: list[Copy]) -> list[str]:
        """Move these copies (none in the recall folder) to the recall folder, creating it
        when missing; their handles there, in the same order."""

    @abstractmethod
    def restore(self, target: Target, moved: Moved) -> bool:
        """Move a recalled copy back to `moved.folder` (re-created when the user deleted
        it); False when it is no longer in the recall folder."""

    def delete(self, target: Target, moved: Moved) -> bool:
        """Delete a recalled copy for good (only ever from the recall folder); False when
        it is no longer there."""
        raise MailboxError(f"{type(self).__name__} cannot delete")


class Connector(ABC):
    """A mailbox system: builds `Mailbox`es, limits how many are open, retries."""

    name: str = ""

    def __init__(self, *, max_connections: int = 4, retries: int = 3, backoff: float = 1.0,
                 user_format: str = "{address}",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.max_connections = max_connections
        self.retries = retries
        self.backoff = backoff
        self.user_format = user_format
        self._slots = threading.BoundedSemaphore(max_connections)
        self._sleep = sleep

    def user(self, recipient: str) -> str:
        local, _, domain = recipient.rpartition("@")
        return self.user_format.format(address=recipient, local=local or recipient,
                                       domain=domain)

    @abstractmethod
    def open(self, user: str) -> contextlib.AbstractContextManager[Mailbox]:
        """The mailbox of `user` (already mapped by `user_format`)."""

    @contextlib.contextmanager
    def mailbox(self, recipient: str) -> Iterator[Mailbox]:
        with self._slots, self.open(self.user(recipient)) as box:
            yield box

    def close(self) -> None:
        """Let go of shared resources (HTTP clients); the connector is not used after."""

    # -- the operations, with retries -----------------------------------------------------

    def _retrying(self, what: str, fn: Callable[[], T]) -> tuple[T, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), attempt
            except TemporaryError as exc:
                if attempt > self.retries:
                    raise MailboxError(f"{exc} (gave up after {attempt} tries)") from exc
                wait = exc.retry_after if exc.retry_after is not None else \
                    self.backoff * 2 ** (attempt - 1)
                log.info("%s: %s; retrying in %.1fs", what, exc, wait)
                self._sleep(min(wait, 300.0))

    def recall(self, target: Target, previous: list[Moved] | None = None,
               remember: Callable[[list[Moved]], None] | None = None) -> Outcome:
        """Move every copy of `target` outside the recall folder into it.

        `previous`: what an earlier run of the same item recorded (resuming after a crash);
        its entries without a handle are copies whose move may have happened: recall-folder
        copies not accounted for are adopted as theirs. `remember` is called with the full
        list before anything moves, so the caller can store it first."""
        prev = list(previous or [])

        def run() -> Outcome:
            with self.mailbox(target.recipient) as box:
                copies = box.find(target)
                in_recall = [c for c in copies if c.in_recall]
                outside = [c for c in copies if not c.in_recall]
                known = {m.handle for m in prev if m.handle}
                spare = [c.handle for c in in_recall if c.handle not in known]
                done = [m for m in prev if m.handle]
                for m in prev:
                    if not m.handle and spare:  # moved just before a crash
                        done.append(Moved(m.folder, spare.pop(0)))
                if outside:
                    planned = done + [Moved(c.folder) for c in outside]
                    if remember is not None:
                        remember(planned)
                    handles = box.move_to_recall(outside)
                    done += [Moved(c.folder, h) for c, h in zip(outside, handles, strict=True)]
                    return Outcome("moved", f"moved {len(outside)} "
                                   f"cop{'y' if len(outside) == 1 else 'ies'} to the recall "
                                   f"folder from {', '.join(sorted({c.folder for c in outside}))}",
                                   done)
                if done:
                    return Outcome("moved", "already in the recall folder", done)
                if in_recall:
                    return Outcome("moved", "already in the recall folder (moved by an "
                                   "earlier recall)", [])
                return Outcome("not_found", "no copy in any folder (deleted or never "
                               "delivered to this mailbox)", [])

        return self._outcome(f"recall {target.mailmoat_id} for {target.recipient}", run)

    def restore(self, target: Target, moved: list[Moved]) -> Outcome:
        """Move back every copy in `moved` not yet restored (each entry is marked as it
        goes, so a retry or a second run does not move anything twice)."""

        def run() -> Outcome:
            back = gone = 0
            with self.mailbox(target.recipient) as box:
                for m in moved:
                    if m.restored or not m.handle:
                        back += m.restored
                        continue
                    if box.restore(target, m):
                        m.restored = True
                        back += 1
                    else:
                        gone += 1
            if back:
                folders = ", ".join(sorted({m.folder for m in moved if m.restored}))
                extra = f"; {gone} no longer in the recall folder" if gone else ""
                return Outcome("restored", f"moved back to {folders}{extra}", moved)
            return Outcome("not_found", "no longer in the recall folder (deleted there)",
                           moved)

        return self._outcome(f"restore {target.mailmoat_id} for {target.recipient}", run)

    def delete(self, target: Target, moved: list[Moved]) -> Outcome:
        """Delete for good the recalled copies in `moved` (never a copy outside the recall
        folder)."""

        def run() -> Outcome:
            n = 0
            with self.mailbox(target.recipient) as box:
                for m in moved:
                    if m.handle and not m.restored and box.delete(target, m):
                        n += 1
            return Outcome("deleted", f"deleted {n} recalled cop{'y' if n == 1 else 'ies'}",
                           moved) if n else Outcome("not_found", "not in the recall folder",
                                                    moved)

        return self._outcome(f"delete {target.mailmoat_id} for {target.recipient}", run)

    def _outcome(self, what: str, run: Callable[[], Outcome]) -> Outcome:
        try:
            out, attempts = self._retrying(what, run)
        except MailboxError as exc:
            return Outcome("failed", str(exc) or type(exc).__name__, attempts=self.retries + 1)
        except Exception as exc:  # a bug or an unexpected answer: this item fails, not the job
            log.exception("%s failed", what)
            return Outcome("failed", f"unexpected error: {type(exc).__name__}: {exc}")
        out.attempts = attempts
        return out
