"""`mailmoat user add|list`, `mailmoat token create`, `mailmoat digest send`: console
accounts, API tokens and quarantine digests from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", envvar="MAILMOAT_CONFIG",
                                                   help="mailmoat.toml (default: built-in defaults)")]


def _open(config_path: Path | None):  # type: ignore[no-untyped-def]
    import mailmoat.store.webmodels  # noqa: F401
    from mailmoat.config import load_config
    from mailmoat.errors import ConfigError
    from mailmoat.store.db import Database

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    db = Database(config.database_url)
    db.create_schema()
    return config, db


def register(app: typer.Typer) -> None:
    user_app = typer.Typer(help="Console accounts.", no_args_is_help=True)
    token_app = typer.Typer(help="API tokens for scripts.", no_args_is_help=True)
    digest_app = typer.Typer(help="Quarantine digests.", no_args_is_help=True)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.add_typer(digest_app, name="digest")

    @user_app.command("add")
    def user_add(email: str,
                 role: Annotated[str, typer.Option(help="admin | domain_admin | user")] = "user",
                 domains: Annotated[str, typer.Option(help="comma-separated, for domain admins")] = "",
                 password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                              help="read the password from stdin")] = False,
                 config: ConfigOpt = None) -> None:
        """Create a console account."""
        from mailmoat.errors import StoreError
        from mailmoat.store.quarantine import audit
        from mailmoat.web.auth import create_user

        cfg, db = _open(config)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            # No terminal to ask on, and stdin was not declared to carry the password: an
            # account without one could never log in, and guessing what stdin holds is worse.
            typer.echo("error: no terminal to ask for the password; pipe it with "
                       "--password-stdin", err=True)
            raise typer.Exit(2)
        if len(password) < 8:
            typer.echo("error: the password must be at least 8 characters", err=True)
            raise typer.Exit(2)
        try:
            row = create_user(db, email, role, password, [d for d in domains.split(",") if d.strip()])
        except StoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        audit(db, "cli", "user.create", row.email, role=row.role, domains=row.domains)
        typer.echo(f"created {row.role} {row.email}" + (f" for {', '.join(row.domains)}" if row.domains else ""))

    @user_app.command("list")
    def user_list(config: ConfigOpt = None) -> None:
        """List console accounts."""
        from sqlalchemy import select

        from mailmoat.store.webmodels import UserRow

        cfg, db = _open(config)
        with db.session() as s:
            for u in s.scalars(select(UserRow).order_by(UserRow.email)):
                state = " (disabled)" if u.disabled else ""
                doms = f" [{', '.join(u.domains)}]" if u.domains else ""
                typer.echo(f"{u.email}\t{u.role}{doms}{state}")

    @token_app.command("create")
    def token_create(user: str, name: Annotated[str, typer.Option(help="a label for the token")] = "cli",
                     config: ConfigOpt = None) -> None:
        """Create an API token for USER (printed once; only its hash is stored)."""
        from sqlalchemy import select

        from mailmoat.store.quarantine import audit
        from mailmoat.store.webmodels import UserRow
        from mailmoat.web.auth import create_token

        cfg, db = _open(config)
        with db.session() as s:
            row = s.scalar(select(UserRow).where(UserRow.email == user.strip().lower()))
        if row is None:
            typer.echo(f"error: no user {user}", err=True)
            raise typer.Exit(1)
        tok = create_token(db, row.id, name)
        audit(db, "cli", "token.create", row.email, name=name)
        typer.echo(tok)

    @digest_app.command("send")
    def digest_send(dry_run: Annotated[bool, typer.Option("--dry-run", help="count, do not send")] = False,
                    config: ConfigOpt = None) -> None:
        """Send every user's quarantine digest now via the downstream."""
        from mailmoat.errors import RelayError
        from mailmoat.web.digest import send_digests

        cfg, db = _open(config)
        try:
            users, n = send_digests(cfg, db, dry_run=dry_run)
        except RelayError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        verb = "would send" if dry_run else "sent"
        typer.echo(f"{verb} {users} digest{'s' if users != 1 else ''} listing {n} held message{'s' if n != 1 else ''}")
