"""What a feed reader hands on: indicators, each one (kind, value) the delivery index can
match by equality, and the items it skipped with the reason why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from mailmoat.recall.index import ObservableKind, normalise

__all__ = ["FeedBatch", "Indicator", "make_indicator", "parse_time"]

log = logging.getLogger("mailmoat.intel")

MAX_SKIPS_KEPT = 50  # a feed full of junk must not fill the poll record


@dataclass(frozen=True, slots=True)
class Indicator:
    """One matchable value of an indicator. A STIX pattern with an OR of three URLs is
    three of these with the same `source_id`."""

    source_id: str  # STIX id, MISP attribute uuid, or the list line
    kind: ObservableKind
    value: str  # normalised with recall.index.normalise
    confidence: int  # 0-100
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    revoked: bool = False
    label: str = ""  # the indicator's name or the event's info, for the console
    modified: datetime | None = None  # the source's version; an older one never wins
    # Further facts the same message must have (an AND inside one STIX observation):
    # (kind, normalised value) pairs.
    also: tuple[tuple[str, str], ...] = ()


@dataclass
class FeedBatch:
    """One poll's harvest."""

    indicators: list[Indicator] = field(default_factory=list)
    # True for feeds read whole each time (lists, CSV, STIX files, MISP static feeds): what
    # is not in the batch any more was withdrawn and stops matching.
    snapshot: bool = False
    cursor: str | None = None  # where the next poll starts (TAXII added_after, MISP timestamp)
    # MISP: the event each indicator came from, the events read whole this time (what they
    # held before and do not hold now was withdrawn), and, for a static feed, every event
    # still listed (the others were withdrawn).
    groups: dict[tuple[str, str, str], str] = field(default_factory=dict)
    replaced_groups: set[str] = field(default_factory=set)
    live_groups: set[str] | None = None
    skipped: list[str] = field(default_factory=list)
    skipped_count: int = 0

    def skip(self, feed: str, what: str, reason: str) -> None:
        """Record (and log) an item the reader could not use; the poll goes on."""
        self.skipped_count += 1
        line = f"{what[:200]}: {reason}"
        if len(self.skipped) < MAX_SKIPS_KEPT:
            self.skipped.append(line)
        log.warning("intel feed %s: skipped %s", feed, line)


def _valid(kind: str, value: str) -> bool:
    """Whether a normalised value can be one of `kind` at all (index.normalise keeps what it
    cannot parse as it is; an indicator must be something a message can carry)."""
    if not value or any(c.isspace() for c in value) and kind not in ("subject",):
        return False
    if kind == "url":
        try:
            parts = urlsplit(value)
        except ValueError:
            return False
        return bool(parts.scheme and parts.hostname)
    if kind == "domain":
        return "." in value.strip(".") and not any(c in value for c in "/@:")
    if kind == "email":
        local, _, domain = value.rpartition("@")
        return bool(local) and "." in domain
    if kind == "sha256":
        return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    return True


def make_indicator(kind: ObservableKind, value: str, source_id: str, confidence: int,
                   also: tuple[tuple[str, str], ...] = (), **extra: Any) -> Indicator | None:
    """An Indicator with `value` (and the `also` facts) normalised as the delivery index
    stores them; None when a value is not one of its kind (an "ip" that is not an
    address)."""
    norm = normalise(kind, value)
    more = tuple(sorted((k, normalise(k, v)) for k, v in also))
    if not _valid(kind, norm) or not all(_valid(k, v) for k, v in more):
        return None
    return Indicator(source_id=source_id[:255], kind=kind, value=norm,
                     confidence=max(0, min(100, int(confidence))), also=more, **extra)


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string, a Unix time or a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).strip().replace("Z", "+00:00").replace("z", "+00:00")
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
