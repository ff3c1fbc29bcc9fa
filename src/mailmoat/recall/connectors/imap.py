"""IMAP connector (imapclient): Dovecot, Coremail, Domino, Exchange IMAP.

One administrator ("master user") logs in for each recipient: with SASL PLAIN and the
recipient as authorization identity (Dovecot and Cyrus accept this for master users), or
with a LOGIN name built from `login_format` (Dovecot's `user*master`, Exchange's
`domain\\admin\\mailbox`). Every folder the user has (LIST) is searched for the
`X-Mailmoat-ID` header the gateway added, then, when no folder has it, for the Message-ID.
Copies are moved with MOVE (RFC 6851); a server without MOVE gets COPY, then \\Deleted and
an expunge of exactly those UIDs (UID EXPUNGE, RFC 4315), or none at all when it lacks that
too and other messages of the folder already carry \\Deleted (a plain EXPUNGE would take
those as well): the copy is then left flagged, never lost.

A copy's handle in the recall folder is `UIDVALIDITY:UID`; a restore moves that UID back to
the folder it came from, or finds the copy by header again when the folder's UIDVALIDITY
changed. imapclient blocks: this runs in worker threads only.
"""

from __future__ import annotations

import ast
import contextlib
import imaplib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailmoat.recall.connectors.base import (
    Connector,
    Copy,
    Mailbox,
    MailboxError,
    Moved,
    Target,
    TemporaryError,
)
from mailmoat.recall.settings import ImapSettings

__all__ = ["ImapConnector"]

log = logging.getLogger(__name__)

_SKIP_FLAGS = {b"\\noselect", b"\\nonexistent"}


def _criteria(header: str, value: str) -> list[Any]:
    return ["HEADER", header, value]


class ImapMailbox(Mailbox):
    def __init__(self, client: IMAPClient, user: str, recall_folder: str) -> None:
        self.client = client
        self.user = user
        self.recall_folder = recall_folder
        self._criteria: list[Any] | None = None
        self._recall_before: set[int] = set()
        self._selected: str | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _select(self, folder: str, readonly: bool = False) -> int:
        # EXAMINE to search: a read-write SELECT would clear the user's \Recent flags.
        info = self.client.select_folder(folder, readonly=readonly)
        self._selected = folder
        return int(info.get(b"UIDVALIDITY", 0))

    def _folders(self) -> list[str]:
        out = []
        for flags, _delim, name in self.client.list_folders():
            if {f.lower() for f in flags} & _SKIP_FLAGS:
                continue
            out.append(name if isinstance(name, str) else name.decode("utf-8", "replace"))
        return out

    def _search(self, criteria: list[Any]) -> list[int]:
        return sorted(int(u) for u in self.client.search(criteria))

    def _ensure_recall_folder(self) -> None:
        if not self.client.folder_exists(self.recall_folder):
            self.client.create_folder(self.recall_folder)
            with contextlib.suppress(IMAPClientError):  # not every server has SUBSCRIBE
                self.client.subscribe_folder(self.recall_folder)

    def _ensure_folder(self, folder: str) -> None:
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)
            with contextlib.suppress(IMAPClientError):
                self.client.subscribe_folder(folder)

    def _move(self, uids: list[int], dest: str) -> None:
        """Move UIDs of the selected folder to `dest` (MOVE, else COPY + flag + expunge)."""
        if self.client.has_capability("MOVE"):
            self.client.move(uids, dest)
            return
        self.client.copy(uids, dest)
        deleted_before = set(self.client.search(["DELETED"]))
        self.client.delete_messages(uids)
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uids)
        elif not deleted_before:
            self.client.expunge()
        else:
            log.warning("%s: %s has no UID EXPUNGE and other messages flagged \\Deleted: the "
                        "original stays flagged \\Deleted until the user expunges",
                        self.user, self._selected)

    # -- the primitives --------------------------------------------------------------------

    def find(self, target: Target) -> list[Copy]:
        folders = self._folders()
        tries = [_criteria("X-Mailmoat-ID", target.mailmoat_id)]
        if target.message_id:
            tries.append(_criteria("Message-ID", target.message_id))
        for criteria in tries:
            copies: list[Copy] = []
            for folder in folders:
                validity = self._select(folder, readonly=True)
                uids = self._search(criteria)
                in_recall = folder == self.recall_folder
                if in_recall:
                    self._recall_before = set(uids)
                copies += [Copy(folder, f"{validity}:{u}", in_recall) for u in uids]
            if copies:
                self._criteria = criteria
                return copies
        self._criteria = tries[0]
        return []

    def move_to_recall(self, copies: list[Copy]) -> list[str]:
        self._ensure_recall_folder()
        by_folder: dict[str, list[int]] = {}
        for c in copies:
            by_folder.setdefault(c.folder, []).append(int(c.handle.rpartition(":")[2]))
        for folder, uids in by_folder.items():
            self._select(folder)
            self._move(uids, self.recall_folder)
        validity = self._select(self.recall_folder)
        new = [u for u in self._search(self._criteria or []) if u not in self._recall_before]
        self._recall_before.update(new)
        # Copies moved in folder order land in that order (UIDs only grow); a server that
        # hides them from the search leaves handles that restore resolves by header.
        handles = [f"{validity}:{u}" for u in new[:len(copies)]]
        handles += ["search"] * (len(copies) - len(handles))
        in_move_order = [c for f in by_folder for c in copies if c.folder == f]
        by_copy = dict(zip(in_move_order, handles, strict=True))
        return [by_copy[c] for c in copies]

    def _recalled_uid(self, target: Target, moved: Moved) -> int | None:
        if not self.client.folder_exists(self.recall_folder):
            return None
        validity = self._select(self.recall_folder, readonly=True)
        mine = _criteria("X-Mailmoat-ID", target.mailmoat_id)
        want_validity, _, uid = moved.handle.partition(":")
        if uid.isdigit() and want_validity == str(validity):
            if self._search(["UID", uid]):
                return int(uid)
            return None
        # The folder was re-created (new UIDVALIDITY) or the handle was never known.
        found = self._search(mine) or (
            self._search(_criteria("Message-ID", target.message_id)) if target.message_id else [])
        return found[0] if found else None

    def restore(self, target: Target, moved: Moved) -> bool:
        uid = self._recalled_uid(target, moved)
        if uid is None:
            return False
        self._ensure_folder(moved.folder)
        self._select(self.recall_folder)
        self._move([uid], moved.folder)
        return True

    def delete(self, target: Target, moved: Moved) -> bool:
        uid = self._recalled_uid(target, moved)
        if uid is None:
            return False
        self._select(self.recall_folder)  # read-write: flags cannot change under EXAMINE
        self.client.delete_messages([uid])
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge([uid])
        else:
            self.client.expunge()
        return True


