"""Cost of the sender-memory look-up the reputation check makes per inbound message.

    PYTHONPATH=src nice python bench/sender_memory.py [N]

Compares, in one run on one SQLite database, the uncached look-up (the query path, cache
cleared before each call) with the cached one (the common case after the first message
from a sender to a recipient). Prints microseconds per look-up.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from mailmoat.message.model import Direction
from mailmoat.reputation_memory import SenderMemory
from mailmoat.store.db import Database


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{Path(d) / 'm.db'}")
        db.create_schema()
        mem = SenderMemory(db)
        for i in range(200):
            mem.observe(f"s{i}@partner.test", ["bob@example.test", "carol@example.test"],
                        "clean", Direction.INBOUND)
        rcpts = ["bob@example.test", "carol@example.test"]
        t = time.perf_counter()
        for i in range(n):
            mem.cache.clear()
            mem.recall(f"s{i % 200}@partner.test", rcpts)
        uncached = (time.perf_counter() - t) / n
        mem.cache.clear()
        for i in range(200):
            mem.recall(f"s{i}@partner.test", rcpts)
        t = time.perf_counter()
        for i in range(n):
            mem.recall(f"s{i % 200}@partner.test", rcpts)
        cached = (time.perf_counter() - t) / n
        db.dispose()
    print(f"uncached (one query): {uncached * 1e6:8.1f} µs/look-up")
    print(f"cached:               {cached * 1e6:8.1f} µs/look-up  ({uncached / cached:.0f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
