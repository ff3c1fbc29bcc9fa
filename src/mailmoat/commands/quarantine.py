"""`mailmoat quarantine list|show|release|delete|purge`: the held-mail store from a shell.

Release writes the held bytes back into the delivery spool (marked as already scanned); a
running `mailmoat serve` picks them up within a couple of seconds. Every action is audited
with the operator's name (`--actor`, default: the Unix user).
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import select

from mailmoat.config import Config, load_config
from mailmoat.errors import MailmoatError
from mailmoat.store.db import Database
from mailmoat.store.models import MessageRow, QuarantineRow

ConfigOpt = typer.Option(Path("mailmoat.toml"), "--config", "-c", help="TOML config file")


def _open(config: Path) -> tuple[Config, Database]:
    cfg = load_config(config)
    db = Database(cfg.database_url)
    db.create_schema()
    return cfg, db


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    q = typer.Typer(help="Held messages: list, inspect, release, delete, purge.",
                    no_args_is_help=True)
    app.add_typer(q, name="quarantine")

    @q.command("list")
    def list_(config: Path = ConfigOpt,
              all_: bool = typer.Option(False, "--all", help="include released and deleted"),
              limit: int = typer.Option(50, "--limit", "-n"),
              as_json: bool = typer.Option(False, "--json", help="one JSON object per line")) -> None:
        """Held messages, newest first."""
        try:
            _, db = _open(config)
            with db.session() as s:
                stmt = select(QuarantineRow, MessageRow).join(
                    MessageRow, MessageRow.id == QuarantineRow.message_id, isouter=True)
                if not all_:
                    stmt = stmt.where(QuarantineRow.deleted_at.is_(None),
                                      QuarantineRow.released_at.is_(None))
                rows = s.execute(stmt.order_by(QuarantineRow.quarantined_at.desc())
                                 .limit(limit)).all()
        except MailmoatError as exc:
            _fail(exc)
        for qrow, msg in rows:
            state = "deleted" if qrow.deleted_at else "released" if qrow.released_at else "held"
            item: dict[str, Any] = {"id": qrow.message_id, "state": state,
                    "quarantined_at": qrow.quarantined_at.isoformat(),
                    "from": qrow.mail_from, "held_for": qrow.held_for,
                    "subject": msg.subject if msg else "", "score": msg.score if msg else None,
                    "category": msg.category if msg else ""}
            if as_json:
                typer.echo(json.dumps(item))
            else:
                typer.echo(f"{item['id']}  {state:8}  {item['quarantined_at'][:19]}  "
                           f"{item['category'] or '-':9} {item['score'] if item['score'] is not None else '-':>6}  "
                           f"{qrow.mail_from or '<>'} -> {', '.join(qrow.held_for)}  {item['subject']}")
        if not rows and not as_json:
            typer.echo("quarantine is empty")

    @q.command()
    def show(message_id: str, config: Path = ConfigOpt,
             raw: bool = typer.Option(False, "--raw", help="print the whole held message")) -> None:
        """Why a message is held, and its headers (or all of it with --raw)."""
        from mailmoat.store.quarantine import load_raw

        try:
            cfg, db = _open(config)
            data = load_raw(cfg, db, message_id)
            with db.session() as s:
                qrow = s.get(QuarantineRow, message_id)
                msg = s.get(MessageRow, message_id)
        except MailmoatError as exc:
            _fail(exc)
        if raw:
            typer.echo(data.decode("utf-8", "replace"), nl=False)
            return
        assert qrow is not None
        typer.echo(f"id:          {message_id}")
        typer.echo(f"held for:    {', '.join(qrow.held_for)}")
        typer.echo(f"envelope:    {qrow.mail_from or '<>'} -> {', '.join(qrow.rcpt_tos)}")
        typer.echo(f"quarantined: {qrow.quarantined_at.isoformat()}  expires: {qrow.expires_at.isoformat()}")
        if msg is not None:
            typer.echo(f"verdict:     {msg.action} ({msg.category}, score {msg.score:g}): {msg.reason}")
            for sym in sorted(msg.symbols, key=lambda x: -abs(x["score"])):
                typer.echo(f"  {sym['name']:32} {sym['score']:>7g}  {sym['reason']}")
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        typer.echo("")
        typer.echo(head.decode("utf-8", "replace"))

    @q.command()
    def release(message_id: str, config: Path = ConfigOpt,
                to: list[str] = typer.Option([], "--to", help="only these held recipients"),
                actor: str = typer.Option(None, "--actor", help="who releases (audit log)")) -> None:
        """Send a held message on to its recipients, without scanning it again."""
        from mailmoat.store.quarantine import release_message

        try:
            cfg, db = _open(config)
            done = release_message(cfg, db, message_id, _actor(actor), recipients=to or None)
        except MailmoatError as exc:
            _fail(exc)
        typer.echo(f"released {message_id} to {', '.join(done)}")

    @q.command()
    def delete(message_id: str, config: Path = ConfigOpt,
               actor: str = typer.Option(None, "--actor", help="who deletes (audit log)")) -> None:
        """Delete a held message (its bytes are removed; the log keeps the record)."""
        from mailmoat.store.quarantine import delete_message

        try:
            cfg, db = _open(config)
            delete_message(cfg, db, message_id, _actor(actor))
        except MailmoatError as exc:
            _fail(exc)
        typer.echo(f"deleted {message_id}")

    @q.command()
    def purge(config: Path = ConfigOpt) -> None:
        """Delete held messages past [storage] quarantine_retention_days."""
        from mailmoat.store.quarantine import purge_expired

        try:
            cfg, db = _open(config)
            n = purge_expired(cfg, db, datetime.now(UTC))
        except MailmoatError as exc:
            _fail(exc)
        typer.echo(f"purged {n} expired message(s)")
