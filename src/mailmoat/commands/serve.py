"""`mailmoat serve --config FILE`: SMTP intake, delivery workers and the web console."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from mailmoat.config import Config, load_config, write_default_config
from mailmoat.errors import MailmoatError


def stop_on_fatal_problems(cfg: Config) -> None:
    """A configured part that cannot load (a model, the certificate, the data folder) stops
    the start with what is missing and how to fix it: otherwise the gateway would run and
    every message would carry its family's _FAIL symbol, which nobody reads."""
    from mailmoat.doctor import fatal_problems

    problems = fatal_problems(cfg)
    for f in problems:
        typer.echo(f"error: {f.component}: {f.detail}; fix: {f.fix}", err=True)
    if problems:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path = typer.Option(Path("mailmoat.toml"), "--config", "-c",
                                    help="TOML config; written with defaults if missing"),
        log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING…"),
    ) -> None:
        """Run the gateway until SIGTERM or SIGINT."""
        from mailmoat.app import process_count, run, serve_processes

        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # aiosmtpd logs every command at INFO; that is a debugging aid, not a mail log.
        logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger().level))
        if not config.exists():
            write_default_config(config)
            typer.echo(f"wrote default configuration to {config}", err=True)
        try:
            cfg = load_config(config)
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            stop_on_fatal_problems(cfg)
            n = process_count(cfg)
            if n > 1:
                code = serve_processes(cfg, n)
                if code:
                    raise typer.Exit(code)
            else:
                asyncio.run(run(cfg))
        except MailmoatError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
