"""REST API: every endpoint, with role boundaries (admin, domain admin, end user)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from mailmoat.spool.queue import Spool
from mailmoat.store.models import AuditRow, QuarantineRow
from tests.web.conftest import bearer, login
from tests.web.fixtures import PASSWORD, add_message


def audit_actions(env) -> list[tuple[str, str, str]]:
    with env.db.session() as s:
        return [(r.actor, r.action, r.target) for r in s.scalars(select(AuditRow).order_by(AuditRow.id))]


def spooled(env) -> list:
    sp = Spool(env.config.data_dir / "spool")
    return [sp.read("incoming", i)[0] for i in sp.ids("incoming")]


def test_healthz_and_openapi(anon):
    assert anon.get("/healthz").json()["ok"] is True
    spec = anon.get("/openapi.json").json()
    assert "/api/v1/messages" in spec["paths"] and "/api/v1/quarantine/{msg_id}/release" in spec["paths"]


def test_login_logout_me_and_csrf(app, env):
    c, csrf = login(app, "ALICE@a.test")
    assert c.get("/api/v1/auth/me").json()["email"] == "alice@a.test"
    # A cookie-authenticated write without the CSRF header is refused...
    r = c.post("/api/v1/auth/tokens", json={"name": "x"})
    assert r.status_code == 403 and "CSRF" in r.text
    # ...and accepted with it.
    r = c.post("/api/v1/auth/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 and r.json()["token"].startswith("mm_")
    assert c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).json() == {"ok": True}
    assert c.get("/api/v1/auth/me").status_code == 401


def test_session_cookie_is_signed(app, env):
    c, _ = login(app, "alice@a.test")
    cookie = c.cookies.get("mailmoat_session")
    assert cookie
    forged = TestClient(app)
    forged.cookies.set("mailmoat_session", cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB"))
    assert forged.get("/api/v1/auth/me").status_code == 401


def test_wrong_password_and_throttling(app, env, anon):
    for _ in range(5):
        r = anon.post("/api/v1/auth/login", json={"email": "bob@b.test", "password": "wrong"})
        assert r.status_code == 401
    # Locked now, even with the right password.
    r = anon.post("/api/v1/auth/login", json={"email": "bob@b.test", "password": PASSWORD})
    assert r.status_code == 429 and r.headers["retry-after"] == "900"
    # Another account from the same IP is not locked yet (per-IP limit is higher).
    assert anon.post("/api/v1/auth/login", json={"email": "alice@a.test", "password": PASSWORD}).status_code == 200


def test_throttling_per_ip(app, env, anon):
    for i in range(20):
        anon.post("/api/v1/auth/login", json={"email": f"nobody{i}@x.test", "password": "wrong"})
    r = anon.post("/api/v1/auth/login", json={"email": "alice@a.test", "password": PASSWORD})
    assert r.status_code == 429


def test_tokens_only_hash_stored_and_revocation(app, env):
    admin = bearer(app, env, "admin")
    tok = admin.post("/api/v1/auth/tokens", json={"name": "script"}).json()["token"]
    from mailmoat.store.webmodels import ApiTokenRow

    with env.db.session() as s:
        stored = [r.token_hash for r in s.scalars(select(ApiTokenRow))]
    assert tok not in stored and all(len(h) == 64 for h in stored)
    c = TestClient(app, headers={"Authorization": f"Bearer {tok}"})
    assert c.get("/api/v1/auth/me").status_code == 200
    tid = [t for t in admin.get("/api/v1/auth/tokens").json() if t["name"] == "script"][0]["id"]
    assert admin.delete(f"/api/v1/auth/tokens/{tid}").json() == {"ok": True}
    assert c.get("/api/v1/auth/me").status_code == 401
    bad = TestClient(app, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert bad.get("/api/v1/auth/me").status_code == 401


def test_users_admin_only(app, env):
    admin, alice = bearer(app, env, "admin"), bearer(app, env, "alice")
    assert alice.get("/api/v1/users").status_code == 403
    emails = [u["email"] for u in admin.get("/api/v1/users").json()]
    assert "postmaster@a.test" in emails
    r = admin.post("/api/v1/users", json={"email": "dave@b.test", "role": "user", "password": "longenough"})
    assert r.status_code == 201
    assert admin.post("/api/v1/users", json={"email": "dave@b.test", "role": "user"}).status_code == 422
    assert admin.post("/api/v1/users", json={"email": "x@b.test", "role": "domain_admin"}).status_code == 422
    assert alice.post("/api/v1/users", json={"email": "e@b.test", "role": "admin"}).status_code == 403
    uid = r.json()["id"]
    c, _ = login(app, "dave@b.test", "longenough")
    assert admin.delete(f"/api/v1/users/{uid}").json() == {"ok": True}
    assert c.get("/api/v1/auth/me").status_code == 401  # disabled: its session stops working
    assert ("admin@corp.test", "user.create", "dave@b.test") in audit_actions(env)


def test_search_scopes(app, env):
    ids = lambda c, **q: [m["id"] for m in c.get("/api/v1/messages", params=q).json()["items"]]
    admin, dadmin = bearer(app, env, "admin"), bearer(app, env, "dadmin")
    alice, bob = bearer(app, env, "alice"), bearer(app, env, "bob")
    assert len(ids(admin)) == 6
    assert set(ids(alice)) == {"m0001spamalice", "m0003cleanalice", "m0004hostile", "m0005malware", "m0006shared"}
    assert set(ids(bob)) == {"m0002phishbob", "m0006shared"}
    assert "m0002phishbob" not in ids(dadmin)
    # A user cannot read another user's message, even by id.
    assert bob.get("/api/v1/messages/m0001spamalice").status_code == 404
    assert alice.get("/api/v1/messages/m0002phishbob").status_code == 404
    assert dadmin.get("/api/v1/messages/m0002phishbob").status_code == 404
    # A shared message shows the caller only their own recipients.
    d = bob.get("/api/v1/messages/m0006shared").json()
    assert [r["address"] for r in d["recipients"]] == ["bob@b.test"]


def test_search_filters_and_keyset_paging(app, env):
    admin = bearer(app, env, "admin")
    q = lambda **p: admin.get("/api/v1/messages", params=p).json()["items"]
    assert [m["id"] for m in q(recipient="carol@a.test")] == ["m0003cleanalice"]
    assert [m["id"] for m in q(recipient="@b.test")] == ["m0006shared", "m0002phishbob"]
    assert [m["id"] for m in q(sender="@good.test")] == ["m0003cleanalice"]
    assert [m["id"] for m in q(sender="partner@good.test")] == ["m0003cleanalice"]
    assert [m["id"] for m in q(subject="PILLS")] == ["m0001spamalice"]
    assert [m["id"] for m in q(message_id="notes-42@good.test")] == ["m0003cleanalice"]
    assert [m["id"] for m in q(message_id="<notes-42@good.test>")] == ["m0003cleanalice"]
    assert [m["id"] for m in q(mailmoat_id="m0005malware")] == ["m0005malware"]
    assert [m["id"] for m in q(client_ip="198.51.100.7")] == ["m0003cleanalice"]
    assert [m["id"] for m in q(category="malware")] == ["m0005malware"]
    assert len(q(action="quarantine")) == 5
    assert [m["id"] for m in q(status="delivered")] == ["m0003cleanalice"]
    assert len(q(direction="inbound")) == 6 and q(direction="outbound") == []
    assert q(subject="100%_") == []
    now = datetime.now(UTC)
    window = q(since=(now - timedelta(minutes=35)).isoformat(), until=(now - timedelta(minutes=15)).isoformat())
    assert [m["id"] for m in window] == ["m0004hostile", "m0003cleanalice"]
    assert len(q(quarantined=True)) == 5
    # Keyset paging: pages of 2 walk all six, newest first, without repeats.
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = admin.get("/api/v1/messages", params=params).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [m["id"] for m in q(limit=50)] and len(seen) == 6
    assert admin.get("/api/v1/messages", params={"cursor": "garbage!"}).status_code == 422
    assert admin.get("/api/v1/messages", params={"category": "nonsense"}).status_code == 422


def test_keyset_paging_with_equal_timestamps(app, env):
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        add_message(env.config, env.db, f"tie{i}", rcpts=["x@c.test"], when=when, action="accept", category="clean")
    admin = bearer(app, env, "admin")
    seen, cursor = [], None
    for _ in range(10):
        page = admin.get("/api/v1/messages", params={"recipient": "x@c.test", "limit": 2,
                                                     **({"cursor": cursor} if cursor else {})}).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["tie4", "tie3", "tie2", "tie1", "tie0"]


def test_message_detail(app, env):
    d = bearer(app, env, "admin").get("/api/v1/messages/m0003cleanalice").json()
    assert d["message_id"] == "<notes-42@good.test>" and d["client_ip"] == "198.51.100.7"
    assert [e["status"] for e in d["events"] if e["address"] == "alice@a.test"] == ["deferred", "delivered"]
    assert {r["address"] for r in d["recipients"]} == {"alice@a.test", "carol@a.test"}
    s = bearer(app, env, "admin").get("/api/v1/messages/m0001spamalice").json()
    assert s["symbols"][0]["reason"] == "the body contains the GTUBE test string"
    assert s["quarantine"]["held_for"] == ["alice@a.test"]
    assert s["headers"]["Authentication-Results"].endswith("spf=fail")


def test_quarantine_list_scoped(app, env):
    ids = lambda c: {i["message"]["id"] for i in c.get("/api/v1/quarantine").json()["items"]}
    assert ids(bearer(app, env, "admin")) == {"m0001spamalice", "m0002phishbob", "m0004hostile",
                                               "m0005malware", "m0006shared"}
    assert ids(bearer(app, env, "bob")) == {"m0002phishbob", "m0006shared"}
    assert "m0002phishbob" not in ids(bearer(app, env, "dadmin"))


def test_release_by_user_goes_to_spool_and_is_audited(app, env):
    alice = bearer(app, env, "alice")
    r = alice.post("/api/v1/quarantine/m0001spamalice/release")
    assert r.status_code == 200, r.text
    assert r.json()["recipients"] == ["alice@a.test"]
    [entry] = spooled(env)
    assert entry.rcpt_tos == ["alice@a.test"] and entry.scanned and entry.handover.released_from == "m0001spamalice"
    assert ("alice@a.test", "quarantine.release", "m0001spamalice") in audit_actions(env)
    # Released: not listed any more, a second release is a conflict.
    assert alice.post("/api/v1/quarantine/m0001spamalice/release").status_code == 409


def test_release_role_boundaries(app, env):
    bob, dadmin = bearer(app, env, "bob"), bearer(app, env, "dadmin")
    assert bob.post("/api/v1/quarantine/m0001spamalice/release").status_code == 404
    assert dadmin.post("/api/v1/quarantine/m0002phishbob/release").status_code == 404
    # The shared message: bob may release only to himself.
    r = bob.post("/api/v1/quarantine/m0006shared/release", json={"recipients": ["alice@a.test"]})
    assert r.status_code == 403
    r = bob.post("/api/v1/quarantine/m0006shared/release")
    assert r.json()["recipients"] == ["bob@b.test"]
    # The domain admin of a.test releases the rest (alice), not bob's copy again.
    r = dadmin.post("/api/v1/quarantine/m0006shared/release", json={"recipients": ["bob@b.test"]})
    assert r.status_code == 403
    assert dadmin.post("/api/v1/quarantine/m0006shared/release").json()["recipients"] == ["alice@a.test"]
    assert sorted(e.rcpt_tos[0] for e in spooled(env)) == ["alice@a.test", "bob@b.test"]
    # Nobody is spooled twice.
    assert len(spooled(env)) == 2


def test_delete_boundaries(app, env):
    bob, alice, admin = bearer(app, env, "bob"), bearer(app, env, "alice"), bearer(app, env, "admin")
    # Shared with alice: bob alone may not delete it.
    assert bob.post("/api/v1/quarantine/m0006shared/delete").status_code == 403
    assert alice.post("/api/v1/quarantine/m0002phishbob/delete").status_code == 404
    assert alice.post("/api/v1/quarantine/m0001spamalice/delete").status_code == 200
    assert not (env.config.data_dir / "quarantine" / "m0001spamalice.eml").exists()
    assert admin.post("/api/v1/quarantine/m0006shared/delete").status_code == 200
    assert admin.post("/api/v1/quarantine/m0006shared/delete").status_code == 404
    acts = audit_actions(env)
    assert ("alice@a.test", "quarantine.delete", "m0001spamalice") in acts
    assert ("admin@corp.test", "quarantine.delete", "m0006shared") in acts


def test_download_and_preview(app, env):
    admin, alice = bearer(app, env, "admin"), bearer(app, env, "alice")
    r = alice.get("/api/v1/quarantine/m0001spamalice/raw")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert "attachment" in r.headers["content-disposition"] and b"Subject: Cheap pills" in r.content
    assert alice.get("/api/v1/quarantine/m0005malware/raw").status_code == 403
    assert admin.get("/api/v1/quarantine/m0005malware/raw").status_code == 200
    assert bearer(app, env, "bob").get("/api/v1/quarantine/m0001spamalice/raw").status_code == 404
    p = alice.get("/api/v1/quarantine/m0004hostile/preview")
    assert p.headers["content-security-policy"].startswith("default-src 'none'")
    body = p.json()
    assert "verify now" in body["text"]
    h = body["html_sanitized"].lower()
    assert "verify" in h
    for bad in ("<script", "onerror", "onload", "http://127.0.0.1:9", "<form", "<iframe", "javascript:",
                "url(", "@import", "<meta", "<object", "<svg", "<link", "<base", "<video"):
        assert bad not in h, bad


def test_report_without_learning_module_is_audited(app, env, monkeypatch):
    from mailmoat.web import services

    monkeypatch.setattr(services, "_learner", lambda: None)
    r = bearer(app, env, "alice").post("/api/v1/quarantine/m0001spamalice/report", json={"label": "spam"})
    assert r.status_code == 200 and r.json()["learned"] is False and "not available" in r.json()["message"]
    with env.db.session() as s:
        row = s.scalar(select(AuditRow).where(AuditRow.action == "quarantine.report"))
    assert row.details["label"] == "spam" and row.details["learned"] is False


def test_report_feeds_learning_when_available(app, env, monkeypatch):
    from mailmoat.web import services

    calls = []

    def fake_learn(config, raw, label, actor):
        calls.append((label, actor, raw[:200]))

    monkeypatch.setattr(services, "_learner", lambda: fake_learn)
    r = bearer(app, env, "alice").post("/api/v1/quarantine/m0001spamalice/release",
                                       json={"report_not_spam": True})
    assert r.status_code == 200 and r.json()["learned"] is True
    assert calls[0][0] == "ham" and calls[0][1] == "alice@a.test" and b"Cheap pills" in calls[0][2]


def test_release_as_not_spam_teaches_the_real_learner(app, env):
    """Console → learning, unmocked: the released message joins the lesson memory, so its
    near-copies will be judged by it."""
    from mailmoat.ml.features import N_FEATURES_BITS
    from mailmoat.ml.learn import delta_path, read_audit
    from mailmoat.ml.lessons import lessons_path, read

    r = bearer(app, env, "alice").post("/api/v1/quarantine/m0001spamalice/release",
                                       json={"report_not_spam": True})
    assert r.status_code == 200 and r.json()["learned"] is True
    memory = read(lessons_path(delta_path(env.config)), N_FEATURES_BITS)
    assert memory.labels == ["ham"] and memory.actors == ["alice@a.test"]
    assert read_audit(env.config)[-1]["label"] == "ham"


def test_unlearn_takes_the_consoles_lesson_back(app, env):
    """A release reported as not spam by mistake: an administrator takes the lesson back."""
    from mailmoat.ml.features import N_FEATURES_BITS
    from mailmoat.ml.learn import delta_path, read_audit
    from mailmoat.ml.lessons import lessons_path, read

    r = bearer(app, env, "alice").post("/api/v1/quarantine/m0001spamalice/release",
                                       json={"report_not_spam": True})
    assert r.json()["learned"] is True
    assert bearer(app, env, "alice").post("/api/v1/quarantine/m0001spamalice/unlearn").status_code == 403
    u = bearer(app, env, "admin").post("/api/v1/quarantine/m0001spamalice/unlearn")
    assert u.status_code == 200 and u.json()["ok"] is True, u.text
    assert read(lessons_path(delta_path(env.config)), N_FEATURES_BITS).labels == []
    assert read_audit(env.config)[-1]["undo"] is True
    with env.db.session() as s:
        row = s.scalar(select(AuditRow).where(AuditRow.action == "quarantine.unlearn"))
    assert row.actor == "admin@corp.test" and row.details["lessons"] == 1
    again = bearer(app, env, "admin").post("/api/v1/quarantine/m0001spamalice/unlearn")
    assert again.status_code == 404


def test_purge_endpoint(app, env):
    with env.db.session() as s:
        s.get(QuarantineRow, "m0002phishbob").expires_at = datetime.now(UTC) - timedelta(days=1)
    assert bearer(app, env, "alice").post("/api/v1/quarantine/purge").status_code == 403
    assert bearer(app, env, "admin").post("/api/v1/quarantine/purge").json() == {"purged": 1}
    assert not (env.config.data_dir / "quarantine" / "m0002phishbob.eml").exists()


def test_policy_edit_validate_version_rollback(app, env):
    admin, dadmin, alice = bearer(app, env, "admin"), bearer(app, env, "dadmin"), bearer(app, env, "alice")
    cur = admin.get("/api/v1/policy").json()
    assert cur["version"] is None and cur["document"]["thresholds"]["tag_threshold"] == 5.0
    assert alice.get("/api/v1/policy").status_code == 403
    assert dadmin.get("/api/v1/policy").status_code == 200
    doc = cur["document"] | {"thresholds": {"tag_threshold": 4, "quarantine_threshold": 8, "reject_threshold": 20},
                             "block_senders": ["@evil.test", "Boss@Bad.test"], "vips": ["Jane Doe"],
                             "protected_domains": ["corp.test"], "allow_ips": ["10.0.0.0/8"],
                             "domains": {"a.test": {"quarantine_threshold": 6}}}
    assert dadmin.put("/api/v1/policy", json={"document": doc}).status_code == 403
    r = admin.put("/api/v1/policy", json={"document": doc, "comment": "stricter"})
    assert r.status_code == 200, r.text
    v1 = r.json()["version"]
    assert r.json()["document"]["block_senders"] == ["@evil.test", "boss@bad.test"]
    bad = doc | {"thresholds": {"tag_threshold": 9, "quarantine_threshold": 8, "reject_threshold": 20}}
    r = admin.put("/api/v1/policy", json={"document": bad})
    assert r.status_code == 422 and "ordered" in r.text
    assert admin.put("/api/v1/policy", json={"document": doc | {"block_ips": ["not-an-ip"]}}).status_code == 422
    assert admin.put("/api/v1/policy", json={"document": doc | {"block_senders": ["x y"]}}).status_code == 422
    assert admin.put("/api/v1/policy", json={"document": doc | {"unknown": 1}}).status_code == 422
    doc2 = doc | {"vips": ["Jane Doe", "John Roe"]}
    v2 = admin.put("/api/v1/policy", json={"document": doc2}).json()["version"]
    versions = admin.get("/api/v1/policy/versions").json()
    assert [v["id"] for v in versions] == [v2, v1] and versions[1]["comment"] == "stricter"
    assert admin.get(f"/api/v1/policy/versions/{v1}").json()["document"]["vips"] == ["Jane Doe"]
    assert admin.get("/api/v1/policy/versions/999").status_code == 404
    r = admin.post(f"/api/v1/policy/versions/{v1}/rollback")
    assert r.json()["version"] > v2 and r.json()["document"]["vips"] == ["Jane Doe"]
    # The gateway reads the newest document and merges it over the TOML config.
    from mailmoat.web.policy_store import apply_policy_document, current_overrides

    live = apply_policy_document(env.config, current_overrides(env.db))
    assert live.policy.tag_threshold == 4 and live.policy.block_senders == ["@evil.test", "boss@bad.test"]
    assert live.policy.domains["a.test"] == {"quarantine_threshold": 6.0}
    assert live.model_extra["bec"]["vips"] == ["Jane Doe"]
    assert env.config.policy.tag_threshold == 5.0  # the original is untouched
    acts = [a for _, a, _ in audit_actions(env)]
    assert acts.count("policy.save") == 2 and "policy.rollback" in acts


def test_dashboard_queue_audit_metrics(app, env):
    admin, alice = bearer(app, env, "admin"), bearer(app, env, "alice")
    Spool(env.config.data_dir / "spool")  # the dirs exist
    (env.config.data_dir / "spool" / "deferred" / "x1.json").write_text("{}")
    d = admin.get("/api/v1/stats/dashboard").json()
    assert d["total"] == 6 and d["queue"]["deferred"] == 1 and d["scan_ms_avg"] == 42.0
    assert {c["key"]: c["count"] for c in d["by_category"]}["phishing"] == 2
    assert d["top_blocked_domains"][0] == {"key": "bad.test", "count": 5}
    assert {c["key"] for c in d["by_group"]} >= {"gtube", "urls"}
    assert sum(p["count"] for p in d["volume"]) == 6
    assert alice.get("/api/v1/stats/dashboard").json()["total"] == 5
    assert alice.get("/api/v1/stats/dashboard").json()["queue"] == {}
    assert admin.get("/api/v1/stats/queue").json()["deferred"] == 1
    assert alice.get("/api/v1/stats/queue").status_code == 403
    admin.post("/api/v1/quarantine/m0001spamalice/delete")
    log = admin.get("/api/v1/audit", params={"action": "quarantine.delete"}).json()
    assert log[0]["target"] == "m0001spamalice" and log[0]["actor"] == "admin@corp.test"
    assert alice.get("/api/v1/audit").status_code == 403
    m = admin.get("/metrics")
    assert m.status_code == 200
    assert 'mailmoat_messages_total{action="quarantine",category="phishing",direction="inbound"} 2.0' in m.text
    assert 'mailmoat_spool_messages{state="deferred"} 1.0' in m.text
    assert "mailmoat_quarantine_held 4.0" in m.text
    assert alice.get("/metrics").status_code == 403


def test_lifespan_purges_expired_quarantine(tmp_path):
    import time as _time

    from mailmoat.web.app import create_app
    from tests.web.fixtures import seed

    env = seed(tmp_path / "d", console={"purge_on_start": True, "purge_interval_hours": 24})
    with env.db.session() as s:
        s.get(QuarantineRow, "m0001spamalice").expires_at = datetime.now(UTC) - timedelta(hours=1)
    with TestClient(create_app(env.config, env.db)):
        deadline = _time.time() + 10
        while (env.config.data_dir / "quarantine" / "m0001spamalice.eml").exists() and _time.time() < deadline:
            _time.sleep(0.05)
    assert not (env.config.data_dir / "quarantine" / "m0001spamalice.eml").exists()
    assert (env.config.data_dir / "quarantine" / "m0002phishbob.eml").exists()
    assert ("system", "quarantine.purge", "") in audit_actions(env)
    env.db.dispose()


def test_digest_schedule_waits_for_the_configured_hour():
    from mailmoat.web.app import seconds_until_hour

    now = datetime(2026, 11, 28, 7, 30, tzinfo=UTC)
    assert seconds_until_hour(8, now) == 30 * 60
    assert seconds_until_hour(7, now) == 23.5 * 3600


def test_bad_config_sections_are_clear_errors(tmp_path):
    import pytest

    from mailmoat.errors import ConfigError
    from tests.web.fixtures import make_env

    # Refused when the config loads, before any app is built from it.
    with pytest.raises(ConfigError, match="digest"):
        make_env(tmp_path / "d", digest={"hour": 25})


def test_lessons_api_lists_and_takes_back(app, env):
    alice, admin = bearer(app, env, "alice"), bearer(app, env, "admin")
    alice.post("/api/v1/quarantine/m0001spamalice/report", json={"label": "spam"})
    assert alice.get("/api/v1/lessons").status_code == 403
    assert alice.post("/api/v1/lessons/unlearn", json={"taught_by": "alice@a.test"}).status_code == 403
    items = admin.get("/api/v1/lessons").json()["items"]
    assert [(i["actor"], i["label"]) for i in items] == [("alice@a.test", "spam")]
    sha = items[0]["sha256"]
    assert admin.post("/api/v1/lessons/unlearn", json={}).status_code == 422
    assert admin.post("/api/v1/lessons/unlearn", json={"sha256": "xyz"}).status_code == 422
    assert admin.post("/api/v1/lessons/unlearn", json={"taught_before": "soon"}).status_code == 422
    r = admin.post("/api/v1/lessons/unlearn", json={"sha256": sha})
    assert r.status_code == 200 and r.json()["messages"] == [sha] and r.json()["lessons"] == 1
    assert admin.post("/api/v1/lessons/unlearn", json={"sha256": sha}).status_code == 404
    undo, lesson = admin.get("/api/v1/lessons").json()["items"]
    assert undo["undo"] is True and undo["actor"] == "admin@corp.test"
    assert lesson["taken_back"] is True
    with env.db.session() as s:
        row = s.scalar(select(AuditRow).where(AuditRow.action == "lessons.unlearn"))
    assert row.details["messages"] == [sha]
