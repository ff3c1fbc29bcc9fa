"""Quarantine: held messages kept (bytes on disk, metadata in the database) for review.

Release puts the held bytes back into the delivery spool, marked as already scanned, so the
delivery worker relays them without judging them again. Every action is audited.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from mailmoat import maillog
from mailmoat.config import Config
from mailmoat.errors import StoreError
from mailmoat.spool.queue import Handover, Spool, SpoolEntry, _write_durably
from mailmoat.store.db import Database
from mailmoat.store.models import AuditRow, MessageRow, QuarantineRow, RecipientRow


def quarantine_dir(config: Config) -> Path:
    d = config.data_dir / "quarantine"
    d.mkdir(parents=True, exist_ok=True)
    return d


def spool_for(config: Config) -> Spool:
    return Spool(config.data_dir / "spool")


def audit(db: Database, actor: str, action: str, target: str, **details: object) -> None:
    with db.session() as s:
        s.add(AuditRow(at=datetime.now(UTC), actor=actor, action=action, target=target,
                       details=dict(details)))


def quarantine_message(config: Config, db: Database, mailmoat_id: str, raw: bytes,
                       mail_from: str, rcpt_tos: list[str], held_for: list[str]) -> None:
    """Keep the bytes durably and record the hold. The MessageRow must already exist."""
    path = quarantine_dir(config) / f"{mailmoat_id}.eml"
    _write_durably(path, raw)
    now = datetime.now(UTC)
    with db.session() as s:
        s.merge(QuarantineRow(
            message_id=mailmoat_id, path=str(path), quarantined_at=now,
            expires_at=now + timedelta(days=config.storage.quarantine_retention_days),
            mail_from=mail_from, rcpt_tos=list(rcpt_tos), held_for=list(held_for)))


def load_raw(config: Config, db: Database, mailmoat_id: str) -> bytes:
    with db.session() as s:
        row = s.get(QuarantineRow, mailmoat_id)
        if row is None or row.deleted_at is not None:
            raise StoreError(f"message {mailmoat_id} is not in quarantine")
        path = Path(row.path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"quarantined bytes of {mailmoat_id} are missing: {exc}") from exc


def release_message(config: Config, db: Database, mailmoat_id: str, actor: str,
                    recipients: list[str] | None = None) -> list[str]:
    """Send a held message on to (some of) its held recipients. Returns who it went to."""
    raw = load_raw(config, db, mailmoat_id)
    with db.session() as s:
        row = s.get(QuarantineRow, mailmoat_id)
        assert row is not None
        held = [r.lower() for r in row.held_for]
        targets = [r.lower() for r in recipients] if recipients else held
        targets = [r for r in targets if r in held]
        if not targets:
            raise StoreError(f"message {mailmoat_id} is not held for {recipients}")
        msg = s.get(MessageRow, mailmoat_id)
        entry = SpoolEntry(
            id=f"{mailmoat_id}r{int(time.time() * 1000):x}", mail_from=row.mail_from,
            rcpt_tos=targets, received_at=time.time(), direction=msg.direction if msg else "inbound",
            scanned=True, handover=Handover(released_from=mailmoat_id, released_by=actor,
                                            mailmoat_id=mailmoat_id))
        spool_for(config).put(entry, raw)
        row.held_for = [r for r in held if r not in targets]
        if not row.held_for:
            row.released_at = datetime.now(UTC)
            row.released_by = actor
        for rec in s.scalars(select(RecipientRow).where(RecipientRow.message_id == mailmoat_id)):
            if rec.address.lower() in targets:
                rec.status = "released"
    audit(db, actor, "quarantine.release", mailmoat_id, recipients=targets)
    maillog.quarantine_action(mailmoat_id, "release", actor, targets)
    return targets


def delete_message(config: Config, db: Database, mailmoat_id: str, actor: str) -> None:
    with db.session() as s:
        row = s.get(QuarantineRow, mailmoat_id)
        if row is None or row.deleted_at is not None:
            raise StoreError(f"message {mailmoat_id} is not in quarantine")
        row.deleted_at = datetime.now(UTC)
        path = row.path
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    audit(db, actor, "quarantine.delete", mailmoat_id)
    maillog.quarantine_action(mailmoat_id, "delete", actor)


def purge_expired(config: Config, db: Database, now: datetime | None = None) -> int:
    """Delete quarantined bytes past their retention. Returns how many were purged."""
    now = now or datetime.now(UTC)
    n = 0
    with db.session() as s:
        rows = s.scalars(select(QuarantineRow).where(QuarantineRow.expires_at < now,
                                                     QuarantineRow.deleted_at.is_(None))).all()
        for row in rows:
            try:
                os.unlink(row.path)
            except FileNotFoundError:
                pass
            row.deleted_at = now
            n += 1
            maillog.quarantine_action(row.message_id, "purge", "system")
    if n:
        audit(db, "system", "quarantine.purge", "", count=n)
    return n
