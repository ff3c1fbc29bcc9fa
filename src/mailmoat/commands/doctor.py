"""`mailmoat doctor --config FILE`: check every component the configuration uses."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mailmoat.config import load_config
from mailmoat.errors import MailmoatError

MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        config: Path = typer.Option(Path("mailmoat.toml"), "--config", "-c", help="TOML config"),
        fmt: str = typer.Option("text", "--format", help="text | json"),
    ) -> None:
        """Check the database, models, TLS, clamd, Redis, DNS and downstream the config
        uses; exit 1 when something the gateway cannot run without is broken."""
        from mailmoat.doctor import run_checks

        try:
            cfg = load_config(config)
        except MailmoatError as exc:
            typer.echo(f"FAIL config  {exc}", err=True)
            raise typer.Exit(1) from exc
        findings = run_checks(cfg)
        for f in findings:
            if fmt == "json":
                typer.echo(json.dumps({"component": f.component, "status": f.status,
                                       "detail": f.detail, "fix": f.fix}))
                continue
            typer.echo(f"{MARK[f.status]} {f.component}: {f.detail}")
            if f.fix and f.status != "ok":
                typer.echo(f"     fix: {f.fix}")
        if any(f.status == "fail" for f in findings):
            raise typer.Exit(1)
