"""MISP events → indicators: the REST API (`restSearch` through `pymisp`) and the static
feed format (`manifest.json` beside one `<event uuid>.json` per event, over http(s) or in a
folder).

Attribute types read (objects' attributes too): url; domain, hostname; ip-src, ip-dst (and
their `|port` forms); email-src, email-reply-to; sha256, filename|sha256; email-subject.
A deleted attribute is revoked; an event read again replaces what it held before.

Confidence, 0-100, from the first of:
1. a confidence tag on the attribute, else on the event:
   `misp:confidence-level="completely-confident"` 100, `usually-confident` 75,
   `fairly-confident` 50, `rarely-confident` 25, `unconfident` 0;
   `estimative-language:confidence-in-analytic-judgment="high"` 90, `moderate` 60, `low` 30;
2. the event's threat level: 1 (high) 90, 2 (medium) 70, 3 (low) 50;
3. the feed's `confidence`.
An attribute whose `to_ids` flag is off (context, not meant for detection) is capped at 40.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urljoin

from mailmoat.config import Config
from mailmoat.intel.fetch import basic_auth, fetch_url, read_file, redact
from mailmoat.intel.model import FeedBatch, Indicator, make_indicator, parse_time
from mailmoat.intel.settings import FeedSettings, IntelError, IntelSettings, secret
from mailmoat.recall.index import ObservableKind

__all__ = ["TYPES", "confidence_of", "event_indicators", "read_misp", "read_static_feed"]

TYPES: dict[str, ObservableKind] = {
    "url": "url", "domain": "domain", "hostname": "domain", "ip-src": "ip", "ip-dst": "ip",
    "ip-src|port": "ip", "ip-dst|port": "ip", "email-src": "email", "email-reply-to": "email",
    "sha256": "sha256", "filename|sha256": "sha256", "email-subject": "subject",
}
NOT_FOR_DETECTION_CAP = 40
_TAG_CONFIDENCE: dict[str, int] = {
    'misp:confidence-level="completely-confident"': 100,
    'misp:confidence-level="usually-confident"': 75,
    'misp:confidence-level="fairly-confident"': 50,
    'misp:confidence-level="rarely-confident"': 25,
    'misp:confidence-level="unconfident"': 0,
    'estimative-language:confidence-in-analytic-judgment="high"': 90,
    'estimative-language:confidence-in-analytic-judgment="moderate"': 60,
    'estimative-language:confidence-in-analytic-judgment="low"': 30,
}
_THREAT_LEVEL: dict[str, int] = {"1": 90, "2": 70, "3": 50}


def _tag_confidence(tags: Any) -> int | None:
    for tag in tags or ():
        name = str(tag.get("name", "") if isinstance(tag, dict) else tag)
        if name in _TAG_CONFIDENCE:
            return _TAG_CONFIDENCE[name]
    return None


def confidence_of(event: dict[str, Any], attribute: dict[str, Any], default: int) -> int:
    """The documented mapping above, for one attribute of one event."""
    conf = _tag_confidence(attribute.get("Tag"))
    if conf is None:
        conf = _tag_confidence(event.get("Tag"))
    if conf is None:
        conf = _THREAT_LEVEL.get(str(event.get("threat_level_id", "")), default)
    if not _truthy(attribute.get("to_ids", True)):
        conf = min(conf, NOT_FOR_DETECTION_CAP)
    return conf


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "")
    return bool(value)


def _value(atype: str, value: str) -> str:
    if atype == "filename|sha256":
        return value.rpartition("|")[2]
    if atype.endswith("|port"):
        return value.rpartition("|")[0]
    return value


def _attributes(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (a for a in event.get("Attribute") or () if isinstance(a, dict))
    for obj in event.get("Object") or ():
        if isinstance(obj, dict):
            yield from (a for a in obj.get("Attribute") or () if isinstance(a, dict))


def event_indicators(feed: str, event: dict[str, Any], default: int,
                     batch: FeedBatch) -> Iterator[Indicator]:
    """The indicators of one MISP event (the object inside {"Event": ...})."""
    info = str(event.get("info") or "")[:500]
    for attr in _attributes(event):
        atype = str(attr.get("type", ""))
        kind = TYPES.get(atype)
        if kind is None:
            continue  # a type we do not match (a note, a mutex, a file name): not an error
        raw = str(attr.get("value", ""))
        uid = str(attr.get("uuid") or f"{event.get('uuid', '')}/{atype}/{raw}")
        ind = make_indicator(kind, _value(atype, raw), uid,
                             confidence_of(event, attr, default),
                             valid_from=parse_time(attr.get("first_seen")),
                             revoked=_truthy(attr.get("deleted", False)),
                             label=info, modified=parse_time(attr.get("timestamp")))
        if ind is None:
            batch.skip(feed, f"attribute {uid} ({atype} {raw[:80]!r})", f"not a valid {kind}")
            continue
        yield ind


def _add_event(feed: FeedSettings, doc: Any, batch: FeedBatch, where: str) -> str | None:
    event = doc.get("Event") if isinstance(doc, dict) else None
    if not isinstance(event, dict):
        batch.skip(feed.name, where, "not a MISP event (no \"Event\" object)")
        return None
    group = str(event.get("uuid") or where)
    for ind in event_indicators(feed.name, event, feed.confidence, batch):
        batch.indicators.append(ind)
        batch.groups[ind.source_id, ind.kind, ind.value] = group
    batch.replaced_groups.add(group)
    return group


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from exc


def read_static_feed(config: Config, feed: FeedSettings, settings: IntelSettings,
                     cursor: str | None) -> FeedBatch:
    """A MISP static feed: the manifest, then each event changed since `cursor` (the
    newest manifest timestamp read before). Events gone from the manifest stop matching."""
    auth = basic_auth(config, feed)

    def get(name: str) -> bytes:
        if feed.path:
            return read_file(config.resolve_path(feed.path) / name, feed, settings)
        base = feed.url if feed.url.endswith("/") else feed.url + "/"
        return fetch_url(urljoin(base, name), feed, settings, auth)

    manifest = _json(get("manifest.json"), "manifest.json")
    if not isinstance(manifest, dict):
        raise ValueError("manifest.json is not an object of event uuids")
    since = int(cursor) if cursor and cursor.isdigit() else -1
    batch = FeedBatch(cursor=cursor)
    batch.live_groups = set(manifest)
    newest = since
    for uuid, meta in manifest.items():
        stamp = int(meta.get("timestamp") or 0) if isinstance(meta, dict) else 0
        if stamp <= since:
            continue
        if not all(c.isalnum() or c == "-" for c in uuid):
            batch.skip(feed.name, f"event {uuid[:80]!r}", "not a uuid")
            continue
        try:
            doc = _json(get(f"{uuid}.json"), f"event {uuid}")
        except ValueError as exc:
            batch.skip(feed.name, f"event {uuid}", str(exc))
            continue
        _add_event(feed, doc, batch, f"event {uuid}")
        newest = max(newest, stamp)
    batch.cursor = str(newest) if newest >= 0 else cursor
    return batch


def read_misp(config: Config, feed: FeedSettings, settings: IntelSettings,
              cursor: str | None, client: Any = None) -> FeedBatch:
    """Events changed since `cursor` (a Unix time; the first poll asks for `misp_days`
    days) through MISP's `events/restSearch`. `client` is a `pymisp.PyMISP`; one is made
    from the feed's settings when None."""
    if client is None:
        from pymisp import PyMISP
        from pymisp.exceptions import PyMISPError

        key = secret(config, feed.name, feed.api_key_file, feed.api_key_env)
        try:
            client = PyMISP(feed.url, key, ssl=feed.verify_tls, timeout=settings.fetch_timeout,
                            tool="mailmoat")
        except PyMISPError as exc:
            # pymisp's message names the URL, never the key
            text = str(exc).replace(feed.url, redact(feed.url))
            raise IntelError(f"feed {feed.name}: {text}") from exc
    since = cursor if cursor and cursor.isdigit() else f"{int(feed.misp_days * 86400)}s"
    result = client.search(controller="events", timestamp=since, published=True,
                           pythonify=False)
    if isinstance(result, dict) and result.get("errors"):
        raise IntelError(f"feed {feed.name}: MISP answered {str(result['errors'])[:300]}")
    events: Iterable[Any] = result.get("response", []) if isinstance(result, dict) else result
    batch = FeedBatch(cursor=cursor)
    newest = int(cursor) if cursor and cursor.isdigit() else 0
    for doc in events:
        group = _add_event(feed, doc, batch, "event")
        if group is not None:
            newest = max(newest, int(doc["Event"].get("timestamp") or 0))
    batch.cursor = str(newest) if newest else cursor
    return batch
