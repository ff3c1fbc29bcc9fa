"""Alerts when an account is flagged: always a line in the gateway's log; with the
settings, a syslog line, a webhook (POST, JSON body) and a mail to the administrators.

Each goes out on its own task and fails alone (a log line says so); none is in the way of
the message or of the others. The webhook URL comes from the environment variable named
by `alert_webhook_env` (such URLs carry tokens), and only its host is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit

from mailmoat.config import Config
from mailmoat.internal.settings import InternalSettings
from mailmoat.relay.routes import parse_hostport

log = logging.getLogger("mailmoat.internal.alert")


@dataclass(frozen=True)
class Alert:
    account: str
    action: str  # tag | hold | throttle | suspend
    until: float | None
    incident_id: int | None
    score: float
    at: float
    source: str  # how the account is known: smtp_auth | header | envelope
    client_ip: str
    signals: list[dict[str, Any]] = field(default_factory=list)  # [{name, score, reason}]
    node: str = ""

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["event"] = "account_flagged"
        d["at"] = datetime.fromtimestamp(self.at, UTC).isoformat()
        d["until"] = (datetime.fromtimestamp(self.until, UTC).isoformat()
                      if self.until is not None else None)
        return d

    def summary(self) -> str:
        until = "until released" if self.until is None else \
            f"until {datetime.fromtimestamp(self.until, UTC):%Y-%m-%d %H:%M} UTC"
        what = {"tag": "flagged", "hold": f"flagged, its mail held {until}",
                "throttle": f"flagged, throttled {until}",
                "suspend": f"flagged, suspended {until}"}.get(self.action, self.action)
        return f"account {self.account} {what} (incident {self.incident_id}, score {self.score:g})"


class Alerter:
    def __init__(self, config: Config, settings: InternalSettings) -> None:
        self.config = config
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._syslog: logging.Handler | None = None
        self.sent: list[Alert] = []  # the last few, for the console and tests
        url = os.environ.get(settings.alert_webhook_env, "") if settings.alert_webhook_env else ""
        self.webhook = url.strip()
        if settings.alert_webhook_env and not self.webhook:
            log.warning("[internal] alert_webhook_env names %s, which is not set: no webhook "
                        "alerts", settings.alert_webhook_env)

    def send(self, alert: Alert) -> None:
        """Start every configured alert for `alert`; returns at once."""
        reasons = "; ".join(f"{s['name']}: {s['reason']}" for s in alert.signals[:4])
        log.warning("%s: %s", alert.summary(), reasons)
        self.sent = [*self.sent[-99:], alert]
        if self.settings.alert_syslog:
            self._spawn(asyncio.to_thread(self._to_syslog, alert, reasons))
        if self.webhook:
            self._spawn(self._to_webhook(alert))
        if self.settings.alert_mail_to:
            self._spawn(self._to_mail(alert))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for alerts still going out (at shutdown, and in tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _to_syslog(self, alert: Alert, reasons: str) -> None:
        try:
            if self._syslog is None:
                target = self.settings.alert_syslog
                if target.startswith("/"):
                    address: Any = target
                else:
                    address = parse_hostport(target)
                self._syslog = logging.handlers.SysLogHandler(
                    address=address, facility=logging.handlers.SysLogHandler.LOG_MAIL,
                    socktype=socket.SOCK_DGRAM)
            record = logging.LogRecord("mailmoat", logging.WARNING, __file__, 0,
                                       "mailmoat: %s: %s", (alert.summary(), reasons), None)
            self._syslog.emit(record)
        except Exception as exc:
            log.error("syslog alert for %s failed: %s", alert.account, exc)

    async def _to_webhook(self, alert: Alert) -> None:
        import httpx

        host = urlsplit(self.webhook).hostname or "?"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.post(self.webhook, json=alert.as_json())
            if r.status_code >= 300:
                log.error("webhook alert for %s to %s answered %d", alert.account, host,
                          r.status_code)
        except Exception as exc:
            log.error("webhook alert for %s to %s failed: %s", alert.account, host,
                      type(exc).__name__)

    async def _to_mail(self, alert: Alert) -> None:
        import aiosmtplib

        cfg = self.config
        msg = EmailMessage()
        sender = f"postmaster@{cfg.internal_domains[0] if cfg.internal_domains else 'localhost'}"
        msg["From"] = f"mailmoat <{sender}>"
        msg["To"] = ", ".join(self.settings.alert_mail_to)
        msg["Subject"] = f"[mailmoat] {alert.summary()}"
        msg["Message-ID"] = make_msgid(domain=cfg.smtp.hostname)
        msg["Auto-Submitted"] = "auto-generated"
        lines = [alert.summary(), "",
                 f"How the account is known: {alert.source}; client {alert.client_ip or '-'}",
                 f"When: {datetime.fromtimestamp(alert.at, UTC):%Y-%m-%d %H:%M:%S} UTC", "",
                 "Why:"]
        lines += [f"  {s['name']} ({s['score']:g}): {s['reason']}" for s in alert.signals]
        lines += ["", f"Review it: mailmoat account incident {alert.incident_id}",
                  f"Release it: mailmoat account release {alert.account}"]
        msg.set_content("\n".join(lines) + "\n")
        host, port = parse_hostport(cfg.delivery.downstream)
        try:
            await aiosmtplib.send(msg, hostname=host, port=port, start_tls=False,
                                  timeout=cfg.delivery.connect_timeout,
                                  local_hostname=cfg.smtp.hostname)
        except Exception as exc:
            log.error("mail alert for %s to %s:%d failed: %s", alert.account, host, port, exc)

    def close(self) -> None:
        if self._syslog is not None:
            self._syslog.close()
