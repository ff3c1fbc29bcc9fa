"""Hold what a flagged account sent that is still waiting in this gateway's queue.

An incident lists what the account sent in the suspicious window; what was delivered goes
to recall, and what the downstream has not taken yet (deferred, waiting for a retry) can
still be stopped here: it moves from the delivery spool into quarantine, held for the
recipients still pending, where an administrator releases or deletes it as any held
message.

Taking a message out of the spool is the delivery workers' own claim (an atomic rename of
its sidecar), so a worker and this never both have it: a message a worker is delivering at
that moment is left to the worker. The bytes are in quarantine (written durably) before
the message leaves the spool; a crash in between means it is held and delivered, never
lost. The spool is each node's own: this holds what this node has queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from mailmoat import maillog
from mailmoat.config import Config
from mailmoat.internal.accounts import get_incident, incident_messages
from mailmoat.spool.queue import Spool
from mailmoat.store.db import Database
from mailmoat.store.models import QuarantineRow, RecipientRow
from mailmoat.store.quarantine import audit, quarantine_message, spool_for

# Spool states whose messages no worker holds: waiting for a retry, or not picked up yet.
WAITING = ("deferred", "incoming")


@dataclass
class QueuedHold:
    held: dict[str, list[str]] = field(default_factory=dict)  # mailmoat id -> recipients
    # Queued in the log but not waiting in this node's spool: being delivered at that
    # moment, queued on another node, or gone since.
    not_waiting: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return len(self.held)


def _claim(spool: Spool, msg_id: str) -> bool:
    """Take a waiting message out of the workers' reach (into active/, which only holds
    what a worker was handed or claimed, and which a restart puts back into incoming/)."""
    return any(spool.move(msg_id, state, "active") for state in WAITING)


def hold_queued(config: Config, db: Database, incident_id: int, actor: str) -> QueuedHold:
    """Move the incident's messages still queued here into quarantine. Audited."""
    inc = get_incident(db, incident_id)
    spool = spool_for(config)
    out = QueuedHold()
    for m in incident_messages(db, incident_id):
        if not any(st in ("queued", "deferred") for st in m.recipients.values()):
            continue
        if not _claim(spool, m.id):
            out.not_waiting.append(m.id)
            continue
        entry, raw = spool.read("active", m.id)
        pending = list(entry.pending or entry.rcpt_tos)
        with db.session() as s:  # recipients the scan already held stay held
            row = s.get(QuarantineRow, m.id)
            before = [] if row is None or row.deleted_at is not None else list(row.held_for)
        held_for = before + [p for p in pending if p not in before]
        quarantine_message(config, db, m.id, raw, entry.mail_from, entry.rcpt_tos, held_for)
        with db.session() as s:
            for rec in s.scalars(select(RecipientRow).where(RecipientRow.message_id == m.id)):
                if rec.address.lower() in {p.lower() for p in pending}:
                    rec.status = "quarantined"
        entry.pending = []
        spool.update("active", entry)
        spool.move(m.id, "active", "done")
        maillog.quarantine_action(m.id, "hold", actor, pending)
        out.held[m.id] = pending
    audit(db, actor, "internal.hold_queued", inc.account, incident=incident_id,
          messages=sorted(out.held), not_waiting=out.not_waiting)
    return out
