"""A flagged account is announced: a webhook (JSON body) to a real HTTP server, a syslog
datagram to a real UDP socket, a mail through the real downstream; each once per incident."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from tests.conftest import make_config
from tests.internal.helpers import Org

T0 = 1_780_000_000.0


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def test_webhook_syslog_and_mail_alerts(sink, monkeypatch):
    http = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    monkeypatch.setenv("MAILMOAT_TEST_HOOK", f"http://127.0.0.1:{http.server_port}/alert?t=s3cret")
    cfg = make_config(
        smtp={"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
        delivery={"downstream": f"127.0.0.1:{sink.port}"},
        internal={"identity_header": "X-Authenticated-Sender",
                  "alert_webhook_env": "MAILMOAT_TEST_HOOK",
                  "alert_syslog": f"127.0.0.1:{udp.getsockname()[1]}",
                  "alert_mail_to": ["soc@example.test"]})
    org = Org(cfg)
    Hook.received.clear()
    try:
        for i in range(25):
            await org.send("m@example.test", [f"c{i}@example.test"], T0 + i, subject="Rota",
                           body="Hi,\nplease check the rota.\n")
        await org.guard.alerter.drain()
        assert len(Hook.received) == 1  # once per incident, not per refused message
        body = Hook.received[0]["body"]
        assert Hook.received[0]["type"] == "application/json"
        assert body["event"] == "account_flagged" and body["account"] == "m@example.test"
        assert body["action"] == "suspend" and body["until"] is None
        assert body["signals"][0]["name"] == "INTERNAL_FANOUT" and body["incident_id"] == 1
        line = udp.recv(4096).decode()
        assert line.startswith("<20>")  # facility mail (2), severity warning (4)
        assert "account m@example.test flagged, suspended until released" in line
        await sink.wait_for(1)
        alert = sink.parsed()[0]
        assert sink.messages[0][1] == ["soc@example.test"]
        assert alert["Subject"].startswith("[mailmoat] account m@example.test flagged")
        assert "mailmoat account release m@example.test" in alert.get_payload()
    finally:
        await org.close()
        http.shutdown()
        udp.close()


async def test_no_webhook_url_in_the_environment_is_said_once(caplog, monkeypatch):
    monkeypatch.delenv("MAILMOAT_TEST_HOOK_UNSET", raising=False)
    cfg = make_config(internal={"alert_webhook_env": "MAILMOAT_TEST_HOOK_UNSET"})
    org = Org(cfg)
    await org.close()
    assert "names MAILMOAT_TEST_HOOK_UNSET, which is not set" in caplog.text
