"""Database access: one engine per process, SQLite (WAL) by default, PostgreSQL by URL.

SQLite is tuned for a gateway's pattern (many short writes, readers in the console):
WAL journal, NORMAL sync (the spool, not the log, is what must survive a crash), and a
busy timeout so concurrent writers wait instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailmoat.store.models import Base
from mailmoat.store import webmodels  # noqa: F401  (console tables live on the same Base)

log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """The store handle passed to the parts that need it (never a global)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def create_schema(self) -> None:
        """Bring the schema up to date with the versioned migrations (store/migrate.py).

        Tables in models.py that no revision creates yet (a new table before its revision is
        written) are created directly, with a warning; tests/store/test_migrations.py fails
        until the revision exists."""
        from mailmoat.store.migrate import upgrade_engine

        upgrade_engine(self.engine)
        missing = set(Base.metadata.tables) - set(inspect(self.engine).get_table_names())
        if missing:
            log.warning("tables without a migration, created directly: %s", sorted(missing))
            Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
