"""Re-scan delivered mail with today's rules and models, as Microsoft's ZAP does.

The gateway keeps the bytes of delivered mail in the spool's `done/` folder for
`[delivery] keep_delivered_hours` (48) and only what the checks found in the message log,
so a re-scan reaches back as far as those bytes: `hours` beyond that finds nothing older. Each
message still there that the log says reached a mailbox is scanned again by a Scanner
built from the configuration in force; what now scores as malware or phishing at the
quarantine or reject level is reported, and with `recall` recorded as a hunt (feed
`rescan`, kind `rescan`, the new verdict as its value) and handed to recall: approved with
`auto`, else into the approval queue.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from mailmoat.config import Config
from mailmoat.intel.hunt import RecallHandler, hand_pending
from mailmoat.message.model import Direction, Envelope
from mailmoat.recall.index import deliveries
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner
from mailmoat.spool.queue import Spool
from mailmoat.store.db import Database
from mailmoat.store.models import IntelHuntRow

__all__ = ["THREATS", "rescan_delivered"]

log = logging.getLogger("mailmoat.intel")

THREATS = ("malware", "phishing")
ACTIONS = ("quarantine", "reject")


async def rescan_delivered(config: Config, db: Database, hours: float, *,
                           recall: RecallHandler | None = None,
                           auto: bool = False) -> list[dict[str, Any]]:
    spool = Spool(config.data_dir / "spool")
    since = time.time() - hours * 3600
    found: list[dict[str, Any]] = []
    scanner = Scanner(BuildContext(config=config, network=config.scan.network, database=db))
    try:
        for mid in spool.ids("done"):
            try:
                entry, raw = spool.read("done", mid)
            except (OSError, ValueError):
                continue  # deleted by the 24-hour clean-up meanwhile
            if entry.received_at < since:
                continue
            with db.session() as s:
                copies = deliveries(s, [mid])
            if not copies:
                continue  # bounced, or held: nothing in a mailbox
            env = Envelope(mail_from=entry.mail_from, rcpt_tos=tuple(entry.rcpt_tos),
                           client_ip=entry.client_ip or None, helo=entry.helo or None,
                           auth_user=entry.auth_user or None,
                           direction=Direction(entry.direction),
                           received_at=entry.received_at)
            out = await scanner.scan(raw, env)
            v = out.verdict
            if v.category.value not in THREATS or v.action.value not in ACTIONS:
                continue
            top = sorted(out.result.symbols, key=lambda x: -x.score)[:3]
            why = (f"re-scan: {v.category.value}, score {v.score:g} "
                   f"({', '.join(s.name for s in top)})")
            found.append({"id": mid, "action": v.action.value, "category": v.category.value,
                          "score": v.score, "reason": why,
                          "recipients": [d.recipient for d in copies]})
    finally:
        await scanner.close()
    if recall is not None and found:
        ids = []
        with db.session() as s:
            for item in found:
                row = IntelHuntRow(
                    at=datetime.now(UTC), feed="rescan", indicator_id=None, source_id=item["id"],
                    kind="rescan", value=item["reason"][:1000],
                    confidence=min(100, int(item["score"] * 5)),
                    mode="auto" if auto else "queued", status="pending",
                    message_ids=[item["id"]],
                    recipients=[[item["id"], r] for r in item["recipients"]],
                    job_id="", error="", origin="rescan")
                s.add(row)
                s.flush()
                ids.append(row.id)
        hand_pending(db, recall, ids)
    log.info("intel re-scan of %g hour(s): %d delivered message(s) now judged a threat",
             hours, len(found))
    return found
