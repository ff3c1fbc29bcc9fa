"""What the HTTP connectors (Graph, Gmail) share: one httpx client, and the reading of
status codes into this package's errors (429 and 5xx with Retry-After are temporary, 404 is
"not there", the rest of 4xx are the mailbox's failure with the service's own words)."""

from __future__ import annotations

import email.utils
import ssl
import time
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Any

import httpx

from mailmoat.recall.connectors.base import MailboxError, TemporaryError

__all__ = ["NotFound", "client", "read_json", "request_with_token", "retry_after",
           "service_error"]


class NotFound(MailboxError):
    """404: the message (or mailbox, or folder) is not there."""


def client(base_url: str, ca_file: str, timeout: float) -> httpx.Client:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file \
        else True
    return httpx.Client(base_url=base_url.rstrip("/"), verify=verify,
                        timeout=timeout, follow_redirects=False,
                        headers={"User-Agent": "mailmoat-recall"})


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    value = resp.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def service_error(resp: httpx.Response) -> str:
    """The error code and message a Microsoft or Google API put in its JSON body."""
    try:
        body: Any = resp.json()
    except ValueError:
        return resp.text[:200]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("status") or ""
        reasons = [e.get("reason") for e in err.get("errors") or [] if isinstance(e, dict)]
        text = str(err.get("message") or "")[:300]
        return " ".join(str(x) for x in (code, *[r for r in reasons if r], text) if x)
    return str(err or body)[:300]


def transport_error(where: str, exc: httpx.HTTPError) -> TemporaryError:
    return TemporaryError(f"{where}: {type(exc).__name__}: {exc}")


def request_with_token(http: httpx.Client, service: str, method: str, path: str, token: str,
                       renew: Callable[[str], str], **kw: Any) -> httpx.Response:
    """One request with a Bearer token; a 401 (the token expired or was revoked) is tried
    once more with `renew(stale_token)`'s."""
    for fresh in (False, True):
        try:
            resp = http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        except httpx.HTTPError as exc:
            raise transport_error(service, exc) from exc
        if resp.status_code == 401 and not fresh:
            token = renew(token)
            continue
        return resp
    raise AssertionError("unreachable")


def read_json(resp: httpx.Response, service: str,
              forbidden: Callable[[str, httpx.Response], MailboxError]) -> dict[str, Any]:
    """The JSON body of a success, else the error it stands for: 404 NotFound, 429 and 5xx
    temporary (with Retry-After), 401 after a fresh token the mailbox's failure, 403 what
    `forbidden(text, resp)` makes of it (each service says different things with it)."""
    code = resp.status_code
    if code in (200, 201):
        data: dict[str, Any] = resp.json() if resp.content else {}
        return data
    if code == 204:
        return {}
    what = f"{service} {resp.request.method} answered {code}: {service_error(resp)}"
    if code == 404:
        raise NotFound(what)
    if code == 429 or code >= 500:
        raise TemporaryError(what, retry_after(resp))
    if code == 401:
        raise MailboxError(f"{what} (even with a fresh token)")
    if code == 403:
        raise forbidden(what, resp)
    raise MailboxError(what)


def monotonic() -> float:
    return time.monotonic()
