"""Microsoft Graph connector (Exchange Online): an Entra app with the Mail.ReadWrite
application permission, tokens by client credentials (`msal`).

A message is found with `$filter=internetMessageId eq '<id>'` over the user's messages (all
folders), moved with `POST /messages/{id}/move` to the recall folder (created when missing,
or a well-known folder such as `deleteditems`); the move answers with the copy's new id,
which is its handle, and a restore moves it back to the folder id it came from (Inbox when
the user has since deleted that folder). 429 and 503 are retried after their Retry-After;
a 401 gets a fresh token once (tokens expire, or are revoked); 404 is "not there".
"""

from __future__ import annotations

import contextlib
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
)
from mailmoat.recall.settings import GraphSettings

__all__ = ["GraphConnector"]

WELL_KNOWN = {"inbox", "deleteditems", "junkemail", "archive", "drafts", "sentitems"}


def _forbidden(what: str, resp: httpx.Response) -> MailboxError:
    return MailboxError(f"{what} (does the app have the Mail.ReadWrite application "
                        "permission, with admin consent?)")


def _odata_quote(value: str) -> str:
    return value.replace("'", "''")


class GraphMailbox(Mailbox):
    def __init__(self, connector: GraphConnector, user: str) -> None:
        self.c = connector
        self.user = user
        self.base = f"/v1.0/users/{quote(user, safe='@')}"
        self._recall_id: str | None = None

    def _recall_folder(self) -> str:
        if self._recall_id is None:
            name = self.c.settings.folder
            if name.lower() in WELL_KNOWN:
                self._recall_id = str(self.c.call("GET", f"{self.base}/mailFolders/{name}")["id"])
            else:
                found = self.c.call("GET", f"{self.base}/mailFolders", params={
                    "$filter": f"displayName eq '{_odata_quote(name)}'", "$select": "id"})
                if found.get("value"):
                    self._recall_id = str(found["value"][0]["id"])
                else:
                    made = self.c.call("POST", f"{self.base}/mailFolders",
                                       json={"displayName": name})
                    self._recall_id = str(made["id"])
        return self._recall_id

    def find(self, target: Target) -> list[Copy]:
        if not target.message_id:
            return []
        try:
            found = self.c.call("GET", f"{self.base}/messages", params={
                "$filter": f"internetMessageId eq '<{_odata_quote(target.message_id)}>'",
                "$select": "id,parentFolderId", "$top": "100"})
        except NotFound as exc:
            raise MailboxError(f"Microsoft Graph has no mailbox {self.user!r}: {exc}") from exc
        values = found.get("value") or []
        if not values:
            return []
        recall = self._recall_folder()
        return [Copy(str(m["parentFolderId"]), str(m["id"]), m["parentFolderId"] == recall)
                for m in values]

    def _move(self, message: str, destination: str) -> str:
        moved = self.c.call("POST", f"{self.base}/messages/{quote(message, safe='')}/move",
                            json={"destinationId": destination})
        return str(moved["id"])

    def move_to_recall(self, copies: list[Copy]) -> list[str]:
        recall = self._recall_folder()
        out = []
        for c in copies:
            try:
                out.append(self._move(c.handle, recall))
            except NotFound as exc:  # moved or deleted since find(): look again
                raise TemporaryError("a copy moved while it was being recalled") from exc
        return out

    def restore(self, target: Target, moved: Moved) -> bool:
        try:
            self._move(moved.handle, moved.folder)
            return True
        except NotFound:
            pass
        # Either the copy left the recall folder, or its old folder was deleted.
        try:
            self.c.call("GET", f"{self.base}/messages/{quote(moved.handle, safe='')}",
                        params={"$select": "id"})
        except NotFound:
            return False
        self._move(moved.handle, "inbox")
        return True

    def delete(self, target: Target, moved: Moved) -> bool:
        try:
            self.c.call("DELETE", f"{self.base}/messages/{quote(moved.handle, safe='')}")
        except NotFound:
            return False
        return True


class GraphConnector(Connector):
    name = "graph"

    def __init__(self, settings: GraphSettings, client_secret: str, *, ca_file: str = "",
                 **kw: Any) -> None:
        super().__init__(max_connections=settings.max_connections, retries=settings.retries,
                         backoff=settings.backoff, user_format=settings.user_format, **kw)
        self.settings = settings
        self._secret = client_secret
        self._ca = ca_file
        self._http = client(settings.graph_url, ca_file, settings.timeout)
        self._lock = threading.Lock()
        self._app: Any = None
        self._token: str | None = None

    def __repr__(self) -> str:  # never the secret
        return f"GraphConnector(tenant={self.settings.tenant_id!r}, app={self.settings.client_id!r})"

    def _authority(self) -> str:
        return f"{self.settings.authority_url.rstrip('/')}/{self.settings.tenant_id}"

    def _new_token(self, stale: str | None) -> str:
        import msal
        import requests

        with self._lock:
            if self._token is not None and self._token != stale:
                return self._token  # another thread already fetched a fresh one
            try:
                if self._app is None or stale is not None:
                    # A token the API refused is still "valid" in msal's cache: start afresh.
                    session = requests.Session()
                    session.verify = self._ca or True
                    if self._ca:  # else REQUESTS_CA_BUNDLE from the environment wins
                        session.trust_env = False
                    self._app = msal.ConfidentialClientApplication(
                        self.settings.client_id, client_credential=self._secret,
                        authority=self._authority(), http_client=session,
                        timeout=self.settings.timeout, instance_discovery=False)
                result = self._app.acquire_token_for_client(
                    scopes=[f"{self.settings.graph_url.rstrip('/')}/.default"])
            except requests.exceptions.SSLError as exc:
                self._app = None
                raise MailboxError(f"TLS with the Entra sign-in endpoint failed: {exc}") from exc
            except (requests.RequestException, OSError) as exc:
                self._app = None  # discovery may have failed half-way
                raise TemporaryError(f"Entra sign-in endpoint unreachable: {exc}") from exc
            except ValueError as exc:  # msal: bad authority or discovery document
                self._app = None
                raise MailboxError(f"Entra sign-in failed: {exc}") from exc
            if "access_token" not in result:
                raise MailboxError(
                    f"Entra refused the app's credentials: {result.get('error')}: "
                    f"{str(result.get('error_description', ''))[:300]}")
            self._token = str(result["access_token"])
            return self._token

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = request_with_token(self._http, "Microsoft Graph", method, path,
                                  self._token or self._new_token(None), self._new_token, **kw)
        return read_json(resp, "Microsoft Graph", _forbidden)

    @contextlib.contextmanager
    def open(self, user: str) -> Iterator[Mailbox]:
        yield GraphMailbox(self, user)

    def close(self) -> None:
        self._http.close()
