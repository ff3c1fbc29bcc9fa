"""How the console reads, over real HTTP: error pages in HTML for a browser (JSON for API
clients), time charts with a labelled y axis of round numbers, and the dashboard saying when
no antivirus answers or the downstream cannot be reached (with the start-up log line)."""

from __future__ import annotations

import logging
import re
import socket

import httpx
import pytest

from mailmoat.web import health
from mailmoat.web.app import create_app
from tests.clamd import clamd_server  # noqa: F401  (session-scoped real clamd)
from tests.web.fixtures import seed
from tests.web.live import live_console
from tests.web.sink import Sink
from tests.web.test_users import form_login

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _fresh_probes():
    health._cache.clear()
    yield
    health._cache.clear()


def test_error_pages_are_html_for_browsers_json_for_api(env, app):
    with live_console(app) as base:
        bob = form_login(base, "bob@b.test")
        r = bob.get("/policy", headers=BROWSER)
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
        assert 'id="error-title"' in r.text and "administrators only" in r.text and 'id="nav"' not in r.text
        r = bob.get("/messages/m0001spamalice", headers=BROWSER)
        assert r.status_code == 404 and "Not found" in r.text and "no message m0001spamalice visible to you" in r.text
        r = bob.get("/no/such/page", headers=BROWSER)
        assert r.status_code == 404 and 'id="error-home"' in r.text
        # Scripts and API clients keep JSON.
        assert bob.get("/no/such/page").json() == {"detail": "Not Found"}
        r = bob.get("/api/v1/users", headers=BROWSER)
        assert r.status_code == 403 and r.json() == {"detail": "administrators only"}


def test_time_charts_have_a_labelled_y_axis(env, app):
    with live_console(app) as base:
        page = form_login(base, "admin@corp.test").get("/").text
        css = httpx.get(f"{base}/static/app.css").text
    volume = page.split('id="chart-volume"')[1].split("</svg>")[0]
    assert 'class="chart wide"' in volume  # as wide as its card
    assert re.search(r'class="y-title"[^>]*>messages per hour<', volume)
    ticks = [int(t) for t in re.findall(r'class="y-tick"[^>]*>(\d+)<', volume)]
    assert ticks[0] == 0 and len(ticks) >= 3 and ticks == sorted(ticks)
    bars = [int(n) for n in re.findall(r'data-count="(\d+)"', volume)]
    assert ticks[-1] >= max(bars)
    # One colour per category: the phishing bars are the phishing badge's colour.
    assert re.search(r'data-category="phishing" data-count="\d+"[^>]*fill="#c2185b"', volume)
    assert ".b-phishing{background:#c2185b}" in css
    assert "throughput" not in page and "busiest hour" in page


def test_dashboard_says_antivirus_off_and_downstream_unreachable(tmp_path):
    env = seed(tmp_path / "d", delivery={"downstream": f"127.0.0.1:{closed_port()}"})
    with live_console(create_app(env.config, env.db)) as base:
        admin = form_login(base, "admin@corp.test")
        page = admin.get("/").text
        user_page = form_login(base, "alice@a.test").get("/").text
    health_line = re.search(r'<p id="health">(.*?)</p>', page, re.S).group(1)
    assert '<span class="status-off" id="health-1"' in health_line and "antivirus off" in health_line
    assert "downstream unreachable" in health_line and "mail waits in the spool" in health_line
    assert 'id="health"' not in user_page  # administrators' business
    env.db.dispose()


async def test_the_gateway_says_antivirus_off_at_start_without_the_console(tmp_path, caplog):
    from tests.smtp.helpers import gateway_config, running_gateway, wait_until

    cfg = gateway_config(tmp_path, closed_port())  # [web] enabled = false, no [antivirus]
    with caplog.at_level(logging.WARNING, logger="mailmoat.web.health"):
        async with running_gateway(cfg):
            await wait_until(lambda: any("antivirus off" in r.getMessage()
                                         for r in caplog.records), what="the start-up line")
    lines = [r.getMessage() for r in caplog.records if "antivirus off" in r.getMessage()]
    assert len(lines) == 1 and "[antivirus] clamd is empty" in lines[0]


def test_dashboard_with_clamd_and_downstream_answering(tmp_path, clamd_server, caplog):  # noqa: F811
    with Sink() as sink:
        env = seed(tmp_path / "d", delivery={"downstream": f"127.0.0.1:{sink.port}"},
                   antivirus={"clamd": clamd_server.tcp_address})
        with caplog.at_level(logging.WARNING, logger="mailmoat.web.health"):
            with live_console(create_app(env.config, env.db)) as base:
                page = form_login(base, "admin@corp.test").get("/").text
        env.db.dispose()
    health_line = re.search(r'<p id="health">(.*?)</p>', page, re.S).group(1)
    assert "antivirus on" in health_line and "downstream reachable" in health_line
    assert "status-off" not in health_line
    assert [r for r in caplog.records if "antivirus off" in r.getMessage()] == []
