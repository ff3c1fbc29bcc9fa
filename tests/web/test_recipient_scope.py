"""Blind copies stay blind: every API and page shows a caller only the recipients in their
scope (issue 21, item 4), and the session cookie is Secure behind an https public URL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mailmoat.store.quarantine import release_message
from mailmoat.web.app import create_app
from tests.conftest import make_email
from tests.web.conftest import bearer, login
from tests.web.fixtures import add_message, seed
from tests.web.test_pages import form_login

# Bob is the only visible addressee; the CEO (another domain) and carol (a.test) are Bcc.
RCPTS = ["bob@b.test", "ceo-secret@corp.test", "carol@a.test"]
HELD = "m0100bcc"
DELIVERED = "m0101bccdelivered"


def _add_bcc_mail(env) -> None:
    raw = make_email(subject="Quarterly numbers", to="bob@b.test")
    add_message(env.config, env.db, HELD, rcpts=RCPTS, subject="Quarterly numbers", hold=True, raw=raw)
    add_message(env.config, env.db, DELIVERED, rcpts=RCPTS, subject="Board minutes", category="clean",
                action="accept", score=0.1, status="delivered")


def _everything_bob_sees(app, env) -> list[str]:
    """The text of every API answer and page that could name a recipient of the mail."""
    _add_bcc_mail(env)
    bob = bearer(app, env, "bob")
    pages, _ = form_login(app, "bob@b.test")
    out = [bob.get(f"/api/v1/messages/{HELD}").text, bob.get(f"/api/v1/messages/{DELIVERED}").text,
           bob.get("/api/v1/quarantine").text, bob.get("/api/v1/quarantine?include_done=true").text,
           pages.get(f"/messages/{HELD}").text, pages.get(f"/messages/{DELIVERED}").text,
           pages.get("/quarantine").text, pages.get(f"/quarantine/{HELD}/preview").text]
    assert all(t for t in out)
    return out


def test_user_sees_only_own_address_in_api_and_pages(app, env):
    for text in _everything_bob_sees(app, env):
        assert "ceo-secret" not in text and "carol@a.test" not in text
    bob = bearer(app, env, "bob")
    held = bob.get(f"/api/v1/messages/{HELD}").json()
    assert held["quarantine"]["held_for"] == ["bob@b.test"]
    assert [r["address"] for r in held["recipients"]] == ["bob@b.test"]
    items = {i["message"]["id"]: i for i in bob.get("/api/v1/quarantine").json()["items"]}
    assert items[HELD]["quarantine"]["held_for"] == ["bob@b.test"]
    delivered = bob.get(f"/api/v1/messages/{DELIVERED}").json()
    assert {e["address"] for e in delivered["events"]} == {"bob@b.test"}
    assert [r["address"] for r in delivered["recipients"]] == ["bob@b.test"]
    # The pages say who it is held for: bob, and only bob.
    pages, _ = form_login(app, "bob@b.test")
    assert "bob@b.test" in pages.get("/quarantine").text
    assert "Held in quarantine</b> for bob@b.test (" in pages.get(f"/messages/{HELD}").text


def test_domain_admin_sees_only_their_domains_recipients(app, env):
    _add_bcc_mail(env)
    dadmin = bearer(app, env, "dadmin")  # postmaster@a.test, domain a.test
    held = dadmin.get(f"/api/v1/messages/{HELD}").json()
    assert held["quarantine"]["held_for"] == ["carol@a.test"]
    assert [r["address"] for r in held["recipients"]] == ["carol@a.test"]
    items = {i["message"]["id"]: i for i in dadmin.get("/api/v1/quarantine").json()["items"]}
    assert items[HELD]["quarantine"]["held_for"] == ["carol@a.test"]
    delivered = dadmin.get(f"/api/v1/messages/{DELIVERED}").json()
    assert {e["address"] for e in delivered["events"]} == {"carol@a.test"}
    c, _ = login(app, "postmaster@a.test")
    for url in (f"/messages/{HELD}", "/quarantine", f"/messages/{DELIVERED}"):
        page = c.get(url).text
        assert "bob@b.test" not in page and "ceo-secret" not in page, url


def test_admin_sees_every_recipient(app, env):
    _add_bcc_mail(env)
    admin = bearer(app, env, "admin")
    assert admin.get(f"/api/v1/messages/{HELD}").json()["quarantine"]["held_for"] == RCPTS
    items = {i["message"]["id"]: i for i in admin.get("/api/v1/quarantine").json()["items"]}
    assert items[HELD]["quarantine"]["held_for"] == RCPTS


def test_who_released_does_not_name_a_hidden_recipient(app, env):
    _add_bcc_mail(env)
    release_message(env.config, env.db, HELD, "admin@corp.test", ["bob@b.test", "carol@a.test"])
    release_message(env.config, env.db, HELD, "digest-link:ceo-secret@corp.test", ["ceo-secret@corp.test"])
    bob = bearer(app, env, "bob")
    items = {i["message"]["id"]: i for i in bob.get("/api/v1/quarantine?include_done=true").json()["items"]}
    assert items[HELD]["quarantine"]["released_by"] == "another recipient"
    admin = bearer(app, env, "admin")
    assert admin.get(f"/api/v1/messages/{HELD}").json()["quarantine"]["released_by"] == \
        "digest-link:ceo-secret@corp.test"


def _cookie_of(app) -> str:
    c = TestClient(app, base_url="https://testserver")
    r = c.post("/api/v1/auth/login", json={"email": "alice@a.test", "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    return r.headers["set-cookie"].lower()


def test_session_cookie_is_secure_with_an_https_public_url(tmp_path):
    sd = seed(tmp_path / "https", web={"public_url": "https://mail-console.example.test"})
    try:
        assert "; secure" in _cookie_of(create_app(sd.config, sd.db))
    finally:
        sd.db.dispose()
    sd = seed(tmp_path / "http", web={"public_url": "http://127.0.0.1:8025"})
    try:
        assert "; secure" not in _cookie_of(create_app(sd.config, sd.db))
    finally:
        sd.db.dispose()
