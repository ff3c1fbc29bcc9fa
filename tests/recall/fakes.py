"""Local fakes of Microsoft's and Google's mail APIs, over HTTPS on loopback (msal accepts
only https authorities; the connectors verify the fakes' certificate with a test CA).

They speak the documented endpoints the connectors use, with the documented error shapes:

* Entra: `GET /{tenant}/v2.0/.well-known/openid-configuration`, `POST
  /{tenant}/oauth2/v2.0/token` (client credentials; a wrong secret is `invalid_client`).
* Graph: `GET /v1.0/users/{u}/messages?$filter=internetMessageId eq '<id>'`,
  `POST /v1.0/users/{u}/messages/{id}/move` (201, the moved message with a new id),
  `GET|DELETE /v1.0/users/{u}/messages/{id}`, `GET|POST /v1.0/users/{u}/mailFolders`
  (`$filter=displayName eq '…'`), `GET /v1.0/users/{u}/mailFolders/{well-known name}`;
  404 `ErrorItemNotFound` / `ResourceNotFound`, 401 `InvalidAuthenticationToken`, 429 with
  Retry-After.
* Google: `POST /token` (JWT bearer grant, audience Google's token endpoint as the docs say;
  the assertion's RS256 signature is checked
  against the service account's public key, and `sub` names the user acted for).
* Gmail: `GET /gmail/v1/users/{u}/messages?q=rfc822msgid:…`, `GET …/messages/{id}`,
  `POST …/messages/{id}/modify|trash|untrash`, `GET|POST …/labels`; 403
  `rateLimitExceeded`, 429.

`fail(method, path_part, status, headers, times)` makes the next matching requests fail;
`expire_tokens()` makes every token issued so far answer 401.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Fault:
    method: str
    part: str
    status: int
    headers: dict[str, str]
    times: int
    body: dict[str, Any] = field(default_factory=dict)


class FakeService:
    """Common machinery: HTTPS server thread, tokens, scripted faults, a request log."""

    def __init__(self, ca: trustme.CA) -> None:
        self.lock = threading.RLock()
        self.tokens: dict[str, str] = {}  # token -> subject
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self.token_requests = 0
        self._ids = itertools.count(1)
        cert = ca.issue_cert("127.0.0.1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _go(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = service.dispatch(self.command, self.path,
                                                            dict(self.headers), body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _go

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}-{uuid.uuid4().hex[:6]}"

    def fail(self, method: str, part: str, status: int, headers: dict[str, str] | None = None,
             times: int = 1, body: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.faults.append(Fault(method, part, status, headers or {}, times, body or {}))

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def issue(self, subject: str) -> str:
        tok = uuid.uuid4().hex
        with self.lock:
            self.tokens[tok] = subject
            self.token_requests += 1
        return tok

    def count(self, method: str, part: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and part in p)

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            for f in self.faults:
                if f.times > 0 and f.method == method and f.part in unquote(raw_path):
                    f.times -= 1
                    self.requests.append((method, raw_path, f.status))
                    return f.status, f.headers, f.body or self.error_body(f.status)
        status, out_headers, payload = self.handle(method, raw_path, headers, body)
        with self.lock:
            self.requests.append((method, raw_path, status))
        return status, out_headers, payload

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": {"code": str(status), "message": "scripted failure"}}

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def bearer(self, headers: dict[str, str]) -> str | None:
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        tok = auth.removeprefix("Bearer ").strip()
        with self.lock:
            return self.tokens.get(tok)


# -- Microsoft --------------------------------------------------------------------------------

@dataclass
class GraphMessage:
    id: str
    internet_id: str
    folder: str


class FakeMicrosoft(FakeService):
    TENANT = "contoso-tenant"
    CLIENT_ID = "app-1234"
    SECRET = "graph-client-secret"

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__(ca)
        self.folders: dict[str, dict[str, str]] = {}  # user -> {folder id: displayName}
        self.messages: dict[str, dict[str, GraphMessage]] = {}  # user -> id -> message

    def add_mailbox(self, user: str) -> None:
        self.folders[user] = {f"inbox-{user}": "Inbox", f"deleted-{user}": "Deleted Items",
                              f"archive-{user}": "Archive"}
        self.messages[user] = {}

    def deliver(self, user: str, internet_id: str, folder: str = "Inbox") -> str:
        fid = self.folder_id(user, folder)
        assert fid
        mid = self.new_id("AAMk")
        self.messages[user][mid] = GraphMessage(mid, internet_id, fid)
        return mid

    def folder_id(self, user: str, name: str) -> str | None:
        for fid, n in self.folders[user].items():
            if n == name:
                return fid
        return None

    def where(self, user: str, internet_id: str) -> list[str]:
        return sorted(self.folders[user][m.folder] for m in self.messages[user].values()
                      if m.internet_id == internet_id)

    def error_body(self, status: int) -> dict[str, Any]:
        code = {429: "TooManyRequests", 401: "InvalidAuthenticationToken",
                404: "ErrorItemNotFound", 503: "ServiceUnavailable"}.get(status, "Error")
        return {"error": {"code": code, "message": "scripted failure"}}

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(raw_path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        t = self.TENANT
        if path == f"/{t}/v2.0/.well-known/openid-configuration":
            return 200, {}, {
                "token_endpoint": f"{self.url}/{t}/oauth2/v2.0/token",
                "authorization_endpoint": f"{self.url}/{t}/oauth2/v2.0/authorize",
                "issuer": f"{self.url}/{t}/v2.0"}
        if path == f"/{t}/oauth2/v2.0/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if form.get("client_id") != self.CLIENT_ID or \
                    form.get("client_secret") != self.SECRET:
                return 401, {}, {"error": "invalid_client",
                                 "error_description": "AADSTS7000215: Invalid client secret"}
            if form.get("grant_type") != "client_credentials":
                return 400, {}, {"error": "unsupported_grant_type"}
            return 200, {}, {"token_type": "Bearer", "expires_in": 3599,
                             "access_token": self.issue("app")}
        if not path.startswith("/v1.0/users/"):
            return 404, {}, {"error": {"code": "BadRequest", "message": "no such route"}}
        if self.bearer(headers) is None:
            return 401, {}, {"error": {"code": "InvalidAuthenticationToken",
                                       "message": "Access token has expired or is not yet "
                                                  "valid."}}
        parts = path.split("/")[3:]  # user, resource, ...
        user = parts[0]
        if user not in self.messages:
            return 404, {}, {"error": {"code": "ErrorInvalidUser",
                                       "message": f"The requested user '{user}' is invalid."}}
        rest = parts[1:]
        box = self.messages[user]
        if rest == ["messages"] and method == "GET":
            m = re.fullmatch(r"internetMessageId eq '(.*)'", query.get("$filter", ""))
            assert m, query
            want = m.group(1).replace("''", "'")
            return 200, {}, {"value": [{"id": x.id, "parentFolderId": x.folder}
                                       for x in box.values() if x.internet_id == want]}
        if len(rest) == 2 and rest[0] == "messages":
            msg = box.get(rest[1])
            if msg is None:
                return 404, {}, self.error_body(404)
            if method == "DELETE":
                del box[msg.id]
                return 204, {}, None
            return 200, {}, {"id": msg.id, "parentFolderId": msg.folder}
        if len(rest) == 3 and rest[0] == "messages" and rest[2] == "move" and method == "POST":
            msg = box.get(rest[1])
            if msg is None:
                return 404, {}, self.error_body(404)
            dest = json.loads(body)["destinationId"]
            well = {"inbox": "Inbox", "deleteditems": "Deleted Items", "archive": "Archive"}
            fid = self.folder_id(user, well[dest]) if dest in well else dest
            if fid not in self.folders[user]:
                return 404, {}, {"error": {"code": "ErrorItemNotFound",
                                           "message": "The specified folder was not found."}}
            del box[msg.id]
            new = GraphMessage(self.new_id("AAMk"), msg.internet_id, fid)
            box[new.id] = new
            return 201, {}, {"id": new.id, "parentFolderId": fid}
        if rest == ["mailFolders"] and method == "GET":
            m = re.fullmatch(r"displayName eq '(.*)'", query.get("$filter", ""))
            name = m.group(1).replace("''", "'") if m else None
            return 200, {}, {"value": [{"id": f, "displayName": n}
                                       for f, n in self.folders[user].items()
                                       if name is None or n == name]}
        if rest == ["mailFolders"] and method == "POST":
            name = json.loads(body)["displayName"]
            fid = self.new_id("folder-")
            self.folders[user][fid] = name
            return 201, {}, {"id": fid, "displayName": name}
        if len(rest) == 2 and rest[0] == "mailFolders" and method == "GET":
            well = {"inbox": "Inbox", "deleteditems": "Deleted Items", "archive": "Archive"}
            fid = self.folder_id(user, well.get(rest[1], "")) if rest[1] in well else rest[1]
            if fid not in self.folders[user]:
                return 404, {}, self.error_body(404)
            return 200, {}, {"id": fid, "displayName": self.folders[user][fid]}
        return 400, {}, {"error": {"code": "BadRequest", "message": f"unhandled {path}"}}


# -- Google -----------------------------------------------------------------------------------

@dataclass
class GmailMessage:
    id: str
    rfc822_id: str
    labels: list[str]


class FakeGoogle(FakeService):
    CLIENT_EMAIL = "recall@mailmoat-test.iam.gserviceaccount.com"

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__(ca)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.labels: dict[str, dict[str, str]] = {}  # user -> id -> name
        self.messages: dict[str, dict[str, GmailMessage]] = {}
        self.delegated: set[str] = set()  # users the service account may act as

    def key_json(self) -> str:
        pem = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return json.dumps({"type": "service_account", "project_id": "mailmoat-test",
                           "private_key_id": "k1", "private_key": pem,
                           "client_email": self.CLIENT_EMAIL, "client_id": "1234567890",
                           "token_uri": f"{self.url}/token"})

    def add_mailbox(self, user: str) -> None:
        self.labels[user] = {"INBOX": "INBOX", "TRASH": "TRASH", "UNREAD": "UNREAD",
                             "Label_1": "Projects"}
        self.messages[user] = {}
        self.delegated.add(user)

    def deliver(self, user: str, rfc822_id: str, labels: list[str] | None = None) -> str:
        mid = self.new_id("18c")
        self.messages[user][mid] = GmailMessage(mid, rfc822_id,
                                                list(labels or ["INBOX", "UNREAD"]))
        return mid

    def where(self, user: str, rfc822_id: str) -> list[list[str]]:
        return [sorted(self.labels[user][x] for x in m.labels)
                for m in self.messages[user].values() if m.rfc822_id == rfc822_id]

    def error_body(self, status: int) -> dict[str, Any]:
        reason = {403: "rateLimitExceeded", 429: "rateLimitExceeded"}.get(status, "backendError")
        return {"error": {"code": status, "message": "scripted failure",
                          "errors": [{"reason": reason, "domain": "usageLimits"}]}}

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(raw_path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if path == "/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return 400, {}, {"error": "unsupported_grant_type"}
            try:
                claims = jwt.decode(form["assertion"], self.key.public_key(),
                                    algorithms=["RS256"],
                                    audience="https://oauth2.googleapis.com/token")
            except jwt.PyJWTError as exc:
                return 400, {}, {"error": "invalid_grant", "error_description": str(exc)}
            sub = claims.get("sub", "")
            if claims.get("iss") != self.CLIENT_EMAIL or sub not in self.delegated or \
                    "gmail.modify" not in claims.get("scope", ""):
                return 401, {}, {"error": "unauthorized_client",
                                 "error_description": "Client is unauthorized to retrieve "
                                                      "access tokens using this method."}
            return 200, {}, {"access_token": self.issue(sub), "expires_in": 3599,
                             "token_type": "Bearer"}
        m = re.fullmatch(r"/gmail/v1/users/([^/]+)/(.*)", path)
        if not m:
            return 404, {}, {"error": {"code": 404, "message": "Not Found"}}
        user, rest = m.group(1), m.group(2).split("/")
        subject = self.bearer(headers)
        if subject is None:
            return 401, {}, {"error": {"code": 401, "message": "Invalid Credentials",
                                       "errors": [{"reason": "authError"}]}}
        if subject != user:
            return 403, {}, {"error": {"code": 403, "message": "Delegation denied",
                                       "errors": [{"reason": "forbidden"}]}}
        if user not in self.messages:
            return 404, {}, {"error": {"code": 404, "message": "Mailbox not found"}}
        box = self.messages[user]
        if rest == ["messages"] and method == "GET":
            q = query.get("q", "")
            want = q.removeprefix("rfc822msgid:")
            trash_too = query.get("includeSpamTrash") == "true"
            found = [{"id": x.id, "threadId": x.id} for x in box.values()
                     if x.rfc822_id == want and (trash_too or "TRASH" not in x.labels)]
            return 200, {}, ({"messages": found, "resultSizeEstimate": len(found)} if found
                             else {"resultSizeEstimate": 0})
        if rest[0] == "messages" and len(rest) >= 2:
            msg = box.get(rest[1])
            if msg is None:
                return 404, {}, {"error": {"code": 404, "message": "Requested entity was "
                                                                   "not found."}}
            action = rest[2] if len(rest) == 3 else ""
            if method == "GET" and not action:
                return 200, {}, {"id": msg.id, "labelIds": list(msg.labels)}
            if action == "modify":
                req = json.loads(body)
                for lab in req.get("addLabelIds") or []:
                    if lab not in self.labels[user]:
                        return 400, {}, {"error": {"code": 400, "message": "Invalid label"}}
                    if lab not in msg.labels:
                        msg.labels.append(lab)
                msg.labels = [x for x in msg.labels if x not in (req.get("removeLabelIds")
                                                                  or [])]
                return 200, {}, {"id": msg.id, "labelIds": msg.labels}
            if action == "trash":
                msg.labels = [x for x in msg.labels if x != "INBOX"] + ["TRASH"]
                return 200, {}, {"id": msg.id, "labelIds": msg.labels}
            if action == "untrash":
                msg.labels = [x for x in msg.labels if x != "TRASH"] + ["INBOX"]
                return 200, {}, {"id": msg.id, "labelIds": msg.labels}
        if rest == ["labels"] and method == "GET":
            return 200, {}, {"labels": [{"id": i, "name": n}
                                        for i, n in self.labels[user].items()]}
        if rest == ["labels"] and method == "POST":
            name = json.loads(body)["name"]
            lid = self.new_id("Label_")
            self.labels[user][lid] = name
            return 200, {}, {"id": lid, "name": name}
        return 400, {}, {"error": {"code": 400, "message": f"unhandled {path}"}}


@contextmanager
def fake_apis() -> Iterator[tuple[FakeMicrosoft, FakeGoogle, str]]:
    """Both fakes, and the path of the CA bundle that verifies them."""
    import tempfile
    from pathlib import Path

    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as d:
        bundle = Path(d) / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        ms, google = FakeMicrosoft(ca), FakeGoogle(ca)
        try:
            yield ms, google, str(bundle)
        finally:
            ms.close()
            google.close()


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)
