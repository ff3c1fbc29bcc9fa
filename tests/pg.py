"""A throwaway PostgreSQL database for tests (the server at 127.0.0.1:5432, trust auth).

Every user gets a database of its own, so tests and helpers running at the same time never
share tables; it is dropped afterwards. Without a reachable server the caller is skipped.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import pytest

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_admin():
    """An autocommit psycopg connection to the always-present `test` database."""
    import psycopg

    return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "mm_test") -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database named `<prefix>_<random>`; skips the test
    when the server cannot be reached."""
    pytest.importorskip("psycopg")
    try:
        admin = pg_admin()
    except Exception as exc:  # no server: PostgreSQL cases skip, SQLite ones still run
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