class ImapConnector(Connector):
    name = "imap"

    def __init__(self, settings: ImapSettings, password: str, **kw: Any) -> None:
        super().__init__(max_connections=settings.max_connections, retries=settings.retries,
                         backoff=settings.backoff, user_format=settings.user_format, **kw)
        self.settings = settings
        self._password = password
        self._tls: ssl.SSLContext | None = None
        if settings.tls != "none":
            self._tls = ssl.create_default_context(cafile=settings.ca_file or None)

    def __repr__(self) -> str:  # never the password
        s = self.settings
        return f"ImapConnector({s.host}:{s.port}, tls={s.tls}, master={s.master_user!r})"

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> IMAPClient:
        s = self.settings
        try:
            client = IMAPClient(s.host, port=s.port, ssl=s.tls == "ssl",
                                ssl_context=self._tls, timeout=s.timeout)
            if s.tls == "starttls":
                client.starttls(self._tls)
            return client
        except ssl.SSLError as exc:
            raise MailboxError(f"TLS with the IMAP server {self._where()} failed: {exc}") from exc
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise TemporaryError(f"cannot reach the IMAP server {self._where()}: {exc}") from exc
        except IMAPClientError as exc:
            raise MailboxError(f"IMAP server {self._where()}: {exc}") from exc

    def _login(self, client: IMAPClient, user: str) -> None:
        s = self.settings
        try:
            if s.login_format:
                client.login(s.login_format.format(user=user, master=s.master_user),
                             self._password)
            else:
                client.plain_login(s.master_user, self._password, authorization_identity=user)
        except LoginError as exc:
            raise MailboxError(
                f"the IMAP server {self._where()} refused the login of {s.master_user!r} "
                f"for the mailbox {user!r} (wrong master password, no master-user rights, "
                f"or no such mailbox): {_text(exc)}") from exc

    @contextlib.contextmanager
    def open(self, user: str) -> Iterator[Mailbox]:
        client = self._connect()
        try:
            self._login(client, user)
            yield ImapMailbox(client, user, self.settings.folder)
        except (socket.timeout, TimeoutError) as exc:
            raise TemporaryError(f"the IMAP server {self._where()} timed out for {user!r}") \
                from exc
        except imaplib.IMAP4.abort as exc:
            raise TemporaryError(f"the IMAP connection for {user!r} broke: {_text(exc)}") \
                from exc
        except OSError as exc:
            raise TemporaryError(f"the IMAP connection for {user!r} failed: {exc}") from exc
        except LoginError:
            raise
        except IMAPClientError as exc:
            raise MailboxError(f"the IMAP server answered for {user!r}: {_text(exc)}") from exc
        finally:
            with contextlib.suppress(Exception):
                client.logout()
            with contextlib.suppress(Exception):
                client.shutdown()


def _text(exc: BaseException) -> str:
    """The server's words: imaplib hands them over as bytes, or as the repr of bytes."""
    arg: object = exc.args[0] if exc.args else exc
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace").strip()
    text = str(arg)
    if text[:2] in ("b'", 'b"'):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(text)
            if isinstance(value, bytes):
                text = value.decode("utf-8", "replace")
    return text.strip()
