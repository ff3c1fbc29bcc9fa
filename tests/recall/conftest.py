"""Recall tests use the store's database fixtures (SQLite, and PostgreSQL when it runs)."""

from tests.store.conftest import db, pg_database_url, pg_db  # noqa: F401
