"""/api/v1/recall: preview, create, progress, per-recipient outcome, undo, approval; only
administrators, domain administrators within their domains; every action audited. The
mailbox work is done by the real Graph connector against the local fake (fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mailmoat.message.model import Direction
from mailmoat.recall.connectors import Connectors
from mailmoat.recall.jobs import RecallWorker
from mailmoat.store.log import LogWriter
from mailmoat.store.models import AuditRow
from mailmoat.web.app import create_app
from mailmoat.web.auth import create_token, create_user, set_hash_cost
from tests.conftest import make_email
from tests.recall.fakes import FakeMicrosoft, fake_apis
from tests.recall.helpers import log_delivered
from tests.web.fixtures import PASSWORD, Seeded, seed

MSG_ID = "wave-1@phish.test"


@pytest.fixture(autouse=True, scope="module")
def _cheap_hashes() -> None:
    set_hash_cost(1, 1024)


@pytest.fixture
def ms() -> Iterator[tuple[FakeMicrosoft, str]]:
    with fake_apis() as (ms, _google, ca):
        yield ms, ca


def make_env(tmp_path: Path, ms: FakeMicrosoft, ca: str, monkeypatch: pytest.MonkeyPatch,
             two_person: bool = False) -> Seeded:
    monkeypatch.setenv("MM_TEST_GRAPH_SECRET", FakeMicrosoft.SECRET)
    # The seeded users' and the wave's domains are the gateway's own: recall touches
    # mailboxes in them only.
    env = seed(tmp_path / "data", smtp={"relay_domains": ["a.test", "b.test", "corp.test"]},
               recall={
        "two_person_approval": two_person,
        "graph": {"tenant_id": FakeMicrosoft.TENANT, "client_id": FakeMicrosoft.CLIENT_ID,
                  "client_secret_env": "MM_TEST_GRAPH_SECRET", "authority_url": ms.url,
                  "graph_url": ms.url, "ca_file": ca, "retries": 0}})
    u = create_user(env.db, "admin2@corp.test", "admin", PASSWORD, [])
    env.tokens["admin2"] = create_token(env.db, u.id, "test")
    return env


async def deliver_wave(env: Seeded, ms: FakeMicrosoft) -> None:
    rcpts = ("ann@a.test", "bob@b.test")
    for r in rcpts:
        ms.add_mailbox(r)
        ms.deliver(r, f"<{MSG_ID}>")
    raw = make_email(subject="Your mailbox is full",
                     body="Log in at https://mail-fix.evil.example/login\n").replace(
        b"test-1@sender.test", MSG_ID.encode())
    writer = LogWriter(env.db)
    try:
        await log_delivered(writer, "wave1", raw, rcpts)
    finally:
        writer.close()


def client(app, env: Seeded, who: str) -> TestClient:
    c = TestClient(app)
    c.headers["Authorization"] = f"Bearer {env.tokens[who]}"
    return c


def run_jobs(env: Seeded) -> None:
    worker = RecallWorker(env.config, env.db, Connectors(env.config, sleep=lambda _s: None))
    try:
        worker.run_pending()
    finally:
        worker.close()


async def test_preview_recall_progress_outcome_and_undo(tmp_path, ms, monkeypatch) -> None:
    fake, ca = ms
    env = make_env(tmp_path, fake, ca, monkeypatch)
    await deliver_wave(env, fake)
    app = create_app(env.config, env.db)
    admin, dadmin, alice = (client(app, env, w) for w in ("admin", "dadmin", "alice"))

    search = {"search": {"url": "https://MAIL-FIX.evil.example/login"}}
    r = admin.post("/api/v1/recall/preview", json=search)
    assert r.status_code == 200, r.text
    assert r.json()["mailboxes"] == 2 and r.json()["messages"] == 1
    r = dadmin.post("/api/v1/recall/preview", json={"search": {"domain": "evil.example"}})
    assert [c["recipient"] for c in r.json()["copies"]] == ["ann@a.test"]  # a.test only
    assert alice.post("/api/v1/recall/preview", json=search).status_code == 403
    assert admin.post("/api/v1/recall/preview", json={
        "search": {"since": "2026-01-01T00:00:00Z"}}).status_code == 422

    r = admin.post("/api/v1/recall/jobs", json={**search, "reason": "credential phishing"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "pending" and job["counts"] == {"pending": 2}
    assert alice.post("/api/v1/recall/jobs", json={**search, "reason": "x"}).status_code == 403
    assert dadmin.get(f"/api/v1/recall/jobs/{job['id']}").status_code == 404  # not theirs

    run_jobs(env)
    r = admin.get(f"/api/v1/recall/jobs/{job['id']}")
    assert r.json()["state"] == "done" and r.json()["counts"] == {"moved": 2}
    items = admin.get(f"/api/v1/recall/jobs/{job['id']}/items").json()
    assert {(i["recipient"], i["status"]) for i in items} == {("ann@a.test", "moved"),
                                                              ("bob@b.test", "moved")}
    assert fake.where("ann@a.test", f"<{MSG_ID}>") == ["Recalled"]

    r = admin.post(f"/api/v1/recall/jobs/{job['id']}/undo", json={"reason": "false alarm"})
    assert r.status_code == 201 and r.json()["kind"] == "restore"
    run_jobs(env)
    assert admin.get(f"/api/v1/recall/jobs/{r.json()['id']}").json()["counts"] == {
        "restored": 2}
    assert fake.where("bob@b.test", f"<{MSG_ID}>") == ["Inbox"]

    # A domain administrator's recall touches only their domain.
    r = dadmin.post("/api/v1/recall/jobs", json={"message_ids": ["wave1"], "reason": "mine"})
    assert r.status_code == 201 and r.json()["domains"] == ["a.test"]
    assert r.json()["counts"] == {"pending": 1}
    assert [j["id"] for j in dadmin.get("/api/v1/recall/jobs").json()] == [r.json()["id"]]

    with env.db.session() as s:
        actions = [(a.actor, a.action) for a in s.scalars(select(AuditRow).where(
            AuditRow.action.like("recall.%")).order_by(AuditRow.id))]
    assert ("admin@corp.test", "recall.create") in actions
    assert ("admin@corp.test", "recall.undo") in actions
    assert ("postmaster@a.test", "recall.create") in actions
    assert any(a == "recall.recall_done" for _, a in actions)
    assert FakeMicrosoft.SECRET not in str(admin.get("/openapi.json").text)
    env.db.dispose()


async def test_two_person_approval(tmp_path, ms, monkeypatch) -> None:
    fake, ca = ms
    env = make_env(tmp_path, fake, ca, monkeypatch, two_person=True)
    await deliver_wave(env, fake)
    app = create_app(env.config, env.db)
    admin, admin2 = client(app, env, "admin"), client(app, env, "admin2")
    job = admin.post("/api/v1/recall/jobs", json={"message_ids": ["wave1"],
                                                  "reason": "wave"}).json()
    assert job["state"] == "awaiting_approval"
    run_jobs(env)  # the worker leaves it alone
    assert fake.where("ann@a.test", f"<{MSG_ID}>") == ["Inbox"]
    r = admin.post(f"/api/v1/recall/jobs/{job['id']}/approve", json={"note": "me"})
    assert r.status_code == 409 and "second administrator" in r.json()["detail"]
    r = admin2.post(f"/api/v1/recall/jobs/{job['id']}/approve", json={"note": "checked"})
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert r.json()["decided_by"] == "admin2@corp.test"
    assert admin2.post(f"/api/v1/recall/jobs/{job['id']}/deny").status_code == 409
    run_jobs(env)
    assert fake.where("ann@a.test", f"<{MSG_ID}>") == ["Recalled"]

    other = admin.post("/api/v1/recall/jobs", json={"message_ids": ["wave1"],
                                                    "reason": "again"}).json()
    r = admin2.post(f"/api/v1/recall/jobs/{other['id']}/deny", json={"note": "duplicate"})
    assert r.json()["state"] == "denied"
    assert admin.get("/api/v1/recall/jobs", params={"state": "denied"}).json()[0]["id"] == \
        other["id"]
    env.db.dispose()


async def test_copies_outside_our_domains_are_shown_and_left_out(tmp_path, ms,
                                                                 monkeypatch) -> None:
    fake, ca = ms
    env = make_env(tmp_path, fake, ca, monkeypatch)
    writer = LogWriter(env.db)
    try:  # ann@a.test writes to a colleague and to a partner elsewhere
        await log_delivered(writer, "out1", make_email(subject="Quote"),
                            ("carol@a.test", "pat@partner.test"),
                            direction=Direction.OUTBOUND, mail_from="ann@a.test")
    finally:
        writer.close()
    app = create_app(env.config, env.db)
    admin = client(app, env, "admin")
    body = admin.post("/api/v1/recall/preview", json={"message_ids": ["out1"]}).json()
    assert body["mailboxes"] == 1 and [c["recipient"] for c in body["copies"]] == \
        ["carol@a.test"]
    assert [c["recipient"] for c in body["outside"]] == ["pat@partner.test"]
    page = admin.get("/recall/new", params={"ids": "out1"}).text
    outside = page.split('id="recall-outside"')[1]
    assert "pat@partner.test" in outside and "outside our domains" in outside
    assert "pat@partner.test" not in page.split('id="recall-preview"')[1].split("</table>")[0]
    job = admin.post("/api/v1/recall/jobs", json={"message_ids": ["out1"],
                                                  "reason": "sent by mistake"}).json()
    items = admin.get(f"/api/v1/recall/jobs/{job['id']}/items",
                      params={"status": "outside"}).json()
    assert [i["recipient"] for i in items] == ["pat@partner.test"] and items[0]["attempts"] == 0
    assert job["counts"] == {"pending": 1, "outside": 1}
    env.db.dispose()
