"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth). Each test session creates its own
database, `mm_test_<random>`, so helpers running tests at the same time never share tables,
and drops it at the end. Without a reachable server the PostgreSQL cases are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import delete

from mailmoat.store.db import Database
from mailmoat.store.models import Base
from tests.pg import fresh_postgres_database


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_postgres_database("mm_test") as url:
        yield url


@pytest.fixture(scope="session")
def pg_db(pg_database_url: str) -> Iterator[Database]:
    db = Database(pg_database_url)
    db.create_schema()
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> Iterator[Database]:
    """A migrated, empty database: SQLite in a temp dir, or the session's PostgreSQL one."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'mailmoat.db'}")
        database.create_schema()
        yield database
        database.dispose()
        return
    database = request.getfixturevalue("pg_db")
    yield database
    with database.session() as s:  # empty every table for the next test
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(delete(table))
