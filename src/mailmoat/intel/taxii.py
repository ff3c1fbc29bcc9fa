"""TAXII 2.1 collections, polled with `added_after` (`taxii2-client`).

Each poll asks for the objects added after the feed's cursor, page by page (`next`), and
moves the cursor to the server's `X-TAXII-Date-Added-Last` (the date the last object of
the page was added, in the server's own clock, as TAXII 2.1 §3.4 intends). A server that
sends no such header leaves the cursor where it was: the next poll reads the same objects
again, which the idempotent store makes harmless.

taxii2-client sets no timeout on its `requests` session; the session here does (`[intel]
fetch_timeout`), and remembers each response's headers, which the client does not return.
"""

from __future__ import annotations

from typing import Any

import requests
from taxii2client.common import _HTTPConnection
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection

from mailmoat.config import Config
from mailmoat.intel.fetch import basic_auth, redact
from mailmoat.intel.model import FeedBatch
from mailmoat.intel.settings import FeedSettings, IntelError, IntelSettings
from mailmoat.intel.stix import indicators_from_objects

__all__ = ["collection_url", "read_taxii"]

PAGE = 1000
MAX_PAGES = 1000  # a server that keeps saying "more" cannot hold a poll forever


class _Session(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.trust_env = False  # as for every feed: no proxy variables
        self.last_headers: Any = {}

    def request(self, method: Any, url: Any,  # type: ignore[override]
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        resp = super().request(method, url, *args, **kwargs)
        self.last_headers = resp.headers
        return resp


def collection_url(feed: FeedSettings) -> str:
    root = feed.url if feed.url.endswith("/") else feed.url + "/"
    return f"{root}collections/{feed.collection}/"


def read_taxii(config: Config, feed: FeedSettings, settings: IntelSettings,
               cursor: str | None) -> FeedBatch:
    auth = basic_auth(config, feed)
    conn = _HTTPConnection(user=auth[0] if auth else None, password=auth[1] if auth else None,
                           verify=feed.verify_tls, version="2.1")
    session = _Session(settings.fetch_timeout)
    session.verify, session.auth = conn.session.verify, conn.session.auth
    conn.session = session
    batch = FeedBatch(cursor=cursor)
    try:
        collection = Collection(collection_url(feed), conn=conn)
        kwargs: dict[str, Any] = {"added_after": cursor} if cursor else {}
        envelope = collection.get_objects(**kwargs)
        for _ in range(MAX_PAGES):
            if not isinstance(envelope, dict):
                raise ValueError("the server's answer is not a TAXII envelope")
            objects = envelope.get("objects") or []
            if not isinstance(objects, list):
                raise ValueError("the envelope's objects is not a list")
            batch.indicators.extend(indicators_from_objects(
                feed.name, [o for o in objects if isinstance(o, dict)], batch, feed.confidence))
            last = session.last_headers.get("X-TAXII-Date-Added-Last")
            if last:
                batch.cursor = last
            if not (envelope.get("more") and envelope.get("next")):
                break
            envelope = collection.get_objects(next=envelope["next"], limit=PAGE, **kwargs)
    except requests.Timeout as exc:
        raise IntelError(f"feed {feed.name}: the TAXII server did not answer within "
                         f"{settings.fetch_timeout:g} s") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        url = exc.request.url if exc.request is not None else feed.url
        url = url.decode(errors="replace") if isinstance(url, bytes) else str(url)
        raise IntelError(f"feed {feed.name}: the TAXII server answered HTTP {status} for "
                         f"{redact(url)}") from exc
    except (requests.RequestException, TAXIIServiceException) as exc:
        text = str(exc).replace(feed.url, redact(feed.url))
        raise IntelError(f"feed {feed.name}: TAXII: {type(exc).__name__}: "
                         f"{text[:300]}") from exc
    return batch
