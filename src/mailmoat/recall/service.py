"""The recall worker inside `mailmoat serve`: one asyncio task that, every `[recall]
worker_interval` seconds, hands the pending jobs to a `RecallWorker` in a thread. Mailbox
work is blocking I/O; the event loop that serves SMTP only awaits the thread.

It runs when at least one connector is configured, in the process that does housekeeping
(the single process, or child 0 of a multi-process serve). Jobs are claimed item by item
in the database, so a `mailmoat recall` on the command line, or another gateway sharing the
database, can work the same queue at the same time without doing anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailmoat.config import Config
from mailmoat.store.db import Database

__all__ = ["recall_loop", "start_recall_worker"]

log = logging.getLogger(__name__)


async def recall_loop(config: Config, db: Database) -> None:
    from mailmoat.recall.jobs import RecallWorker
    from mailmoat.recall.settings import recall_settings

    every = recall_settings(config).worker_interval
    worker = RecallWorker(config, db)
    try:
        while True:
            try:
                await asyncio.to_thread(worker.run_pending)
            except Exception:  # the database is away, say: the next round tries again
                log.exception("recall worker round failed")
            await asyncio.sleep(every)
    finally:
        worker.stop()  # no new mailbox is started; the ones in hand finish
        with contextlib.suppress(Exception):
            await asyncio.to_thread(worker.close)


def start_recall_worker(config: Config, db: Database) -> asyncio.Task[None] | None:
    """The worker task, or None when no connector is configured."""
    from mailmoat.recall.settings import recall_settings

    s = recall_settings(config)
    if s.imap is None and s.graph is None and s.gmail is None:
        return None
    log.info("recall worker on (%s)", ", ".join(
        n for n in ("imap", "graph", "gmail") if getattr(s, n) is not None))
    return asyncio.create_task(recall_loop(config, db), name="recall")
