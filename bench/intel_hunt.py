"""Retro-hunt speed: 10,000 indicators against 1,000,000 indexed messages.

    python bench/intel_hunt.py [--messages 1000000] [--indicators 10000] [--no-postgres]
                               [--keep DIR]

The delivery index is written directly in bulk (one `messages` row, one delivered
`recipients` row and three `message_observables` rows per message: a URL, its domain, an
attachment SHA-256), all received within the last 14 days; then `--indicators` indicators
(a third URLs, a third domains, a third hashes) are stored, 1% of them naming values that
occur in the index. The timed part is what a poll does after storing new indicators:
`intel.hunt.hunt` (find_messages per kind, the AND check, deliveries, the hunt rows, and
the hand-over to a recorder standing in for recall). Prints seconds for each database.
PostgreSQL runs in a fresh database that is dropped afterwards; it is skipped when the
server does not answer.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import Table, insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from mailmoat.intel.hunt import hunt  # noqa: E402
from mailmoat.intel.settings import FeedSettings  # noqa: E402
from mailmoat.intel.store import indicator_key  # noqa: E402
from mailmoat.store.db import Database  # noqa: E402
from mailmoat.store.models import (  # noqa: E402
    IntelIndicatorRow,
    MessageRow,
    ObservableRow,
    RecipientRow,
)

BATCH = 20_000


def _url(i: int) -> str:
    return f"https://host{i % 50_000}.site{i % 997}.example/path/{i}"


def _domain(i: int) -> str:
    return f"site{i % 997}-{i % 50_000}.example"


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def fill_index(db: Database, n: int) -> float:
    started = time.perf_counter()
    now = datetime.now(UTC)
    msgs, rcpts, obs = (cast(Table, t.__table__) for t in (MessageRow, RecipientRow,
                                                           ObservableRow))
    with db.engine.begin() as conn:
        for start in range(0, n, BATCH):
            ids = range(start, min(n, start + BATCH))
            when = [now - timedelta(seconds=(i * 1.2) % (13 * 86400)) for i in ids]
            conn.execute(insert(msgs), [
                {"id": f"m{i:011d}", "received_at": w, "direction": "inbound",
                 "client_ip": "192.0.2.1", "mail_from": f"s{i % 5000}@sender.example",
                 "subject": f"message {i}", "message_id": f"{i}@sender.example",
                 "action": "accept", "category": "clean", "symbols": [], "urls": [],
                 "url_domains": [], "attachments": [], "headers": {}}
                for i, w in zip(ids, when, strict=True)])
            conn.execute(insert(rcpts), [
                {"message_id": f"m{i:011d}", "address": f"user{i % 400}@example.test",
                 "domain": "example.test", "action": "accept", "status": "delivered",
                 "attempts": 1, "last_response": "250 ok", "delivered_at": w}
                for i, w in zip(ids, when, strict=True)])
            conn.execute(insert(obs), [
                row for i, w in zip(ids, when, strict=True) for row in (
                    {"message_id": f"m{i:011d}", "kind": "url", "value": _url(i),
                     "received_at": w},
                    {"message_id": f"m{i:011d}", "kind": "domain", "value": _domain(i),
                     "received_at": w},
                    {"message_id": f"m{i:011d}", "kind": "sha256", "value": _sha(i),
                     "received_at": w})])
    return time.perf_counter() - started


def store_indicators(db: Database, n: int, messages: int) -> list[int]:
    """n indicators; every 100th names a value in the index, the rest values that are not."""
    now = datetime.now(UTC)
    rows = []
    for j in range(n):
        hit = j % 100 == 0
        i = (j * 7919) % messages if hit else messages + j
        kind, value = (("url", _url(i)), ("domain", _domain(i)), ("sha256", _sha(i)))[j % 3]
        rows.append({"feed": "bench", "key": indicator_key(f"ind-{j}", kind, value),
                     "source_id": f"ind-{j}", "kind": kind, "value": value, "also": [],
                     "confidence": 95 if j % 2 else 60, "revoked": False, "label": "",
                     "group_id": "", "first_seen": now, "updated_at": now})
    with db.engine.begin() as conn:
        conn.execute(insert(cast(Table, IntelIndicatorRow.__table__)), rows)
    with db.session() as s:
        from sqlalchemy import select

        return list(s.scalars(select(IntelIndicatorRow.id)))


class Recorder:
    def __init__(self) -> None:
        self.calls = 0
        self.messages = 0

    def __call__(self, db: Database, ids: Sequence[str], *, reason: str, requested_by: str,
                 source: str, approved: bool = True) -> str:
        self.calls += 1
        self.messages += len(ids)
        return f"job-{self.calls}"


def run(url: str, messages: int, indicators: int) -> dict[str, float | int]:
    db = Database(url)
    db.create_schema()
    try:
        filled = fill_index(db, messages)
        ids = store_indicators(db, indicators, messages)
        feeds = {"bench": FeedSettings(name="bench", kind="list", path="x",
                                       auto_recall_confidence=90, lookback_days=14)}
        recorder = Recorder()
        started = time.perf_counter()
        found = hunt(db, feeds, ids, recall=recorder)
        seconds = time.perf_counter() - started
        return {"fill_s": round(filled, 1), "hunt_s": round(seconds, 2),
                "indicators": len(ids), "hunts_matched": len(found),
                "messages_handed": recorder.messages, "recall_calls": recorder.calls}
    finally:
        db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--indicators", type=int, default=10_000)
    ap.add_argument("--no-postgres", action="store_true",
                    help="SQLite only (else a scratch database on 127.0.0.1:5432 too)")
    ap.add_argument("--keep", default="", help="folder for the SQLite file (default: a "
                    "temporary one, removed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "intel-bench.db"
        path.unlink(missing_ok=True)
        result = run(f"sqlite:///{path}", args.messages, args.indicators)
        print(f"sqlite: {result}", flush=True)
    if not args.no_postgres:
        try:
            import pytest

            from tests.pg import fresh_postgres_database
        except ImportError:
            return
        try:
            with fresh_postgres_database("mm_bench") as url:
                print(f"postgresql: {run(url, args.messages, args.indicators)}", flush=True)
        except (Exception, pytest.skip.Exception) as exc:  # no server: SQLite's figure alone
            print(f"postgresql: skipped ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    main()
