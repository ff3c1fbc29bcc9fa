"""A real gateway (`mailmoat serve` in a subprocess) whose downstream hands every delivered
message to Dovecot over LMTP, for the recall tests: mail reaches the mailboxes the way it
does in production (SMTP through mailmoat, then the mail store's own delivery agent)."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailmoat.store.db import Database
from mailmoat.store.models import RecipientRow
from tests.e2e.gateway_proc import free_port, start_gateway, start_sink_thread, stop_gateway
from tests.recall.dovecot import MASTER_PASSWORD, MASTER_USER, Dovecot


class LmtpBridge:
    """The gateway's downstream: takes each message over SMTP and delivers it into the
    Dovecot mailboxes of its recipients over LMTP; remembers each X-Mailmoat-ID."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot
        self.lock = threading.Lock()
        self.delivered: dict[str, set[str]] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content
        mmid = BytesHeaderParser().parsebytes(raw).get("X-Mailmoat-ID", "")
        try:
            self.dovecot.lmtp_deliver(raw, list(envelope.rcpt_tos), envelope.mail_from)
        except (OSError, smtplib.SMTPException, AssertionError) as exc:
            return f"451 4.3.0 LMTP delivery failed: {exc}"
        with self.lock:
            self.delivered.setdefault(mmid, set()).update(r.lower() for r in envelope.rcpt_tos)
        return "250 2.0.0 delivered"


def recall_toml(dovecot: Dovecot, secret: Path, *, port: int | None = None,
                max_connections: int = 4, worker_interval: float = 3600,
                extra: str = "") -> str:
    """`[recall]` for Dovecot. The gateway's own worker looks for jobs at start and then
    every `worker_interval` seconds: by default rarely, so tests that run a job themselves
    are not raced by it."""
    return f"""
[recall]
lease_seconds = 2
worker_interval = {worker_interval}
[recall.imap]
host = "127.0.0.1"
port = {port or dovecot.imap_port}
tls = "none"
master_user = "{MASTER_USER}"
master_password_file = "{secret}"
folder = "Recalled"
domains = []
max_connections = {max_connections}
retries = 1
backoff = 0.1
timeout = 10
{extra}
"""


def write_gateway_config(tmp: Path, dovecot: Dovecot, smtp_port: int, downstream: int,
                         recall: str = "", web_port: int | None = None) -> Path:
    """The gateway's config; with `web_port`, it serves the console there too."""
    tmp.mkdir(parents=True, exist_ok=True)
    web = f'listen = "127.0.0.1:{web_port}"' if web_port else "enabled = false"
    secret = tmp / "imap-master.secret"
    secret.write_text(MASTER_PASSWORD + "\n")
    cfg = tmp / "mailmoat.toml"
    cfg.write_text(f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "mx.gateway.test"
relay_domains = ["example.test"]
[delivery]
downstream = "127.0.0.1:{downstream}"
retry_schedule = [1]
[storage]
data_dir = "{tmp / 'data'}"
[web]
{web}
[scan]
network = false
[content]
enabled = false
[deep]
mode = "off"
{recall or recall_toml(dovecot, secret)}
""")
    return cfg


class Gateway:
    def __init__(self, tmp: Path, dovecot: Dovecot, bridge: LmtpBridge, config: Path,
                 smtp_port: int) -> None:
        self.tmp = tmp
        self.dovecot = dovecot
        self.bridge = bridge
        self.config = config
        self.smtp_port = smtp_port
        self.web_url = ""  # the console's base URL, when the config serves it
        self.db = Database(f"sqlite:///{tmp / 'data' / 'mailmoat.db'}")

    def send(self, raw: bytes, recipients: list[str], sender: str = "lure@phish.test",
             timeout: float = 30.0) -> str:
        """Send through the gateway; wait until every recipient has it in Dovecot and the
        message log says delivered; return its X-Mailmoat-ID."""
        before = {k: set(v) for k, v in self.bridge.delivered.items()}
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
            smtp.sendmail(sender, recipients, raw)
        want = {r.lower() for r in recipients}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.bridge.lock:
                new = [k for k, v in self.bridge.delivered.items()
                       if want <= v and not want <= before.get(k, set())]
            if new:
                mmid = new[0]
                with self.db.session() as s:
                    done = set(s.scalars(select(RecipientRow.address).where(
                        RecipientRow.message_id == mmid,
                        RecipientRow.delivered_at.is_not(None))))
                if {d.lower() for d in done} >= want:
                    return mmid
            time.sleep(0.05)
        raise AssertionError(f"not delivered to {recipients} within {timeout}s")


@contextmanager
def running_gateway(tmp: Path, dovecot: Dovecot) -> Iterator[Gateway]:
    bridge = LmtpBridge(dovecot)
    sink = start_sink_thread(bridge)
    smtp_port = free_port()
    cfg = write_gateway_config(tmp, dovecot, smtp_port, int(sink.port))
    proc = start_gateway(cfg, smtp_port, tmp / "gateway.log")
    try:
        yield Gateway(tmp, dovecot, bridge, cfg, smtp_port)
    finally:
        stop_gateway(proc)
        sink.stop()


def with_recall(config: Path, out: Path, recall: str) -> Path:
    """A copy of the gateway's config with another [recall] (same database and mail)."""
    text = config.read_text()
    out.write_text(text[:text.index("[recall]")] + recall)
    return out
