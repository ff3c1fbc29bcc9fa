"""What the HTTP connectors (Graph, Gmail) share: one httpx client, and the reading of
status codes into this package's errors (429 and 5xx with Retry-After are temporary, 404 is
"not there", the rest of 4xx are the mailbox's failure with the service's own words)."""

from __future__ import annotations

import email.utils
import ssl
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from mailmoat.recall.connectors.base import MailboxError, TemporaryError

__all__ = ["NotFound", "client", "retry_after", "service_error"]


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


def monotonic() -> float:
    return time.monotonic()
