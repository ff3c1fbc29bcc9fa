"""Phishing URL lists: from files and from a real HTTP server on loopback, refreshed."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mailmoat.message.parse import make_url
from mailmoat.scan.base import BuildContext
from mailmoat.scan.phishlist import PhishList, normalise_url, parse_list
from mailmoat.scan.pipeline import Pipeline
from mailmoat.scan.urls import build as build_urls
from tests.conftest import make_config, make_email, scan_bytes


def url(u: str):
    out = make_url(u, "text")
    assert out is not None
    return out


def test_entries_are_urls_hosts_or_domains():
    snap = parse_list("# feed\nhttps://Evil.Example.COM/login.php?id=1#frag\nbad-host.test\n\n"
                      "xn--pypal-4ve.com\n")
    assert snap.urls == {"http://evil.example.com/login.php?id=1"}
    assert snap.hosts == {"bad-host.test", "pаypal.com"}


def test_normalise_url_ignores_scheme_default_port_and_fragment():
    assert normalise_url("HTTPS://A.Test:443/x#y") == normalise_url("http://a.test/x") == "http://a.test/x"
    assert normalise_url("http://a.test:8080") == "http://a.test:8080/"


def test_match_kinds(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("https://evil.test/path/login\nbad-host.test\nphish-domain.test\n")
    pl = PhishList([str(f)])
    assert pl.match(url("http://evil.test/path/login")).kind == "url"
    assert pl.match(url("http://evil.test/other")) is None
    assert pl.match(url("https://bad-host.test/anything")).kind == "host"
    hit = pl.match(url("https://a.b.phish-domain.test/x"))
    assert (hit.kind, hit.entry) == ("domain", "phish-domain.test")
    assert pl.match(url("https://test/x")) is None  # never a bare TLD
    assert len(pl) == 3


def test_missing_file_is_reported_not_fatal(tmp_path):
    pl = PhishList([str(tmp_path / "nope.txt")])
    assert len(pl) == 0
    assert "FileNotFoundError" in pl.errors[str(tmp_path / "nope.txt")]


async def test_list_from_file_through_the_scanner(tmp_path):
    f = tmp_path / "phish.txt"
    f.write_text("login-verify.test\n")
    cfg = make_config(phishing={"lists": [f"file:{f}"]})
    out = await scan_bytes(make_email(body="https://secure.login-verify.test/a\n"), cfg)
    sym = out.result.get("URL_PHISHLIST")
    assert sym is not None
    assert sym.reason == (f"https://secure.login-verify.test/a is on phishing list file:{f} "
                          "(domain login-verify.test)")


class _Feed(BaseHTTPRequestHandler):
    body = b""
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def feed_server():
    handler = type("Feed", (_Feed,), {"body": b"first-phish.test\n", "hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_list_from_http_is_loaded_and_refreshed(feed_server):
    server, handler = feed_server
    feed_url = f"http://127.0.0.1:{server.server_address[1]}/feed.txt"
    cfg = make_config(phishing={"lists": [feed_url], "refresh_interval": 0.2})
    # Network on for this family only: the list is the one thing it fetches.
    check = build_urls(BuildContext(config=cfg, network=True))[0]
    pipeline = Pipeline([check])
    try:
        from mailmoat.message.parse import parse_message

        first = parse_message(make_email(body="http://first-phish.test/x\n"))
        second = parse_message(make_email(body="http://www.second-phish.test/y\n"))
        await pipeline.scan(first)  # starts the refresh loop
        for _ in range(50):
            if (await pipeline.scan(first)).has("URL_PHISHLIST"):
                break
            await asyncio.sleep(0.05)
        assert (await pipeline.scan(first)).has("URL_PHISHLIST")
        assert not (await pipeline.scan(second)).has("URL_PHISHLIST")
        handler.body = b"second-phish.test\n"
        for _ in range(50):
            if (await pipeline.scan(second)).has("URL_PHISHLIST"):
                break
            await asyncio.sleep(0.05)
        r = await pipeline.scan(second)
        assert r.get("URL_PHISHLIST").reason.endswith(f"on phishing list {feed_url} "
                                                      "(domain second-phish.test)")
        assert not (await pipeline.scan(first)).has("URL_PHISHLIST")
        assert handler.hits >= 2
    finally:
        await pipeline.close()
    assert check.phishlist._task is None  # the refresh task is stopped on close


async def test_failed_refresh_keeps_last_good_copy(feed_server):
    server, handler = feed_server
    feed_url = f"http://127.0.0.1:{server.server_address[1]}/feed.txt"
    pl = PhishList([feed_url], refresh_interval=0)
    await pl.refresh()
    assert pl.match(url("http://first-phish.test/")) is not None
    server.shutdown()
    server.server_close()
    await pl.refresh()
    assert feed_url in pl.errors
    assert pl.match(url("http://first-phish.test/")) is not None


async def test_http_lists_are_not_fetched_with_network_off(feed_server):
    server, handler = feed_server
    pl = PhishList([f"http://127.0.0.1:{server.server_address[1]}/f"], network=False)
    await pl.refresh()
    assert handler.hits == 0 and len(pl) == 0
