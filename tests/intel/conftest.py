"""Threat-intelligence test fixtures: the store's databases (SQLite, and PostgreSQL when it
runs), a real TAXII 2.1 server (medallion), a static HTTP server for feed files, mail
logged through the real message log, and a recorder standing in for recall."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailmoat.config import Config, config_from_dict
from mailmoat.message.model import Direction, Envelope
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter, message_log_data
from tests.conftest import scan_bytes, subprocess_env
from tests.intel.taxii_server import COLLECTION, USERS
from tests.store.conftest import db, pg_database_url, pg_db  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Taxii:
    root: str  # the API root, as [[intel.feeds]] url
    collection: str
    log: Path

    def publish(self, *objects: dict[str, Any]) -> None:
        resp = httpx.post(f"{self.root}collections/{self.collection}/objects/",
                          json={"objects": list(objects)},
                          auth=("publisher", USERS["publisher"]),
                          headers={"Content-Type": "application/taxii+json;version=2.1",
                                   "Accept": "application/taxii+json;version=2.1"},
                          timeout=10)
        assert resp.status_code == 202, resp.text
        assert resp.json()["success_count"] == len(objects), resp.text


@pytest.fixture
def taxii(tmp_path: Path) -> Iterator[Taxii]:
    """medallion on a free loopback port (it prints the port once it listens)."""
    folder = tmp_path / "taxii"
    folder.mkdir()
    log = folder / "server.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.intel.taxii_server", str(folder)],
                                cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=err)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"medallion did not start: {log.read_text()[-2000:]}"
        yield Taxii(f"http://127.0.0.1:{int(line)}/api1/", COLLECTION, log)
    finally:
        proc.terminate()
        proc.wait(10)


class _Handler(http.server.SimpleHTTPRequestHandler):
    hang: threading.Event | None = None
    hang_paths: set[str] = set()

    def do_GET(self) -> None:
        if any(self.path.startswith(p) for p in self.hang_paths) and self.hang is not None:
            self.hang.wait(30)  # a feed that does not answer (released at teardown)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class FileServer:
    url: str
    folder: Path
    hang_paths: set[str] = field(default_factory=set)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """http.server in a thread, serving a folder; paths starting with one of `hang_paths`
    never answer."""
    folder = tmp_path / "www"
    folder.mkdir()
    release = threading.Event()
    served = FileServer("", folder)
    handler = type("Handler", (_Handler,), {"hang": release, "hang_paths": served.hang_paths})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield served
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@dataclass
class RecallCall:
    ids: list[str]
    reason: str
    requested_by: str
    source: str
    approved: bool


class RecallRecorder:
    """Stands in for recall's create_recall_job: records each hand-over, returns a job id."""

    def __init__(self) -> None:
        self.calls: list[RecallCall] = []

    def __call__(self, db: Database, mailmoat_ids: Sequence[str], *, reason: str,
                 requested_by: str, source: str, approved: bool = True) -> str:
        self.calls.append(RecallCall(list(mailmoat_ids), reason, requested_by, source,
                                     approved))
        return f"job-{len(self.calls)}"


@pytest.fixture
def recorder() -> RecallRecorder:
    return RecallRecorder()


def intel_config(tmp_path: Path, db: Database, *feeds: dict[str, Any],
                 **intel: Any) -> Config:
    return config_from_dict({
        "storage": {"data_dir": str(tmp_path / "var"), "database_url": db.url},
        "scan": {"network": False}, "content": {"enabled": False}, "deep": {"mode": "off"},
        "intel": {"feeds": list(feeds), **intel}})


class MailLog:
    """Messages scanned and logged through the real message log, then delivered."""

    def __init__(self, db: Database) -> None:
        self.writer = LogWriter(db)

    async def deliver(self, mid: str, raw: bytes, rcpts: Sequence[str],
                      received_at: float | None = None, delivered: bool = True) -> None:
        out = await scan_bytes(raw, rcpts=tuple(rcpts))
        env = Envelope(mail_from="sender@outside.example", rcpt_tos=tuple(rcpts),
                       client_ip="192.0.2.10", direction=Direction.INBOUND,
                       received_at=received_at or time.time())
        data = message_log_data(mailmoat_id=mid, envelope=env, outcome=out)
        data["recipients"] = {r: "accept" for r in rcpts}
        assert self.writer.log_message(data).result(10) is True
        if delivered:
            self.writer.log_delivery(mid, [(r, "delivered", "250 ok") for r in rcpts],
                                     1).result(10)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def mail_log(db: Database) -> Iterator[MailLog]:
    log = MailLog(db)
    yield log
    log.close()


def stix_indicator(uid: str, pattern: str, *, confidence: int | None = 85,
                   modified: str = "2026-11-01T00:00:00.000Z", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "indicator", "spec_version": "2.1", "id": f"indicator--{uid}",
        "created": "2026-11-01T00:00:00.000Z", "modified": modified,
        "name": "phishing link", "pattern": pattern, "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00Z", **extra}
    if confidence is not None:
        obj["confidence"] = confidence
    return obj
