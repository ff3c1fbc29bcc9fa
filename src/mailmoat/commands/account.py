"""`mailmoat account list|show|suspend|release|incidents|incident|close`: the accounts the
internal guard watches (`[internal]`, docs/internal.md), from a shell.

Suspend and release write the database (and Redis with `[redis] url`); a running gateway
applies them within `[internal] sync_seconds` (at once through Redis). Every change is
audited with the operator's name (`--actor`, default: the Unix user).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from mailmoat.commands.quarantine import ConfigOpt, _actor, _fail, _open
from mailmoat.errors import MailmoatError


def _when(at: float | None) -> str:
    return "-" if at is None else f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S}"


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str)


def register(app: typer.Typer) -> None:
    a = typer.Typer(help="Our own senders' accounts: restrictions and incidents.",
                    no_args_is_help=True)
    app.add_typer(a, name="account")

    @a.command("list")
    def list_(config: Path = ConfigOpt,
              all_: bool = typer.Option(False, "--all", help="include released and expired"),
              as_json: bool = typer.Option(False, "--json", help="one JSON object per line")
              ) -> None:
        """Accounts held, throttled or suspended now."""
        from mailmoat.internal.accounts import list_restrictions

        try:
            _, db = _open(config)
            rows = list_restrictions(db, include_released=all_)
        except MailmoatError as exc:
            _fail(exc)
        for r in rows:
            if as_json:
                typer.echo(_json(asdict(r)))
            else:
                typer.echo(f"{r.account}  {r.describe()}  since {_when(r.since)}  by {r.by}  "
                           f"incident {r.incident_id or '-'}: {r.reason}")
        if not rows and not as_json:
            typer.echo("no account is restricted")

    @a.command()
    def show(account: str, config: Path = ConfigOpt,
             as_json: bool = typer.Option(False, "--json")) -> None:
        """An account's restriction, what was learned about it, and its incidents."""
        from mailmoat.internal.accounts import account_view

        try:
            _, db = _open(config)
            view = account_view(db, account)
        except MailmoatError as exc:
            _fail(exc)
        if as_json:
            r = view["restriction"]
            typer.echo(_json({**view, "restriction": asdict(r) if r else None,
                              "incidents": [asdict(i) for i in view["incidents"]]}))
            return
        r = view["restriction"]
        typer.echo(f"account:     {view['account']}")
        typer.echo(f"state:       {r.describe() if r else 'sending normally'}"
                   + (f" (by {r.by} since {_when(r.since)}: {r.reason})" if r else ""))
        b = view["baseline"]
        if b is None:
            typer.echo("baseline:    nothing learned yet")
        else:
            typer.echo(f"baseline:    {b['messages_learned']} messages on {b['days_with_mail']} "
                       f"days, {b['first_seen']} to {b['last_seen']}")
            typer.echo(f"busiest hour: {b['busiest_hour']}")
            typer.echo(f"networks:    {', '.join(b['networks']) or '-'}")
            typer.echo(f"programs:    {', '.join(b['agents']) or '-'}")
        for i in view["incidents"]:
            typer.echo(f"incident {i.id}: {i.status}, opened {_when(i.opened_at)}, "
                       f"action {i.action}, score {i.score:g}")

    @a.command()
    def suspend(account: str, config: Path = ConfigOpt,
                minutes: float = typer.Option(0, "--minutes", help="0: until released"),
                kind: str = typer.Option("suspend", "--kind", help="suspend | hold | throttle"),
                reply: str = typer.Option("4xx", "--reply", help="4xx (upstream retries) or "
                                          "5xx (upstream bounces)"),
                reason: str = typer.Option("", "--reason", help="kept with it and audited"),
                actor: str = typer.Option(None, "--actor", help="who (audit log)")) -> None:
        """Stop an account's sending (or hold or throttle it) by hand."""
        from mailmoat.internal.accounts import restrict_account

        try:
            cfg, db = _open(config)
            r = restrict_account(cfg, db, account, _actor(actor), kind=kind, minutes=minutes,
                                 reason=reason, reply=reply)
        except MailmoatError as exc:
            _fail(exc)
        typer.echo(f"{r.account}: {r.describe()}")

    @a.command()
    def release(account: str, config: Path = ConfigOpt,
                grace: float = typer.Option(None, "--grace", help="hours in which its mail "
                                            "flags nothing (default [internal] "
                                            "release_grace_hours)"),
                actor: str = typer.Option(None, "--actor", help="who (audit log)")) -> None:
        """Let an account send again; what its upstream kept queued then flows."""
        from mailmoat.internal.accounts import release_account

        try:
            cfg, db = _open(config)
            r = release_account(cfg, db, account, _actor(actor), grace_hours=grace)
        except MailmoatError as exc:
            _fail(exc)
        typer.echo(f"{r.account}: released"
                   + (f", flags nothing until {_when(r.grace_until)} UTC" if r.grace_until else ""))

    @a.command()
    def incidents(config: Path = ConfigOpt,
                  open_: bool = typer.Option(False, "--open", help="only open ones"),
                  account: str = typer.Option(None, "--account"),
                  limit: int = typer.Option(50, "--limit", "-n"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
        """Flagged accounts, newest first."""
        from mailmoat.internal.accounts import list_incidents

        try:
            _, db = _open(config)
            rows = list_incidents(db, account=account, status="open" if open_ else None,
                                  limit=limit)
        except MailmoatError as exc:
            _fail(exc)
        for i in rows:
            if as_json:
                typer.echo(_json(asdict(i)))
            else:
                top = i.signals[0]["name"] if i.signals else "-"
                typer.echo(f"{i.id:>5}  {i.status:6}  {_when(i.opened_at)}  {i.account}  "
                           f"{i.action}  score {i.score:g}  {top}")
        if not rows and not as_json:
            typer.echo("no incidents")

    @a.command()
    def incident(incident_id: int, config: Path = ConfigOpt,
                 message_ids: bool = typer.Option(
                     False, "--message-ids", help="print only the IDs of its delivered "
                     "messages, one a line (for recall)"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
        """Why an account was flagged and what it sent in the suspicious window."""
        from mailmoat.internal.accounts import get_incident, incident_message_ids, incident_messages

        try:
            _, db = _open(config)
            if message_ids:
                for mid in incident_message_ids(db, incident_id):
                    typer.echo(mid)
                return
            inc = get_incident(db, incident_id)
            msgs = incident_messages(db, incident_id)
        except MailmoatError as exc:
            _fail(exc)
        if as_json:
            typer.echo(_json({**asdict(inc), "messages": [asdict(m) for m in msgs]}))
            return
        typer.echo(f"incident {inc.id}: {inc.account}, {inc.status}, action {inc.action}, "
                   f"score {inc.score:g}")
        typer.echo(f"window:  {_when(inc.window_start)} to {_when(inc.last_at)} UTC; "
                   f"{inc.flagged_messages} flagged, {inc.refused} refused, "
                   f"{inc.deferred} deferred")
        for s in inc.signals:
            typer.echo(f"  {s['name']:30} {s['score']:>6g}  {s['reason']}")
        typer.echo(f"messages ({len(msgs)}):")
        for m in msgs:
            typer.echo(f"  {m.id}  {_when(m.received_at)}  {m.status:9}  {m.subject[:60]}")

    @a.command("hold-queued")
    def hold_queued_cmd(incident_id: int, config: Path = ConfigOpt,
                        actor: str = typer.Option(None, "--actor", help="who (audit log)")
                        ) -> None:
        """Move what the incident's account sent that is still queued on this gateway
        (deferred by the downstream) into quarantine."""
        from mailmoat.internal.queued import hold_queued

        try:
            cfg, db = _open(config)
            got = hold_queued(cfg, db, incident_id, _actor(actor))
        except MailmoatError as exc:
            _fail(exc)
        for mid, rcpts in got.held.items():
            typer.echo(f"held {mid} for {', '.join(rcpts)}")
        for mid in got.not_waiting:
            typer.echo(f"not waiting here {mid}")
        typer.echo(f"{got.messages} held, {len(got.not_waiting)} not waiting in this queue")

    @a.command()
    def close(incident_id: int, config: Path = ConfigOpt,
              note: str = typer.Option("", "--note", help="what was done (audited)"),
              actor: str = typer.Option(None, "--actor", help="who (audit log)")) -> None:
        """Close an incident once it is dealt with."""
        from mailmoat.internal.accounts import close_incident

        try:
            _, db = _open(config)
            inc = close_incident(db, incident_id, _actor(actor), note)
        except MailmoatError as exc:
            _fail(exc)
        typer.echo(f"incident {inc.id} closed")
