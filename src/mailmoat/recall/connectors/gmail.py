"""Gmail API connector (Google Workspace): a service account with domain-wide delegation
acts as each user (`google-auth`), with the gmail.modify scope.

A message is found with `q=rfc822msgid:<id>`; a recall either takes it out of the inbox and
the user's labels into the recall label (mode "label"; restore gives the labels back) or
moves it to Trash (mode "trash"; restore untrashes it). The message id does not change, so
it is the handle. 429 and a 403 whose reason is rateLimitExceeded or userRateLimitExceeded
are retried after Retry-After or a backoff; a 401 gets a fresh token once; 404 is "not
there". Permanent deletion would need the full https://mail.google.com/ scope, which this
connector does not ask for.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from mailmoat.recall.connectors.base import (
    Connector,
    Copy,
    Mailbox,
    MailboxError,
    Moved,
    Target,
    TemporaryError,
)
from mailmoat.recall.connectors.http import (
    NotFound,
    client,
    read_json,
    request_with_token,
    retry_after,
)
from mailmoat.recall.settings import GmailSettings

__all__ = ["GMAIL_SCOPE", "GmailConnector"]

GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}


def _forbidden(what: str, resp: httpx.Response) -> MailboxError:
    """Gmail answers 403 for its rate limits too: those are temporary."""
    if RATE_REASONS & set(what.split()):
        return TemporaryError(what, retry_after(resp))
    return MailboxError(what)


def _movable(label: str) -> bool:
    """Labels a recall takes away: the inbox and the user's own (system labels such as
    UNREAD, IMPORTANT and the categories stay)."""
    return label == "INBOX" or label.startswith("Label_")


class GmailMailbox(Mailbox):
    def __init__(self, connector: GmailConnector, user: str) -> None:
        self.c = connector
        self.user = user
        self.base = f"/gmail/v1/users/{quote(user, safe='@')}"
        self._label_id: str | None = None

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return self.c.call(self.user, method, self.base + path, **kw)

    def _recall_label(self) -> str:
        if self._label_id is None:
            name = self.c.settings.label
            labels = self._call("GET", "/labels").get("labels") or []
            for lab in labels:
                if lab.get("name") == name:
                    self._label_id = str(lab["id"])
                    break
            else:
                made = self._call("POST", "/labels", json={
                    "name": name, "labelListVisibility": "labelShow",
                    "messageListVisibility": "show"})
                self._label_id = str(made["id"])
        return self._label_id

    def _labels(self, message: str) -> list[str]:
        got = self._call("GET", f"/messages/{quote(message, safe='')}",
                         params={"format": "minimal"})
        return [str(x) for x in got.get("labelIds") or []]

    def find(self, target: Target) -> list[Copy]:
        if not target.message_id:
            return []
        try:
            found = self._call("GET", "/messages", params={
                "q": f"rfc822msgid:{target.message_id}", "includeSpamTrash": "true"})
        except NotFound as exc:
            raise MailboxError(f"Gmail has no mailbox {self.user!r}: {exc}") from exc
        copies = []
        for m in found.get("messages") or []:
            labels = self._labels(str(m["id"]))
            if self.c.settings.mode == "trash":
                in_recall = "TRASH" in labels
                folder = ",".join(labels)
            else:
                in_recall = self._recall_label() in labels
                folder = ",".join(x for x in labels if _movable(x))
            copies.append(Copy(folder, str(m["id"]), in_recall))
        return copies

    def move_to_recall(self, copies: list[Copy]) -> list[str]:
        for c in copies:
            path = f"/messages/{quote(c.handle, safe='')}"
            try:
                if self.c.settings.mode == "trash":
                    self._call("POST", f"{path}/trash")
                else:
                    remove = [x for x in c.folder.split(",") if x]
                    self._call("POST", f"{path}/modify", json={
                        "addLabelIds": [self._recall_label()], "removeLabelIds": remove})
            except NotFound as exc:
                raise TemporaryError("a copy was deleted while it was being recalled") from exc
        return [c.handle for c in copies]

    def restore(self, target: Target, moved: Moved) -> bool:
        path = f"/messages/{quote(moved.handle, safe='')}"
        try:
            labels = self._labels(moved.handle)
            if self.c.settings.mode == "trash":
                if "TRASH" not in labels:
                    return False
                self._call("POST", f"{path}/untrash")
                return True
            recall = self._recall_label()
            if recall not in labels:
                return False
            self._call("POST", f"{path}/modify", json={
                "addLabelIds": [x for x in moved.folder.split(",") if x],
                "removeLabelIds": [recall]})
            return True
        except NotFound:
            return False


class GmailConnector(Connector):
    name = "gmail"

    def __init__(self, settings: GmailSettings, key_json: str, *, ca_file: str = "",
                 **kw: Any) -> None:
        super().__init__(max_connections=settings.max_connections, retries=settings.retries,
                         backoff=settings.backoff, user_format=settings.user_format, **kw)
        from google.oauth2 import service_account

        self.settings = settings
        try:
            info = json.loads(key_json)
            self._base_creds = service_account.Credentials.from_service_account_info(
                info, scopes=[GMAIL_SCOPE])
        except (ValueError, KeyError) as exc:
            # The key's text is never part of the message.
            raise MailboxError(f"the Gmail service-account key is not a valid key file "
                               f"({type(exc).__name__})") from None
        self._ca = ca_file
        self._http = client(settings.api_url, ca_file, settings.timeout)
        self._creds: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"GmailConnector({self._base_creds.service_account_email!r})"

    def _token(self, user: str, stale: str | None) -> str:
        import google.auth.exceptions
        import requests
        from google.auth.transport.requests import Request

        with self._lock:
            creds = self._creds.get(user)
            if creds is None:
                creds = self._creds[user] = self._base_creds.with_subject(user)
            if creds.token and creds.token != stale and creds.valid:
                return str(creds.token)
            session = requests.Session()
            session.verify = self._ca or True
            if self._ca:  # else REQUESTS_CA_BUNDLE from the environment wins
                session.trust_env = False
            try:
                creds.refresh(Request(session))
            except google.auth.exceptions.TransportError as exc:
                raise TemporaryError(f"Google token endpoint unreachable: {exc}") from exc
            except google.auth.exceptions.RefreshError as exc:
                raise MailboxError(
                    f"Google refused a token for {user!r}: {exc} (is domain-wide delegation "
                    f"granted to the service account's client id for {GMAIL_SCOPE}?)") from exc
            finally:
                session.close()
            return str(creds.token)

    def call(self, user: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = request_with_token(self._http, "Gmail API", method, path, self._token(user, None),
                                  lambda stale: self._token(user, stale), **kw)
        return read_json(resp, "Gmail API", _forbidden)

    @contextlib.contextmanager
    def open(self, user: str) -> Iterator[Mailbox]:
        yield GmailMailbox(self, user)

    def close(self) -> None:
        self._http.close()
