"""The live indicators in memory, for the scan check: a message's facts are looked up in a
dict, so the SMTP path never waits on the database.

`LiveIndicators.refresh()` (in a thread) asks the database whether anything changed since
the last load (one aggregate query) and reloads only then; the new dict replaces the old in
one assignment, so a scan sees the old set or the new one, never half. `valid_from` and
`valid_until` are checked at match time too, so an indicator expires on the second even
between two reloads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailmoat.intel.store import is_live, live_rows, live_version
from mailmoat.store.db import Database

__all__ = ["LiveIndicator", "LiveIndicators"]

log = logging.getLogger("mailmoat.intel")


@dataclass(frozen=True, slots=True)
class LiveIndicator:
    feed: str
    source_id: str
    kind: str
    value: str
    confidence: int
    valid_from: datetime | None
    valid_until: datetime | None
    also: frozenset[tuple[str, str]]
    label: str
    revoked: bool = False


class LiveIndicators:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_fact: dict[tuple[str, str], tuple[LiveIndicator, ...]] = {}
        self._version: tuple[int, str] | None = None
        self.loaded_at: float = 0.0

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_fact.values())

    def refresh(self, force: bool = False) -> bool:
        """Reload from the database when it changed (blocking: run it in a thread).
        True when a new set was loaded."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            version = live_version(s)
            if not force and version == self._version:
                return False
            rows = live_rows(s, now)
            by_fact: dict[tuple[str, str], list[LiveIndicator]] = {}
            for r in rows:
                ind = LiveIndicator(feed=r.feed, source_id=r.source_id, kind=r.kind,
                                    value=r.value, confidence=r.confidence,
                                    valid_from=_aware(r.valid_from),
                                    valid_until=_aware(r.valid_until),
                                    also=frozenset((str(k), str(v)) for k, v in r.also or ()),
                                    label=r.label)
                by_fact.setdefault((r.kind, r.value), []).append(ind)
        self._by_fact = {k: tuple(v) for k, v in by_fact.items()}
        self._version = version
        self.loaded_at = now.timestamp()
        log.debug("intel: %d live indicator values loaded", len(rows))
        return True

    def match(self, facts: Iterable[tuple[str, str]],
              now: datetime | None = None) -> list[LiveIndicator]:
        """Live indicators all of whose facts are among `facts` (a message's observables),
        strongest first, one per (feed, source id, kind, value)."""
        table = self._by_fact
        if not table:
            return []
        have = facts if isinstance(facts, set | frozenset) else set(facts)
        now = now or datetime.now(UTC)
        hits: list[LiveIndicator] = []
        for fact in have:
            for ind in table.get(fact, ()):
                if ind.also and not ind.also <= have:
                    continue
                if is_live(ind, now):
                    hits.append(ind)
        hits.sort(key=lambda i: (-i.confidence, i.feed, i.source_id))
        return hits


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt
