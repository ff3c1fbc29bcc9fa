"""`mailmoat user add|passwd|disable|enable|delete|list`, `mailmoat token create`,
`mailmoat digest send`: console accounts, API tokens and quarantine digests from the command
line."""

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


def _read_password(from_stdin: bool) -> str:
    """The password from stdin (--password-stdin) or a terminal prompt, typed twice; never
    empty, never shorter than the minimum (exit 2 with the reason)."""
    from mailmoat.errors import StoreError
    from mailmoat.web.auth import check_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        # No terminal to ask on, and stdin was not declared to carry the password: an
        # account without one could never log in, and guessing what stdin holds is worse.
        typer.echo("error: no terminal to ask for the password; pipe it with "
                   "--password-stdin", err=True)
        raise typer.Exit(2)
    try:
        return check_password(password)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _user_or_exit(db, email: str):  # type: ignore[no-untyped-def]
    from mailmoat.errors import StoreError
    from mailmoat.web.auth import find_user

    try:
        return find_user(db, email)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


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
        password = _read_password(password_stdin)
        try:
            row = create_user(db, email, role, password, [d for d in domains.split(",") if d.strip()])
        except StoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        audit(db, "cli", "user.create", row.email, role=row.role, domains=row.domains)
        typer.echo(f"created {row.role} {row.email}" + (f" for {', '.join(row.domains)}" if row.domains else ""))

    @user_app.command("passwd")
    def user_passwd(email: str,
                    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                                 help="read the password from stdin")] = False,
                    config: ConfigOpt = None) -> None:
        """Set a new password for EMAIL (its console sessions end)."""
        from mailmoat.store.quarantine import audit
        from mailmoat.web.auth import set_password

        cfg, db = _open(config)
        row = _user_or_exit(db, email)
        set_password(db, row.id, _read_password(password_stdin))
        audit(db, "cli", "user.passwd", row.email)
        typer.echo(f"new password set for {row.email}")

    def _set_disabled(email: str, config: Path | None, disabled: bool) -> None:
        from mailmoat.store.quarantine import audit
        from mailmoat.web.auth import update_user

        cfg, db = _open(config)
        row = _user_or_exit(db, email)
        # The command line is how a locked-out installation recovers, so it may disable the
        # last administrator (and enable one again).
        row, changed = update_user(db, row.id, disabled=disabled, keep_an_admin=False)
        verb = "disabled" if disabled else "enabled"
        if changed:
            audit(db, "cli", "user.disable" if disabled else "user.enable", row.email)
            typer.echo(f"{verb} {row.email}" + (": its sessions and API tokens no longer work"
                                                if disabled else ""))
        else:
            typer.echo(f"{row.email} was already {verb}")

    @user_app.command("disable")
    def user_disable(email: str, config: ConfigOpt = None) -> None:
        """Disable EMAIL: it cannot log in, its sessions and API tokens stop working."""
        _set_disabled(email, config, True)

    @user_app.command("enable")
    def user_enable(email: str, config: ConfigOpt = None) -> None:
        """Enable a disabled account again."""
        _set_disabled(email, config, False)

    @user_app.command("delete")
    def user_delete(email: str,
                    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
                    config: ConfigOpt = None) -> None:
        """Delete EMAIL and its API tokens (the audit log keeps what it did)."""
        from mailmoat.store.quarantine import audit
        from mailmoat.web.auth import delete_user

        cfg, db = _open(config)
        row = _user_or_exit(db, email)
        if not yes:
            if not sys.stdin.isatty():
                typer.echo(f"error: deleting {row.email} needs confirmation; add --yes", err=True)
                raise typer.Exit(2)
            if not typer.confirm(f"Delete {row.role} {row.email} and its API tokens?"):
                typer.echo("nothing deleted")
                raise typer.Exit(1)
        delete_user(db, row.id, keep_an_admin=False)
        audit(db, "cli", "user.delete", row.email, role=row.role)
        typer.echo(f"deleted {row.email}")

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
