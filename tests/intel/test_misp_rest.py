"""MISP's REST API through pymisp, against a local fake that speaks the documented endpoints
pymisp calls (servers/getVersion, users/view/me, events/restSearch) and checks the API key.
No MISP server can be started here; the reader is the real code path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from mailmoat.intel.poller import poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.store.models import IntelFeedRow, IntelIndicatorRow
from tests.conftest import make_email
from tests.intel.conftest import intel_config

KEY = "misp-api-key-0123456789abcdef0123456789abcdef"
EVENT = {"Event": {
    "uuid": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d", "info": "Credential phishing kit",
    "threat_level_id": "2", "timestamp": "1790001000", "published": True,
    "Tag": [{"name": 'misp:confidence-level="usually-confident"'}],
    "Attribute": [
        {"uuid": "b0000000-0000-4000-8000-000000000001", "type": "url",
         "value": "https://portal.kit-lure.example/o365/", "to_ids": True,
         "timestamp": "1790001000"},
        {"uuid": "b0000000-0000-4000-8000-000000000002", "type": "ip-dst|port",
         "value": "203.0.113.77|443", "to_ids": True, "timestamp": "1790001000",
         "deleted": True},
    ],
    "Object": [{"name": "email", "Attribute": [
        {"uuid": "b0000000-0000-4000-8000-000000000003", "type": "email-subject",
         "value": "Password expires today", "to_ids": True, "timestamp": "1790001000"}]}],
}}


class FakeMisp(BaseHTTPRequestHandler):
    searches: list[dict[str, Any]] = []

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != KEY:
            self._send(403, {"name": "Authentication failed.", "message": "Authentication failed.",
                             "url": self.path})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path == "/servers/getVersion":
            self._send(200, {"version": "2.5.34", "pymisp_recommended_version": "2.5.34.4",
                             "perm_sync": False, "perm_sighting": False,
                             "perm_galaxy_editor": False, "request_encoding": ["gzip"],
                             "filter_sightings": True})
        elif self.path == "/users/view/me":
            self._send(200, {"User": {"id": "1", "email": "reader@misp.example", "org_id": "1",
                                      "role_id": "3"},
                             "Role": {"id": "3", "name": "User"}, "UserSetting": {}})
        else:
            self._send(404, {"name": "Not Found", "message": "Not Found", "url": self.path})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/events/restSearch":
            self.searches.append(body)
            self._send(200, {"response": [EVENT]})
        else:
            self._send(404, {"name": "Not Found", "message": "Not Found", "url": self.path})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_misp() -> Iterator[str]:
    FakeMisp.searches = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMisp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_misp_rest_search_reads_events_since_the_last_poll(
        db, tmp_path, fake_misp, mail_log, recorder, monkeypatch):
    await mail_log.deliver("k1", make_email(subject="Password expires today",
                                            body="https://portal.kit-lure.example/o365/"),
                           ["ann@example.test"])
    monkeypatch.setenv("MM_TEST_MISP_KEY", KEY)
    config = intel_config(tmp_path, db, {"name": "misp", "kind": "misp", "url": fake_misp,
                                         "api_key_env": "MM_TEST_MISP_KEY",
                                         "auto_recall_confidence": 70, "misp_days": 7})
    feed = intel_settings(config).feeds[0]
    report = poll_feed(config, db, feed, recall=recorder)
    assert report.ok, report.error
    with db.session() as s:
        rows = {r.kind: r for r in s.scalars(select(IntelIndicatorRow))}
        cursor = s.get(IntelFeedRow, "misp").cursor
    assert rows["url"].confidence == 75  # the event's confidence tag over its threat level
    assert rows["ip"].revoked is True and rows["ip"].value == "203.0.113.77"
    assert rows["subject"].value == "password expires today"
    assert rows["url"].group_id == EVENT["Event"]["uuid"]
    assert FakeMisp.searches[0]["timestamp"] == f"{7 * 86400}s"
    assert FakeMisp.searches[0]["published"] in (True, 1)
    assert cursor == "1790001000"
    # url and subject both match k1: two hunts, the first hands it, the second finds it handed
    assert [(c.ids, c.approved) for c in recorder.calls] == [(["k1"], True)]

    poll_feed(config, db, feed, recall=recorder)
    assert FakeMisp.searches[1]["timestamp"] == "1790001000"


def test_a_wrong_misp_key_is_a_clear_error_without_the_key(db, tmp_path, fake_misp, recorder):
    key_file = tmp_path / "misp.key"
    key_file.write_text("not-the-key")
    config = intel_config(tmp_path, db, {"name": "misp", "kind": "misp", "url": fake_misp,
                                         "api_key_file": str(key_file)})
    report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert not report.ok and report.error.startswith("feed misp:"), report.error
    assert "Authentication failed" in report.error or "403" in report.error, report.error
    assert "not-the-key" not in report.error
