"""Local sender-reputation memory: who has written to whom, and how it was judged.

The gateway calls `SenderMemory.observe_message(msg, category)` once per message after its
verdict (inbound, outbound and internal alike). The reputation check then asks `recall()`
about a new inbound message: has this sender written to these recipients before, was that
mail clean, did our users write to the sender, is it a reply to a Message-ID we sent?
That gives first-contact, known-correspondent, reply-to-our-mail and bad-history signals
(`scan/reputation.py`) and the `first_contact` fact the BEC check reads.

Storage: `sender_memory` rows (sender, recipient) with counters, and `sent_message_ids`
for outbound Message-IDs, in the message store (SQLite or PostgreSQL). Calls are
synchronous SQLAlchemy; async callers run them in a thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError

from mailmoat.message.model import Direction, ParsedMessage
from mailmoat.store.db import Database
from mailmoat.store.models import SenderMemoryRow, SentMessageRow

BAD_CATEGORIES = frozenset({"spam", "phishing", "malware", "bec"})

_MSGID = re.compile(r"<([^<>\s]+)>")


def normalise_message_id(value: str) -> str:
    value = value.strip()
    m = _MSGID.search(value)
    return (m.group(1) if m else value.strip("<>"))[:998]


def message_ids_in(header_value: str) -> list[str]:
    """Message-IDs in an In-Reply-To or References value, without the angle brackets."""
    return [m[:998] for m in _MSGID.findall(header_value or "")]


def sender_identity(msg: ParsedMessage) -> str:
    """Who the recipient sees as the sender: the From address, else the MAIL FROM."""
    addr = msg.from_addr.address if msg.from_addr else ""
    return (addr or msg.envelope.mail_from.strip().strip("<>")).lower()


@dataclass
class Correspondence:
    """What the memory knows about one inbound message's sender and its recipients."""

    sender: str
    history: dict[str, SenderMemoryRow] = field(default_factory=dict)  # recipient -> row
    wrote_to_sender: list[str] = field(default_factory=list)  # our users who wrote to them
    replied_ids: list[str] = field(default_factory=list)  # Message-IDs we sent, replied to

    @property
    def first_contact(self) -> bool:
        return not self.history and not self.wrote_to_sender and not self.replied_ids


class SenderMemory:
    def __init__(self, database: Database) -> None:
        self.db = database

    # Writing --------------------------------------------------------------------------------

    def observe_message(self, msg: ParsedMessage, verdict_category: str) -> None:
        """Record one judged message; call after each verdict (see module docstring)."""
        self.observe(sender_identity(msg), msg.envelope.rcpt_tos, verdict_category,
                     msg.envelope.direction, message_id=msg.message_id)

    async def aobserve_message(self, msg: ParsedMessage, verdict_category: str) -> None:
        """`observe_message` from async code (the database calls run in a thread)."""
        await asyncio.to_thread(self.observe_message, msg, verdict_category)

    def observe(self, sender: str, recipients: Iterable[str], verdict_category: str,
                direction: Direction | str, message_id: str = "",
                at: datetime | None = None) -> None:
        """Count a message from `sender` to each recipient with its verdict category.

        Inbound: the sender is outside, the recipients ours. Outbound/internal: the sender
        is our user; the rows mark whom they wrote to, and the Message-ID is kept so a
        reply to it is recognised."""
        sender = sender.strip().strip("<>").lower()
        rcpts = sorted({r.strip().strip("<>").lower() for r in recipients if r.strip()})
        if not sender or not rcpts:
            return
        category = getattr(verdict_category, "value", verdict_category)
        direction = Direction(getattr(direction, "value", direction))
        ours = direction is not Direction.INBOUND
        now = at or datetime.now(timezone.utc)
        for attempt in range(2):  # a concurrent first insert of the same pair: retry once
            try:
                with self.db.session() as s:
                    existing = {
                        row.recipient: row for row in s.scalars(select(SenderMemoryRow).where(
                            and_(SenderMemoryRow.sender == sender,
                                 SenderMemoryRow.recipient.in_(rcpts))))}
                    for r in rcpts:
                        row = existing.get(r)
                        if row is None:
                            row = SenderMemoryRow(sender=sender, recipient=r, first_seen=now,
                                                  last_seen=now, messages=0, clean=0, bad=0,
                                                  outbound=ours)
                            s.add(row)
                        row.messages += 1
                        row.last_seen = now
                        row.clean += category == "clean"
                        row.bad += category in BAD_CATEGORIES
                        row.outbound = row.outbound or ours
                    if ours and message_id:
                        mid = normalise_message_id(message_id)
                        if mid and s.get(SentMessageRow, mid) is None:
                            s.add(SentMessageRow(message_id=mid, sender=sender, sent_at=now))
                return
            except IntegrityError:
                if attempt:
                    raise

    # Reading --------------------------------------------------------------------------------

    def recall(self, sender: str, recipients: Iterable[str],
               reply_ids: Iterable[str] = ()) -> Correspondence:
        sender = sender.strip().strip("<>").lower()
        rcpts = sorted({r.strip().strip("<>").lower() for r in recipients if r.strip()})
        ids = sorted(set(reply_ids))[:100]
        out = Correspondence(sender=sender)
        if not sender:
            return out
        with self.db.session() as s:
            if rcpts:
                for row in s.scalars(select(SenderMemoryRow).where(and_(
                        SenderMemoryRow.sender == sender,
                        SenderMemoryRow.recipient.in_(rcpts)))):
                    s.expunge(row)
                    out.history[row.recipient] = row
                out.wrote_to_sender = sorted(s.scalars(select(SenderMemoryRow.sender).where(
                    and_(SenderMemoryRow.recipient == sender,
                         SenderMemoryRow.sender.in_(rcpts),
                         SenderMemoryRow.outbound.is_(True)))))
            if ids:
                out.replied_ids = sorted(s.scalars(select(SentMessageRow.message_id).where(
                    SentMessageRow.message_id.in_(ids))))
        return out

    def recall_message(self, msg: ParsedMessage) -> Correspondence:
        ids = message_ids_in(msg.header("in-reply-to") or "") + \
            message_ids_in(" ".join(msg.header_all("references")))
        return self.recall(sender_identity(msg), msg.envelope.rcpt_tos, ids)
