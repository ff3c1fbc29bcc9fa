"""Versioned schema migrations (Alembic), applied at startup.

`upgrade(database_url)` brings any database, new or old, to the newest revision; it is what
`Database.create_schema()` runs. Revisions live in `store/migrations/versions/`. A change to
`store/models.py` needs a new revision, written with:

    PYTHONPATH=src python -c "from mailmoat.store.migrate import revision; revision('add x')"

and `tests/store/test_migrations.py` fails while models and migrations disagree.

A database created by `create_all` before migrations existed (no `alembic_version` table, but
our tables present) is stamped at the initial revision first, then upgraded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from mailmoat.store.models import Base

__all__ = [
    "INITIAL_REVISION",
    "alembic_config",
    "current_revision",
    "drift",
    "head_revision",
    "revision",
    "upgrade",
    "upgrade_engine",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
INITIAL_REVISION = "0001_initial"


def alembic_config(connection: Connection | None = None, url: str = "") -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_engine(engine: Engine, target: str = "head") -> None:
    """Migrate the database behind `engine` to `target` (the newest revision by default)."""
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        if "alembic_version" not in tables and "messages" in tables:
            command.stamp(alembic_config(conn), INITIAL_REVISION)
        command.upgrade(alembic_config(conn), target)


def upgrade(database_url: str, target: str = "head") -> None:
    """Migrate the database at `database_url` to `target` (the newest revision by default)."""
    from mailmoat.store.db import make_engine

    engine = make_engine(database_url)
    try:
        upgrade_engine(engine, target)
    finally:
        engine.dispose()


def drift(engine: Engine) -> list[Any]:
    """Differences between the migrated database and store/models.py; [] when in step."""
    with engine.connect() as conn:
        return list(
            compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        )


def revision(message: str, database_url: str = "sqlite://") -> None:
    """Autogenerate a new revision from the difference between head and models.py."""
    from mailmoat.store.db import make_engine

    engine = make_engine(database_url)
    upgrade_engine(engine)
    with engine.begin() as conn:
        command.revision(alembic_config(conn), message=message, autogenerate=True)
    engine.dispose()
