"""Digests: multipart mail per user to a real SMTP sink; signed one-click links that view
and release without login, and cannot be forged, redirected or replayed."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from mailmoat.spool.queue import Spool
from mailmoat.web.app import create_app
from mailmoat.web.digest import LinkError, collect, make_token, read_token, send_digests
from tests.web.conftest import bearer
from tests.web.fixtures import seed
from tests.web.sink import Sink


def test_digest_lists_held_mail_per_user(env):
    digests = {addr: (msg, n) for addr, msg, n in collect(env.config, env.db)}
    assert set(digests) == {"alice@a.test", "bob@b.test"}
    msg, n = digests["bob@b.test"]
    assert n == 2 and msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Verify your account" in text and "For both of you" in text and "Cheap pills" not in text
    assert html.count("/d/") == 4 and "Verify your account" in html


def test_digest_send_over_smtp_and_links_work(tmp_path):
    with Sink() as sink:
        env = seed(tmp_path / "d", delivery={"downstream": f"127.0.0.1:{sink.port}"},
                   web={"public_url": "http://console.test"}, digest={"from_address": "q@corp.test"})
        users, n = send_digests(env.config, env.db)
        assert (users, n) == (2, 6)
        assert sorted(m[1][0] for m in sink.messages) == ["alice@a.test", "bob@b.test"]
        bob = next(i for i, m in enumerate(sink.messages) if m[1] == ["bob@b.test"])
        mail = sink.parsed(bob)
        assert mail["From"] == "q@corp.test"
        text = mail.get_body(("plain",)).get_content()
    links = re.findall(r"(View|Release|Request release): +http://console\.test(/d/\S+)", text)
    # bob's spam is released by its link; his phish's link only asks an administrator.
    assert [k for k, _ in links] == ["View", "Release", "View", "Request release"]
    app = create_app(env.config, env.db)
    c = TestClient(app)
    view = c.get(links[0][1])
    assert view.status_code == 200 and 'id="link-preview"' in view.text
    assert view.headers["content-security-policy"].startswith("default-src 'none'")
    rel_path = next(p for kind, p in links if kind == "Release")
    page = c.get(rel_path)  # a GET (e.g. a link scanner) does not release
    assert 'id="link-release"' in page.text and Spool(env.config.data_dir / "spool").ids("incoming") == []
    done = c.post(rel_path)
    assert done.status_code == 200 and "Released to bob@b.test" in done.text
    sp = Spool(env.config.data_dir / "spool")
    [sid] = sp.ids("incoming")
    assert sp.read("incoming", sid)[0].rcpt_tos == ["bob@b.test"]
    again = c.post(rel_path)  # replay
    assert again.status_code == 410 and "already used" in again.text
    assert c.get(rel_path).status_code == 410
    assert len(sp.ids("incoming")) == 1
    ask_path = next(p for kind, p in links if kind == "Request release")
    page = c.get(ask_path)
    assert 'id="link-request"' in page.text and 'id="link-release"' not in page.text
    done = c.post(ask_path)
    assert done.status_code == 200 and "Asked an administrator to release it" in done.text
    assert len(sp.ids("incoming")) == 1  # nothing released
    from mailmoat.web.auth import Principal
    from mailmoat.web.release_requests import list_requests

    admin = Principal(id=1, email="admin@corp.test", role="admin")
    [req] = list_requests(env.db, admin, "pending")
    assert (req.message_id, req.requested_by, req.recipients) == ("m0002phishbob", "bob@b.test", ["bob@b.test"])


def test_dry_run_and_api_send(env, app):
    assert send_digests(env.config, env.db, dry_run=True) == (2, 6)
    r = bearer(app, env, "admin").post("/api/v1/digest/send", params={"dry_run": True})
    assert r.json() == {"users": 2, "messages": 6, "dry_run": True}
    assert bearer(app, env, "alice").post("/api/v1/digest/send").status_code == 403
    # The downstream is down: a clear error, not a crash.
    r = bearer(app, env, "admin").post("/api/v1/digest/send")
    assert r.status_code == 502 and "cannot send digests" in r.json()["detail"]


def test_links_cannot_be_forged_or_redirected(env, app):
    c = TestClient(app)
    tok = make_token(env.config, "m0002phishbob", "bob@b.test", "release")
    # Tampering with any character breaks the signature.
    head, _, tail = tok.rpartition(".")
    forged = head + "." + ("A" if tail[0] != "A" else "B") + tail[1:]
    assert c.post(f"/d/{forged}").status_code == 400
    # A token signed with another key is rejected.
    from itsdangerous import URLSafeTimedSerializer

    other = URLSafeTimedSerializer("another-key", salt="mailmoat.digest-link.v1").dumps(
        {"m": "m0001spamalice", "r": "bob@b.test", "a": "release", "n": "x"})
    assert c.post(f"/d/{other}").status_code == 400
    # A valid link for bob cannot release a message not held for bob.
    tok2 = make_token(env.config, "m0001spamalice", "bob@b.test", "release")
    r = c.post(f"/d/{tok2}")
    assert r.status_code == 410 and Spool(env.config.data_dir / "spool").ids("incoming") == []
    # A view link does not release.
    view = make_token(env.config, "m0002phishbob", "bob@b.test", "view")
    assert c.post(f"/d/{view}").status_code == 400


def test_links_expire(env, monkeypatch):
    tok = make_token(env.config, "m0002phishbob", "bob@b.test", "release")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 73 * 3600)
    with pytest.raises(LinkError) as ei:
        read_token(env.config, tok)
    assert ei.value.status == 410


def test_digest_escapes_hostile_subjects(env):
    from tests.web.fixtures import add_message

    add_message(env.config, env.db, "m0099xss", rcpts=["bob@b.test"], hold=True,
                subject='<script>alert(1)</script><img src=x onerror=alert(2)>',
                sender="evil@bad.test")
    msg = {addr: m for addr, m, _ in collect(env.config, env.db)}["bob@b.test"]
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html
