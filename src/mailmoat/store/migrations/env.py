"""Alembic environment for mailmoat's store.

Run through `mailmoat.store.migrate` (there is no alembic.ini): it passes either an open
connection (`config.attributes["connection"]`) or a URL (`sqlalchemy.url`). SQLite cannot
ALTER most things, so migrations render in batch mode, which copies the table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from mailmoat.store.models import Base
from mailmoat.store import webmodels  # noqa: F401  (console tables)

target_metadata = Base.metadata
config = context.config


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
