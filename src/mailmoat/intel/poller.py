"""Polling: read a feed, store its indicators, hunt the new ones.

`poll_feed` does one feed once (blocking; `mailmoat intel poll` calls it directly, the
service in a thread). A feed that times out, answers an error or sends garbage records the
error on its row (`mailmoat intel feeds`, the console) and logs one line; it never raises
into the caller, so the other feeds go on.

`IntelService` is what `mailmoat serve` runs: one asyncio task per enabled feed, polling
every `poll_interval` seconds, and handing again any hunt recall did not take before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mailmoat.config import Config
from mailmoat.intel.hunt import RecallHandler, bind_recall, hand_pending, hand_to_recall, hunt
from mailmoat.intel.lists import parse_csv, parse_list
from mailmoat.intel.misp import read_misp, read_static_feed
from mailmoat.intel.model import FeedBatch
from mailmoat.intel.settings import FeedSettings, IntelSettings, intel_settings
from mailmoat.intel.store import apply_batch, feed_state, purge_withdrawn, record_poll
from mailmoat.intel.stix import bundle_objects, indicators_from_objects
from mailmoat.intel.taxii import read_taxii
from mailmoat.intel.fetch import read_source
from mailmoat.store.db import Database

__all__ = ["IntelService", "PollReport", "poll_feed", "read_feed"]

log = logging.getLogger("mailmoat.intel")


@dataclass
class PollReport:
    feed: str
    ok: bool
    error: str = ""
    added: int = 0
    changed: int = 0
    withdrawn: int = 0
    skipped: int = 0
    hunted: int = 0
    hunts: list[int] = field(default_factory=list)  # ids of hunts that matched
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def read_feed(config: Config, feed: FeedSettings, settings: IntelSettings,
              cursor: str | None) -> FeedBatch:
    """The feed's indicators since `cursor`, by kind. Raises IntelError or ValueError."""
    if feed.kind == "taxii":
        return read_taxii(config, feed, settings, cursor)
    if feed.kind == "misp":
        return read_misp(config, feed, settings, cursor)
    if feed.kind == "misp-feed":
        return read_static_feed(config, feed, settings, cursor)
    data = read_source(config, feed, settings)
    batch = FeedBatch(snapshot=True)
    if feed.kind == "stix":
        batch.indicators.extend(indicators_from_objects(
            feed.name, bundle_objects(data), batch, feed.confidence))
        return batch
    text = data.decode("utf-8", errors="replace")
    if feed.kind == "list":
        parse_list(feed.name, text, feed.indicator_kind, feed.confidence, batch)
    else:
        parse_csv(feed.name, text, feed.confidence, batch)
    return batch


def poll_feed(config: Config, db: Database, feed: FeedSettings, *,
              recall: RecallHandler | None = hand_to_recall,
              now: datetime | None = None) -> PollReport:
    started = time.monotonic()
    settings = intel_settings(config)
    now = now or datetime.now(UTC)
    report = PollReport(feed=feed.name, ok=False)
    recall = bind_recall(config, recall)
    try:
        with db.session() as s:
            cursor = feed_state(s, feed.name, feed.kind).cursor or None
        batch = read_feed(config, feed, settings, cursor)
        with db.session() as s:
            result = apply_batch(s, feed.name, batch, now)
            record_poll(s, feed.name, feed.kind, now, cursor=batch.cursor or "",
                        result=result, batch=batch)
        report.ok = True
        report.added, report.changed = result.added, result.changed
        report.withdrawn, report.skipped = result.withdrawn, batch.skipped_count
        report.hunted = len(result.to_hunt)
        feeds = {f.name: f for f in settings.feeds}
        found = hunt(db, feeds, result.to_hunt, recall=recall, now=now)
        report.hunts = [h.id for h in found]
        log.info("intel feed %s: %d new, %d changed, %d withdrawn, %d skipped; %d hunted, "
                 "%d matched mail", feed.name, result.added, result.changed, result.withdrawn,
                 batch.skipped_count, report.hunted, len(found))
    except Exception as exc:  # a broken feed is its own problem, never the gateway's
        text = str(exc)
        # IntelError already names the feed; anything else gets its type for a clue.
        report.error = text if text.startswith(f"feed {feed.name}:") else \
            f"{type(exc).__name__}: {text}"
        log.error("intel feed %s: poll failed: %s", feed.name, report.error)
        try:
            with db.session() as s:
                record_poll(s, feed.name, feed.kind, now, error=report.error)
        except Exception:
            log.exception("intel feed %s: could not record the failed poll", feed.name)
    report.seconds = round(time.monotonic() - started, 3)
    return report


class IntelService:
    """The feeds' poll loops inside `mailmoat serve`."""

    def __init__(self, config: Config, db: Database,
                 recall: RecallHandler | None = hand_to_recall,
                 on_poll: Callable[[PollReport], None] | None = None) -> None:
        self.config = config
        self.db = db
        self.recall = bind_recall(config, recall)
        self.on_poll = on_poll  # told after every poll (tests and the console wait on it)
        self.settings = intel_settings(config)
        self._tasks: list[asyncio.Task[None]] = []
        self._retry_lock = threading.Lock()
        self._purged_at = -3600.0
        self.reports: dict[str, PollReport] = {}

    @property
    def feeds(self) -> list[FeedSettings]:
        if not self.settings.enabled:
            return []
        return [f for f in self.settings.feeds if f.enabled]

    def start(self) -> None:
        for feed in self.feeds:
            self._tasks.append(asyncio.create_task(self._loop(feed), name=f"intel-{feed.name}"))
        if self._tasks:
            log.info("intel: polling %d feed(s): %s", len(self._tasks),
                     ", ".join(f.name for f in self.feeds))

    async def _loop(self, feed: FeedSettings) -> None:
        while True:
            try:
                report = await asyncio.to_thread(
                    poll_feed, self.config, self.db, feed, recall=self.recall)
                self.reports[feed.name] = report
                if self.on_poll is not None:
                    self.on_poll(report)
                if self.recall is not None:
                    await asyncio.to_thread(self._retry)
                await asyncio.to_thread(self._purge)
            except asyncio.CancelledError:
                raise
            except Exception:  # poll_feed records its own errors; this is a bug's last net
                log.exception("intel feed %s: poll loop error", feed.name)
            await asyncio.sleep(feed.poll_interval)

    def _retry(self) -> None:
        """Hand again what recall did not take (failed) or a crash left pending. One loop
        at a time: two feeds' loops must not hand the same hunt twice."""
        assert self.recall is not None
        if not self._retry_lock.acquire(blocking=False):
            return
        try:
            hand_pending(self.db, self.recall,
                         stale_before=datetime.now(UTC) - timedelta(minutes=10))
        finally:
            self._retry_lock.release()

    def _purge(self) -> None:
        """Withdrawn indicators leave the database after `[storage] log_retention_days`,
        at most once an hour whichever feed's loop gets here first."""
        now = time.monotonic()
        if now - self._purged_at < 3600:
            return
        self._purged_at = now
        days = self.config.storage.log_retention_days
        with self.db.session() as s:
            n = purge_withdrawn(s, datetime.now(UTC) - timedelta(days=days))
        if n:
            log.info("intel: deleted %d indicator(s) withdrawn over %d days ago", n, days)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
