"""Accounts: `mailmoat user passwd|disable|enable|delete`, /api/v1/users and the Users page,
against a console served over real HTTP. Every change is audited; a disabled account can
neither log in nor use its tokens; the last administrator cannot lock everyone out."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from mailmoat.config import load_config
from mailmoat.store.db import Database
from mailmoat.store.models import AuditRow
from mailmoat.store.webmodels import ApiTokenRow, UserRow
from mailmoat.web.app import create_app
from mailmoat.web.auth import create_token
from tests.web.fixtures import PASSWORD
from tests.web.live import live_console
from tests.web.test_cli import run, run_subprocess


def audit_rows(db) -> list[tuple[str, str, str, dict]]:
    with db.session() as s:
        return [(r.actor, r.action, r.target, dict(r.details or {}))
                for r in s.scalars(select(AuditRow).order_by(AuditRow.id))]


def can_log_in(base: str, email: str, password: str) -> bool:
    r = httpx.post(f"{base}/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def session(base: str, email: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=base)
    r = c.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


@pytest.fixture
def live(app):
    with live_console(app) as base:
        yield base


def test_cli_passwd_disable_enable_delete(tmp_path):
    cfg = tmp_path / "mailmoat.toml"
    cfg.write_text('[storage]\ndata_dir = "data"\n')
    assert run(cfg, "user", "add", "root@corp.test", "--role", "admin", "--password-stdin",
               stdin="first password\n").returncode == 0
    assert run(cfg, "user", "add", "ann@corp.test", "--password-stdin", stdin="ann password\n").returncode == 0
    config = load_config(cfg)
    db = Database(config.database_url)
    with db.session() as s:
        ann_id = s.scalar(select(UserRow.id).where(UserRow.email == "ann@corp.test"))
    token = create_token(db, ann_id, "script")
    with live_console(create_app(config, db)) as base:
        me = lambda: httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me().status_code == 200
        # passwd: a real process, the password piped with --password-stdin.
        r = run_subprocess(cfg, "user", "passwd", "Root@Corp.test", "--password-stdin", stdin="second password\n")
        assert r.returncode == 0 and "new password set for root@corp.test" in r.stdout, r.stderr
        assert not can_log_in(base, "root@corp.test", "first password")
        assert can_log_in(base, "root@corp.test", "second password")
        # Never an empty or short password, never one guessed from a pipe without the flag.
        r = run(cfg, "user", "passwd", "root@corp.test", "--password-stdin", stdin="\n")
        assert r.returncode == 2 and "at least 8 characters" in r.stderr
        r = run_subprocess(cfg, "user", "passwd", "root@corp.test", stdin="third password\n")
        assert r.returncode == 2 and "--password-stdin" in r.stderr
        assert can_log_in(base, "root@corp.test", "second password")
        r = run(cfg, "user", "passwd", "nobody@corp.test", "--password-stdin", stdin="long enough\n")
        assert r.returncode == 1 and "no user nobody@corp.test" in r.stderr
        # disable: no login, no token; enable: both work again.
        r = run(cfg, "user", "disable", "ann@corp.test")
        assert r.returncode == 0 and "disabled ann@corp.test" in r.stdout
        assert not can_log_in(base, "ann@corp.test", "ann password")
        assert me().status_code == 401
        assert "ann@corp.test\tuser (disabled)" in run(cfg, "user", "list").stdout
        assert "already disabled" in run(cfg, "user", "disable", "ann@corp.test").stdout
        assert run(cfg, "user", "enable", "ann@corp.test").returncode == 0
        assert can_log_in(base, "ann@corp.test", "ann password") and me().status_code == 200
        # delete: refused without a terminal or --yes; with --yes the account and its tokens go.
        r = run(cfg, "user", "delete", "ann@corp.test")
        assert r.returncode == 2 and "--yes" in r.stderr
        r = run(cfg, "user", "delete", "ann@corp.test", "--yes")
        assert r.returncode == 0 and "deleted ann@corp.test" in r.stdout
        assert me().status_code == 401 and not can_log_in(base, "ann@corp.test", "ann password")
    with db.session() as s:
        assert s.scalar(select(ApiTokenRow).where(ApiTokenRow.user_id == ann_id)) is None
    acts = [(a, act, t) for a, act, t, _ in audit_rows(db)]
    for action in ("user.passwd", "user.disable", "user.enable", "user.delete"):
        assert ("cli", action, "root@corp.test" if action == "user.passwd" else "ann@corp.test") in acts
    db.dispose()


def test_api_role_domains_disable_passwd_delete(env, live):
    admin = httpx.Client(base_url=live, headers={"Authorization": f"Bearer {env.tokens['admin']}"})
    alice_tok = httpx.Client(base_url=live, headers={"Authorization": f"Bearer {env.tokens['alice']}"})
    users = {u["email"]: u["id"] for u in admin.get("/api/v1/users").json()}
    alice, admin_id = users["alice@a.test"], users["admin@corp.test"]
    assert alice_tok.patch(f"/api/v1/users/{alice}", json={"disabled": True}).status_code == 403
    # Role and domains.
    r = admin.patch(f"/api/v1/users/{alice}", json={"role": "domain_admin"})
    assert r.status_code == 422 and "needs at least one domain" in r.text
    r = admin.patch(f"/api/v1/users/{alice}", json={"role": "domain_admin", "domains": ["A.test"]})
    assert r.status_code == 200 and r.json()["role"] == "domain_admin" and r.json()["domains"] == ["a.test"]
    assert admin.patch(f"/api/v1/users/{alice}", json={"role": "user", "domains": []}).json()["role"] == "user"
    # Disable: a live session and the token stop at once, and login is refused.
    c, _ = session(live, "alice@a.test")
    assert c.get("/api/v1/auth/me").status_code == 200
    assert admin.patch(f"/api/v1/users/{alice}", json={"disabled": True}).json()["disabled"] is True
    assert c.get("/api/v1/auth/me").status_code == 401
    assert alice_tok.get("/api/v1/quarantine").status_code == 401
    assert not can_log_in(live, "alice@a.test", PASSWORD)
    assert admin.patch(f"/api/v1/users/{alice}", json={"disabled": False}).status_code == 200
    assert alice_tok.get("/api/v1/auth/me").status_code == 200
    # A new password ends the account's sessions; a short one is refused.
    c, _ = session(live, "alice@a.test")
    assert admin.put(f"/api/v1/users/{alice}/password", json={"password": "short"}).status_code == 422
    assert admin.put(f"/api/v1/users/{alice}/password", json={"password": "brand new secret"}).json() == {"ok": True}
    assert c.get("/api/v1/auth/me").status_code == 401
    assert can_log_in(live, "alice@a.test", "brand new secret") and not can_log_in(live, "alice@a.test", PASSWORD)
    # Nobody locks the console out: not yourself, not the last administrator.
    assert admin.patch(f"/api/v1/users/{admin_id}", json={"disabled": True}).status_code == 409
    assert admin.patch(f"/api/v1/users/{admin_id}", json={"role": "user"}).status_code == 409
    assert admin.delete(f"/api/v1/users/{admin_id}").status_code == 409
    # Delete.
    assert admin.delete(f"/api/v1/users/{alice}").json() == {"ok": True}
    assert alice_tok.get("/api/v1/auth/me").status_code == 401
    assert admin.delete(f"/api/v1/users/{alice}").status_code == 404
    assert admin.patch("/api/v1/users/999999", json={"disabled": True}).status_code == 404
    rows = audit_rows(env.db)
    mine = [(act, t, d) for a, act, t, d in rows if a == "admin@corp.test"]
    assert ("user.update", "alice@a.test", {"role": ["user", "domain_admin"], "domains": [[], ["a.test"]]}) in mine
    assert [act for act, t, _ in mine if t == "alice@a.test"] == [
        "user.update", "user.update", "user.disable", "user.enable", "user.passwd", "user.delete"]


def test_last_admin_cannot_be_disabled_by_another(env, live):
    admin = httpx.Client(base_url=live, headers={"Authorization": f"Bearer {env.tokens['admin']}"})
    r = admin.post("/api/v1/users", json={"email": "second@corp.test", "role": "admin", "password": "long enough"})
    second = r.json()["id"]
    c, csrf = session(live, "second@corp.test", "long enough")
    users = {u["email"]: u["id"] for u in admin.get("/api/v1/users").json()}
    # Two administrators: one may disable the other ...
    r = c.patch(f"/api/v1/users/{users['admin@corp.test']}", json={"disabled": True}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    # ... and now the remaining one is the last: even another path (demotion) is refused.
    assert c.patch(f"/api/v1/users/{second}", json={"role": "user"}, headers={"X-CSRF-Token": csrf}).status_code == 409


def form_login(base: str, email: str, password: str = PASSWORD) -> httpx.Client:
    c = httpx.Client(base_url=base)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"email": email, "password": password, "csrf_token": csrf, "next": "/"})
    assert r.status_code == 303, r.text
    return c


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_users_page(env, live):
    admin = form_login(live, "admin@corp.test")
    page = admin.get("/users")
    assert page.status_code == 200 and 'id="users"' in page.text and "postmaster@a.test" in page.text
    csrf = csrf_of(page.text)
    # Mistakes are said next to their field, and what was typed stays.
    r = admin.post("/users", data={"csrf_token": csrf, "email": "dora@d.test", "role": "domain_admin",
                                   "domains": "", "password": "longenough", "password2": "different"})
    assert r.status_code == 422
    assert 'id="err-domains"' in r.text and "needs at least one domain" in r.text
    assert 'id="err-password2"' in r.text and 'value="dora@d.test"' in r.text
    r = admin.post("/users", data={"csrf_token": csrf, "email": "dora@d.test", "role": "domain_admin",
                                   "domains": "d.test, e.test", "password": "longenough", "password2": "longenough"})
    assert r.status_code == 303 and "Added+domain_admin+dora%40d.test" in r.headers["location"].replace("%20", "+")
    assert can_log_in(live, "dora@d.test", "longenough")
    dora = {u["email"]: u["id"] for u in httpx.get(f"{live}/api/v1/users", headers={
        "Authorization": f"Bearer {env.tokens['admin']}"}).json()}["dora@d.test"]
    # Role, password, disable, enable.
    r = admin.post(f"/users/{dora}", data={"csrf_token": csrf, "role": "user", "domains": ""})
    assert r.status_code == 303
    r = admin.post(f"/users/{dora}/password", data={"csrf_token": csrf, "password": "x", "password2": "x"})
    assert r.status_code == 422 and 'id="err-password"' in r.text and "at least 8 characters" in r.text
    r = admin.post(f"/users/{dora}/password", data={"csrf_token": csrf, "password": "another one",
                                                     "password2": "another one"})
    assert r.status_code == 303 and can_log_in(live, "dora@d.test", "another one")
    assert admin.post(f"/users/{dora}/state", data={"csrf_token": csrf, "op": "disable"}).status_code == 303
    assert not can_log_in(live, "dora@d.test", "another one")
    assert "disabled" in admin.get(f"/users/{dora}").text
    assert admin.post(f"/users/{dora}/state", data={"csrf_token": csrf, "op": "enable"}).status_code == 303
    assert can_log_in(live, "dora@d.test", "another one")
    # Delete asks first: without the confirmation nothing happens.
    r = admin.post(f"/users/{dora}/delete", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/users/{dora}/delete"
    assert can_log_in(live, "dora@d.test", "another one")
    confirm = admin.get(f"/users/{dora}/delete")
    assert 'id="confirm-question"' in confirm.text and "dora@d.test" in confirm.text
    r = admin.post(f"/users/{dora}/delete", data={"csrf_token": csrf, "confirm": "yes"})
    assert r.status_code == 303 and not can_log_in(live, "dora@d.test", "another one")
    # The page is the administrators' only.
    user = form_login(live, "bob@b.test")
    assert user.get("/users").status_code == 403
    assert user.post(f"/users/{dora}/state", data={"csrf_token": csrf_of(user.get('/settings').text),
                                                    "op": "disable"}).status_code == 403
    acts = [act for a, act, t, _ in audit_rows(env.db) if t == "dora@d.test" and a == "admin@corp.test"]
    assert acts == ["user.create", "user.update", "user.passwd", "user.disable", "user.enable", "user.delete"]
