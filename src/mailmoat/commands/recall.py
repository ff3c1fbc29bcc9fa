"""`mailmoat recall [--restore] MAILMOAT_ID...`: take delivered mail back out of mailboxes.

Recalls (or, with --restore, moves back) every delivered copy of the messages with those
X-Mailmoat-IDs through the connectors in `[recall]`, and prints one line per recipient
copy; `--format json` prints one JSON object per line with at least `id`, `recipient` and
`status` (moved, restored, not_found, failed). The exit code is 0 when every copy ended
moved, restored or not found, 1 when some failed, 2 for a bad configuration. Copies
delivered outside our domains (an outbound message's external recipients) are not ours to
touch: they are left out, not printed as copies, and counted in a note on stderr.

The recall is a job in the database like one from the console: run the same command again
after a crash (or kill) and it resumes that job instead of starting another; a
`mailmoat serve` sharing the database may work some of its mailboxes meanwhile.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import select

from mailmoat.commands.quarantine import _actor
from mailmoat.config import load_config
from mailmoat.errors import MailmoatError

OK_STATUSES = ("moved", "restored", "not_found")


def _unfinished(db: Any, kind: str, ids: list[str]) -> int | None:
    """The newest unfinished CLI job of `kind` for exactly these messages, to resume."""
    from mailmoat.store.models import RecallItemRow, RecallJobRow

    with db.session() as s:
        jobs = s.scalars(select(RecallJobRow.id).where(
            RecallJobRow.source == "cli", RecallJobRow.kind == kind,
            RecallJobRow.state.in_(("pending", "running"))).order_by(RecallJobRow.id.desc()))
        for job_id in jobs:
            asked = set(s.scalars(select(RecallItemRow.mailmoat_id).where(
                RecallItemRow.job_id == job_id, RecallItemRow.via == "").distinct()))
            if asked == set(ids):
                return int(job_id)
    return None


def register(app: typer.Typer) -> None:
    @app.command()
    def recall(
        mailmoat_ids: list[str] = typer.Argument(..., metavar="MAILMOAT_ID...",
                                                 help="X-Mailmoat-IDs of the messages"),
        config: Path = typer.Option(Path("mailmoat.toml"), "--config", "-c",
                                    help="TOML config file"),
        restore: bool = typer.Option(False, "--restore",
                                     help="move back what recalls of these messages moved"),
        fmt: str = typer.Option("text", "--format", help="text | json (one object a line)"),
        reason: str = typer.Option("", "--reason", help="why (audit log)"),
        actor: str = typer.Option(None, "--actor", help="who (audit log; default: Unix user)"),
        forwards: bool = typer.Option(True, "--forwards/--no-forwards",
                                      help="also recall internal forwards of these messages"),
        wait: float = typer.Option(600.0, "--wait", help="seconds to wait for mailboxes "
                                   "another worker holds"),
    ) -> None:
        """Recall delivered mail from every mailbox it reached (or --restore it)."""
        from mailmoat.recall.jobs import (
            RecallWorker,
            create_recall_job,
            create_restore_job,
            get_job,
            job_items,
        )
        from mailmoat.recall.index import deliveries
        from mailmoat.recall.settings import own_domains, recall_settings
        from mailmoat.store.db import Database

        if fmt not in ("text", "json"):
            typer.echo("error: --format must be text or json", err=True)
            raise typer.Exit(2)
        ids = sorted({i.strip() for i in mailmoat_ids if i.strip()})
        who = _actor(actor)
        try:
            cfg = load_config(config)
            settings = recall_settings(cfg)
            db = Database(cfg.database_url)
            db.create_schema()
            kind = "restore" if restore else "recall"
            job_id = _unfinished(db, kind, ids)
            if job_id is None and restore:
                job_id = create_restore_job(db, ids, reason=reason or "restore from the CLI",
                                            requested_by=who, source="cli")
            elif job_id is None:
                from datetime import timedelta

                job_id = create_recall_job(
                    db, ids, reason=reason or "recall from the CLI", requested_by=who,
                    source="cli", own_domains=own_domains(cfg),
                    follow_forwards=forwards and settings.follow_forwards,
                    forward_window=timedelta(days=settings.forward_window_days),
                    max_items=settings.max_items)
            worker = RecallWorker(cfg, db)
            try:
                deadline = time.monotonic() + wait
                while True:
                    view = worker.run_job(job_id)
                    if view.state == "done" or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            finally:
                worker.close()
            items = job_items(db, job_id)
            view = get_job(db, job_id)
            with db.session() as s:
                delivered = deliveries(s, ids)
        except MailmoatError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        lines: list[dict[str, Any]] = []
        outside = sorted({it.recipient for it in items if it.status == "outside"})
        for it in items:
            if it.status == "outside":
                continue
            lines.append({"id": it.mailmoat_id, "recipient": it.recipient,
                          "status": it.status if it.status in (*OK_STATUSES, "failed")
                          else "failed",
                          "detail": it.detail if it.status not in ("pending", "working")
                          else "still held by another worker", "job": job_id,
                          "connector": it.connector,
                          "folders": [m.get("folder") for m in it.moved], "via": it.via})
        covered = {(it.mailmoat_id, it.recipient.lower()) for it in items}
        seen_ids = {d.mailmoat_id for d in delivered}
        for d in delivered:
            if (d.mailmoat_id, d.recipient.lower()) not in covered:
                lines.append({"id": d.mailmoat_id, "recipient": d.recipient,
                              "status": "not_found", "job": job_id, "connector": "",
                              "detail": "no recall moved this copy" if restore else
                              "outside this recall", "folders": [], "via": ""})
        for i in ids:
            if i not in seen_ids and not any(it.mailmoat_id == i for it in items):
                lines.append({"id": i, "recipient": "", "status": "not_found", "job": job_id,
                              "connector": "", "detail": "no delivered copy in the message "
                              "log", "folders": [], "via": ""})
        for line in lines:
            if fmt == "json":
                typer.echo(json.dumps(line))
            else:
                where = f" ({', '.join(line['folders'])})" if line["folders"] else ""
                typer.echo(f"{line['id']}  {line['recipient'] or '-'}  {line['status']}"
                           f"{where}  {line['detail']}")
        if outside:
            typer.echo(f"left out {len(outside)} recipient(s) outside our domains: "
                       f"{', '.join(outside[:20])}{' …' if len(outside) > 20 else ''}", err=True)
        if fmt == "text":
            typer.echo(f"job {job_id}: {view.state}, {view.counts}", err=True)
        if any(line["status"] not in OK_STATUSES for line in lines):
            raise typer.Exit(1)
