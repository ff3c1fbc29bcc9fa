"""Sending like a company mail server does: many accounts through one trusted relay."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib
from sqlalchemy import func, select

from mailmoat.store.models import QuarantineRow
from tests.conftest import make_email

TOPICS = ("the budget review", "Thursday's team meeting", "the Henderson project",
          "the supplier contract", "next week's training", "the office move",
          "the quarterly report", "the release plan", "the hiring panel", "the audit notes")
SENTENCES = (
    "Could you take a look at {t} before our call tomorrow?",
    "I have added my comments on {t} to the shared folder.",
    "Thanks for sending the figures for {t} so quickly.",
    "Can we move {t} to Wednesday afternoon?",
    "Maria asked whether {t} is still on schedule.",
    "I will be out on Friday, so let us finish {t} by Thursday.",
    "The draft for {t} looks good to me, just two small changes.",
    "Do you know who is taking the notes for {t}?",
    "I booked the small meeting room for {t}.",
    "Let me know if you need anything else for {t}.",
)


def ordinary_text(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(TOPICS)
    lines = [rng.choice(SENTENCES).format(t=rng.choice(TOPICS)) for _ in range(rng.randint(1, 3))]
    name = rng.choice(("Anna", "Ben", "Chen", "Dana", "Emil", "Fatima", "Georg"))
    return f"About {topic}", f"Hi,\n\n{' '.join(lines)}\n\nCheers,\n{name}\n"


def lure(name: str) -> tuple[str, str]:
    """One text, sent to everyone: plain words the content checks have nothing against, so
    only the account's behaviour can stop it."""
    return ("Holiday rota for next month",
            f"Hi {name},\n\nplease have a look at the holiday rota for next month and tell "
            "me by Friday if your days are right. I would like to send the final version to "
            "the team leads on Monday.\n\nThanks,\nMallory\n")


@dataclass
class Outcome:
    accepted: dict[str, list[str]] = field(default_factory=dict)  # account -> mailmoat ids
    refused: dict[str, list[str]] = field(default_factory=dict)  # account -> replies

    def add(self, other: Outcome) -> None:
        for mine, theirs in ((self.accepted, other.accepted), (self.refused, other.refused)):
            for k, v in theirs.items():
                mine.setdefault(k, []).extend(v)


async def send(port: int, items: list[tuple[str, list[str], bytes]]) -> Outcome:
    """Send each (account, recipients, raw) in turn on one connection from 127.0.0.1, as a
    company mail server relays its queue; a refusal is noted and the next message goes on
    (a real upstream keeps it and retries later)."""
    out = Outcome()
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30,
                        local_hostname="relay.example.test")
    await c.connect()
    await c.ehlo()
    try:
        for account, rcpts, raw in items:
            try:
                _, reply = await c.sendmail(account, rcpts, raw)
                out.accepted.setdefault(account, []).append(reply.rsplit(" ", 1)[1])
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                out.refused.setdefault(account, []).append(str(exc))
                await c.rset()
    finally:
        await c.quit()
    return out


async def relay(port: int, items: list[tuple[str, list[str], bytes]],
                connections: int = 4) -> Outcome:
    """`items` spread over a few parallel connections, in order within each."""
    parts = await asyncio.gather(*(send(port, items[i::connections])
                                   for i in range(connections)))
    out = Outcome()
    for p in parts:
        out.add(p)
    return out


def message(account: str, rcpts: list[str], subject: str, body: str,
            header: str | None = "X-Authenticated-Sender", identity: str | None = None) -> bytes:
    headers = {header: identity or account} if header else {}
    return make_email(subject=subject, body=body, sender=f"<{account}>", to=", ".join(rcpts),
                      headers=headers)


def held_count(db, mail_from: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(QuarantineRow)
                            .where(QuarantineRow.mail_from == mail_from)) or 0)


async def settle(pred, timeout: float = 30.0,
                 what: str | tuple[str, Callable[[], str]] = "condition") -> None:
    """Wait for `pred()`; `what` names it, or (name, a function saying what is there
    instead) for the failure message."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            if isinstance(what, tuple):
                raise AssertionError(f"timed out waiting for {what[0]}: {what[1]()}")
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Org:
    """A company's mail through the real scanner (parse, every check, policy) with an
    account guard of its own, at times the test chooses: no SMTP, no wall clock."""

    def __init__(self, config, db=None, guard=None) -> None:
        from mailmoat.internal.guard import InternalGuard
        from mailmoat.scan.base import BuildContext
        from mailmoat.scan.engine import Scanner

        self.config = config
        self.guard = guard or InternalGuard(config, db)
        self.scanner = Scanner(BuildContext(config=config, network=False, database=db,
                                            extras={"internal_guard": self.guard}))

    async def send(self, account: str, rcpts: list[str], at: float, *, subject: str = "Hello",
                   body: str = "Hi,\nsee you at the meeting.\nAnna\n", via: str = "header",
                   client_ip: str = "127.0.0.1", headers: dict[str, str] | None = None,
                   attachments=None, sender: str | None = None, to: str | None = None,
                   message_id: str | None = None):
        from mailmoat.message.model import Direction, Envelope

        hdrs = dict(headers or {})
        if via == "header":
            hdrs.setdefault("X-Authenticated-Sender", account)
        internal = all(r.endswith("@example.test") for r in rcpts)
        raw = make_email(subject=subject, body=body, sender=sender or f"<{account}>",
                         to=to or ", ".join(rcpts[:50]), headers=hdrs, attachments=attachments)
        if message_id is not None:
            raw = raw.replace(b"<test-1@sender.test>", message_id.encode(), 1)
        env = Envelope(mail_from=account, rcpt_tos=tuple(rcpts), client_ip=client_ip,
                       helo="relay.example.test",
                       auth_user=account if via == "auth" else None,
                       direction=Direction.INTERNAL if internal else Direction.OUTBOUND,
                       received_at=at)
        return await self.scanner.scan(raw, env)

    async def close(self) -> None:
        await self.scanner.close()
        await self.guard.close()


def internal_config(tmp_path=None, **internal):
    from tests.conftest import make_config

    sections = {"smtp": {"trusted_networks": ["127.0.0.1/32"],
                         "internal_domains": ["example.test"]},
                "internal": {"identity_header": "X-Authenticated-Sender", **internal}}
    if tmp_path is not None:
        sections["storage"] = {"data_dir": str(tmp_path / "data")}
    return make_config(**sections)


def names(outcome) -> set[str]:
    return {s.name for s in outcome.result.symbols}
