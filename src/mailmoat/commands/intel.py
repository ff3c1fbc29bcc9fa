"""`mailmoat intel feeds|poll|list|hunt|rescan`: threat-intelligence feeds from a shell.

`poll` reads feeds now (as `mailmoat serve` does every `poll_interval`), stores their
indicators and hunts the new ones, handing matches to recall as configured. `hunt` runs a
retro-hunt of live indicators (or of one value) over delivered mail and prints what it
matched; with `--recall` it hands the matches to recall like a poll does. `rescan` scans
delivered mail still in the spool ([delivery] keep_delivered_hours) again with today's
rules. Secrets are never printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from mailmoat.commands.quarantine import ConfigOpt, _open
from mailmoat.errors import MailmoatError

JsonOpt = typer.Option(False, "--json", help="one JSON object per line")


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _emit(items: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]
          ) -> None:
    """One JSON object a line with --json, else `line(item)`."""
    for item in items:
        typer.echo(json.dumps(item) if as_json else line(item))


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


def register(app: typer.Typer) -> None:
    cli = typer.Typer(help="Threat-intelligence feeds: status, poll, indicators, retro-hunt.",
                      no_args_is_help=True)
    app.add_typer(cli, name="intel")

    @cli.command("feeds")
    def feeds(config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
        """Configured feeds and how their last poll went."""
        from mailmoat.intel.service import feed_status

        try:
            cfg, db = _open(config)
            items = feed_status(cfg, db)
        except MailmoatError as exc:
            _fail(str(exc))
        _emit(items, as_json, lambda item: (
            f"{item['name']:20} {item['kind']:9} {item['last_status']:6} "
            f"live {item['live_indicators']:>7}  last poll "
            f"{(item['last_poll_at'] or '-')[:19]}  {item['last_error']}"))

    @cli.command("poll")
    def poll(config: Path = ConfigOpt,
             feed: list[str] = typer.Option([], "--feed", "-f", help="only these feeds"),
             as_json: bool = JsonOpt) -> None:
        """Poll feeds now; exit 1 when a feed failed."""
        from mailmoat.intel.poller import poll_feed
        from mailmoat.intel.settings import intel_settings

        try:
            cfg, db = _open(config)
            settings = intel_settings(cfg)
        except MailmoatError as exc:
            _fail(str(exc))
        chosen = [f for f in settings.feeds if not feed or f.name in feed]
        unknown = sorted(set(feed) - {f.name for f in settings.feeds})
        if unknown:
            _fail(f"no feed named {', '.join(unknown)} in [[intel.feeds]]")
        failed = False
        for f in chosen:
            report = poll_feed(cfg, db, f)
            failed |= not report.ok
            if as_json:
                typer.echo(json.dumps(report.as_dict()))
            elif report.ok:
                typer.echo(f"{f.name}: {report.added} new, {report.changed} changed, "
                           f"{report.withdrawn} withdrawn, {report.skipped} skipped; "
                           f"{len(report.hunts)} hunt(s) matched mail ({report.seconds:.1f} s)")
            else:
                typer.echo(f"{f.name}: failed: {report.error}")
        raise typer.Exit(1 if failed else 0)

    @cli.command("list")
    def list_(config: Path = ConfigOpt,
              feed: str | None = typer.Option(None, "--feed", "-f"),
              kind: str | None = typer.Option(None, "--kind", "-k"),
              value: str | None = typer.Option(None, "--value", help="this value only"),
              all_: bool = typer.Option(False, "--all", help="include revoked and expired"),
              limit: int = typer.Option(100, "--limit", "-n"),
              as_json: bool = JsonOpt) -> None:
        """Indicators, newest first (live ones unless --all)."""
        from mailmoat.intel.service import indicator_page

        try:
            _, db = _open(config)
            items = indicator_page(db, feed=feed, kind=kind, value=value, live_only=not all_,
                                   limit=limit)
        except (MailmoatError, ValueError) as exc:
            _fail(str(exc))
        def line(item: dict[str, Any]) -> str:
            state = "live" if item["live"] else "revoked" if item["revoked"] else "expired"
            return (f"{item['feed']:16} {item['kind']:10} {item['confidence']:>3} "
                    f"{state:7} {item['value'][:100]}  {item['source_id']}")
        _emit(items, as_json, line)

    @cli.command("hunt")
    def hunt_(config: Path = ConfigOpt,
              feed: str | None = typer.Option(None, "--feed", "-f",
                                              help="only this feed's live indicators"),
              kind: str | None = typer.Option(None, "--kind", "-k",
                                              help="with --value: url, domain, ip, email, "
                                              "sha256, subject, message_id"),
              value: str | None = typer.Option(None, "--value",
                                               help="hunt this one value (not stored)"),
              days: float = typer.Option(14.0, "--days", help="look-back for --value"),
              recall: bool = typer.Option(False, "--recall", help="hand the matches to "
                                          "recall as a poll would (auto or approval queue)"),
              as_json: bool = JsonOpt) -> None:
        """Retro-hunt live indicators (or one value) over delivered mail."""
        from mailmoat.intel.service import hunt_now

        if (kind is None) != (value is None):
            _fail("--kind and --value go together")
        try:
            cfg, db = _open(config)
            items = hunt_now(cfg, db, feed=feed, kind=kind, value=value, days=days,
                             recall=recall)
        except (MailmoatError, ValueError) as exc:
            _fail(str(exc))
        _emit(items, as_json, lambda item: (
            f"{item['feed'] or '-':16} {item['kind']:8} {item['value'][:80]}  "
            f"conf {item['confidence']:>3}  {len(item['message_ids'])} "
            f"message(s), {len(item['recipients'])} delivered cop(ies)  "
            f"{item.get('mode', '')}"))
        if not items and not as_json:
            typer.echo("no delivered mail matched")

    @cli.command("rescan")
    def rescan(config: Path = ConfigOpt,
               hours: float = typer.Option(24.0, "--hours", help="how far back (the spool "
                                           "keeps delivered mail [delivery] "
                                           "keep_delivered_hours, 48 by default)"),
               recall: bool = typer.Option(False, "--recall", help="hand what now scores as "
                                           "malware or phishing to recall"),
               auto: bool = typer.Option(False, "--auto", help="with --recall: approved, "
                                         "not queued for approval"),
               as_json: bool = JsonOpt) -> None:
        """Re-scan delivered mail still in the spool with today's rules and models."""
        import asyncio

        from mailmoat.intel.hunt import bind_recall, hand_to_recall
        from mailmoat.intel.rescan import rescan_delivered

        try:
            cfg, db = _open(config)
            kept = cfg.delivery.keep_delivered_hours
            if hours > kept:
                typer.echo(f"delivered mail is kept {kept:g} hours ([delivery] "
                           f"keep_delivered_hours): nothing older than that is re-scanned",
                           err=True)
            items = asyncio.run(rescan_delivered(cfg, db, hours,
                                                 recall=bind_recall(cfg, hand_to_recall)
                                                 if recall else None,
                                                 auto=auto))
        except MailmoatError as exc:
            _fail(str(exc))
        _emit(items, as_json, lambda item: (
            f"{item['id']}  {item['action']:10} {item['reason']}  -> "
            f"{', '.join(item['recipients'])}"))
        if not items and not as_json:
            typer.echo("no delivered mail in the window is judged a threat now")
