"""Migrations create exactly what store/models.py describes, on SQLite and PostgreSQL.

When a model changes without a revision, `test_models_and_migrations_agree` fails: write the
revision with `mailmoat.store.migrate.revision("what changed")` (see store/migrate.py).
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from mailmoat.store import migrate
from mailmoat.store.db import Database, make_engine
from mailmoat.store.models import Base
from tests.pg import fresh_postgres_database


def test_models_and_migrations_agree(db):
    assert migrate.current_revision(db.engine) == migrate.head_revision()
    diff = migrate.drift(db.engine)
    assert diff == [], (
        "store/models.py and the migrations differ; add a revision "
        f"(mailmoat.store.migrate.revision('…')): {diff}"
    )


def test_every_model_table_exists_after_upgrade(db):
    tables = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_is_idempotent(db):
    migrate.upgrade_engine(db.engine)
    db.create_schema()
    assert migrate.current_revision(db.engine) == migrate.head_revision()


def test_upgrade_by_url_and_full_downgrade_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        migrate_down(engine)
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        migrate.upgrade_engine(engine)
        assert migrate.drift(engine) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_upgrade_by_url_and_full_downgrade_on_postgresql():
    with fresh_postgres_database("mm_test") as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            assert migrate.drift(engine) == []
            migrate_down(engine)
            assert set(inspect(engine).get_table_names()) == {"alembic_version"}
            migrate.upgrade_engine(engine)
            assert migrate.current_revision(engine) == migrate.head_revision()
        finally:
            engine.dispose()


def migrate_down(engine) -> None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")


def test_database_made_before_migrations_is_stamped_then_upgraded(tmp_path):
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    engine = make_engine(url)
    # How the skeleton created schemas: the tables of revision 0001, with no version table.
    engine.dispose()
    migrate.upgrade(url, "0001_initial")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, target, details) "
                "VALUES ('2026-01-01 00:00:00', 'a', 'b', 'c', '{}')"
            )
        )
    engine.dispose()
    db = Database(url)
    try:
        db.create_schema()
        assert migrate.current_revision(db.engine) == migrate.head_revision()
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == 1
    finally:
        db.dispose()


def test_url_with_percent_sign_is_passed_through():
    cfg = migrate.alembic_config(url="postgresql+psycopg://u:p%40ss@h/db")
    assert cfg.get_main_option("sqlalchemy.url") == "postgresql+psycopg://u:p%40ss@h/db"
