"""The mail log: one stable line per message event on logger `mailmoat.mail`.

Postfix-style `key=value` pairs (or one JSON object with `[log] format = "json"`), written
through the ordinary logging setup (stderr under `mailmoat serve`, which journald keeps), so
an operator can route or filter `mailmoat.mail` on its own:

    id=... client=1.2.3.4 from=a@b.test rcpts=1 size=812 action=accept score=0.5 top=...
    id=... to=b@c.test relay=10.0.0.5:25 status=sent dsn=2.0.0 delay=0.04 reply="250 ok"
    id=... action=release by=alice to=b@c.test

A value is quoted when it holds a space, a quote, `=` or nothing; backslash, quote and
every control character are escaped (`\\n`, `\\x1b`), so no sender-supplied text can start a
new line or forge a key. docs/gateway.md ("Logs") lists every line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

MAIL_LOG = logging.getLogger("mailmoat.mail")
REPLY_MAX = 200  # characters of a downstream reply kept in a delivery line
_format = "text"

_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029\\"]')
_NEEDS_QUOTES = re.compile(r'[\s"=\\\x00-\x1f\x7f-\x9f]')
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def set_format(fmt: str) -> None:
    """`text` (key=value, the default) or `json`: from `[log] format`, set by app.build."""
    global _format
    _format = "json" if fmt == "json" else "text"


def escape(value: object) -> str:
    """One value of a key=value line: never a line break, never an unbalanced quote."""
    text = value if isinstance(value, str) else str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    text = _NEEDS_ESCAPE.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}")
                             if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)
    return f'"{text}"'


def format_fields(fields: dict[str, Any], fmt: str | None = None) -> str:
    """The line for one event; None values are left out."""
    items = {k: v for k, v in fields.items() if v is not None}
    if (fmt or _format) == "json":
        return json.dumps(items, ensure_ascii=True, default=str, separators=(",", ":"))
    return " ".join(f"{k}={escape(v)}" for k, v in items.items())


def mail_event(level: int = logging.INFO, **fields: Any) -> None:
    if MAIL_LOG.isEnabledFor(level):
        MAIL_LOG.log(level, "%s", format_fields(fields))


def top_symbols(symbols: Iterable[dict[str, Any]], n: int = 3) -> str:
    """`SYMBOL(score),...` for the `n` strongest symbols of a message-log record."""
    best = sorted(symbols, key=lambda s: -float(s.get("score", 0)))[:n]
    return ",".join(f"{s['name']}({float(s.get('score', 0)):g})" for s in best)


def intake(data: dict[str, Any], *, client: str, mail_from: str, rcpts: int, size: int,
           ms: float, action: str | None = None, code: str | None = None,
           level: int = logging.INFO) -> None:
    """The one line per message at DATA (accepted, rejected, or refused for now)."""
    mail_event(level, id=data.get("id"), client=client, **{"from": mail_from or "<>"},
               rcpts=rcpts, size=size, action=action or data.get("action", "accept"),
               score=f"{float(data.get('score') or 0):.2f}",
               top=top_symbols(data.get("symbols") or []), code=code, ms=f"{ms:.0f}")


STATUS_WORDS = {"delivered": "sent", "deferred": "deferred", "failed": "bounced"}


def delivery(msg_id: str, *, to: str, relay: str, status: str, dsn: str, delay: float,
             reply: str) -> None:
    """One line per recipient per delivery attempt (`status` as in the message log)."""
    if reply.startswith(relay + ": "):
        reply = reply[len(relay) + 2:]
    if len(reply) > REPLY_MAX:
        reply = reply[:REPLY_MAX] + "..."
    mail_event(logging.INFO, id=msg_id, to=to, relay=relay,
               status=STATUS_WORDS.get(status, status), dsn=dsn, delay=f"{delay:.2f}",
               reply=reply)


def quarantine_action(msg_id: str, action: str, by: str, to: Iterable[str] = ()) -> None:
    """`hold` (by the gateway), `release`, `delete`, `purge`."""
    mail_event(logging.INFO, id=msg_id, action=action, by=by, to=",".join(to) or None)


class OutageWatch:
    """A next hop that cannot be reached: WARNING at the first failure of an outage, INFO
    once it answers again, nothing in between (each deferral still has its own line)."""

    def __init__(self) -> None:
        self.down: dict[str, float] = {}  # relay -> time of the first failure

    def failed(self, relay: str, reason: str, now: float) -> None:
        if relay in self.down:
            return
        self.down[relay] = now
        if reason.startswith(relay + ": "):
            reason = reason[len(relay) + 2:]
        if len(reason) > REPLY_MAX:
            reason = reason[:REPLY_MAX] + "..."
        mail_event(logging.WARNING, relay=relay, event="unreachable", reply=reason,
                   note="mail for it waits in the spool and is retried")

    def answered(self, relay: str, now: float) -> None:
        since = self.down.pop(relay, None)
        if since is not None:
            mail_event(logging.INFO, relay=relay, event="reachable",
                       down=f"{now - since:.0f}s")
