"""The console's recall pages: "Recall from all mailboxes" on a message's page, the preview
of the mailboxes it touches, confirming with a reason, the job's page with its per-recipient
outcome, undo; approval buttons with two-person approval. Forms post with the session's
CSRF token, as a browser does."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mailmoat.web.app import create_app
from tests.recall.fakes import FakeMicrosoft, fake_apis
from tests.recall.test_api import MSG_ID, deliver_wave, make_env, run_jobs
from tests.web.fixtures import PASSWORD


@pytest.fixture
def ms() -> Iterator[tuple[FakeMicrosoft, str]]:
    with fake_apis() as (ms, _google, ca):
        yield ms, ca


def session(app, email: str) -> tuple[TestClient, str]:
    c = TestClient(app)
    r = c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


async def test_recall_from_a_message_page_and_undo(tmp_path, ms, monkeypatch) -> None:
    fake, ca = ms
    env = make_env(tmp_path, fake, ca, monkeypatch)
    await deliver_wave(env, fake)
    app = create_app(env.config, env.db)
    admin, csrf = session(app, "admin@corp.test")

    page = admin.get("/messages/wave1").text
    assert 'id="btn-recall"' in page and "Recall from all mailboxes" in page
    alice, _ = session(app, "alice@a.test")
    assert 'id="btn-recall"' not in alice.get("/messages/wave1").text
    assert alice.get("/recall/jobs").status_code == 403

    preview = admin.get("/recall/new", params={"ids": "wave1"}).text
    assert "<b>2</b> delivered copies in <b>2</b> mailboxes" in preview
    assert "ann@a.test" in preview and "bob@b.test" in preview
    r = admin.post("/recall/new", data={"csrf_token": csrf, "ids": "wave1", "reason": ""},
                   follow_redirects=False)
    assert "Say+why" in r.headers["location"] or "Say%20why" in r.headers["location"]
    r = admin.post("/recall/new", data={"csrf_token": "wrong", "ids": "wave1",
                                        "reason": "phish"}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token, no recall
    r = admin.post("/recall/new", data={"csrf_token": csrf, "ids": "wave1",
                                        "reason": "credential phishing"},
                   follow_redirects=False)
    assert r.status_code == 303
    job_url = r.headers["location"].split("?")[0]
    job_id = int(job_url.rsplit("/", 1)[1])
    page = admin.get(job_url).text
    assert "pending" in page and 'http-equiv="refresh"' in page

    run_jobs(env)
    page = admin.get(job_url).text
    assert "<b>done</b>" in page and page.count(">moved<") == 2
    assert 'id="btn-undo"' in page and 'http-equiv="refresh"' not in page
    assert fake.where("ann@a.test", f"<{MSG_ID}>") == ["Recalled"]
    listing = admin.get("/recall/jobs").text
    assert f'href="/recall/jobs/{job_id}"' in listing and "credential phishing" in listing

    r = admin.post(f"/recall/jobs/{job_id}/act", data={"csrf_token": csrf, "op": "undo"},
                   follow_redirects=False)
    undo_url = r.headers["location"].split("?")[0]
    assert re.fullmatch(r"/recall/jobs/\d+", undo_url) and undo_url != job_url
    run_jobs(env)
    page = admin.get(undo_url).text
    assert page.count(">restored<") == 2 and f"undo of <a href=\"{job_url}\"" in page
    assert fake.where("ann@a.test", f"<{MSG_ID}>") == ["Inbox"]
    env.db.dispose()


async def test_two_person_approval_from_the_console(tmp_path, ms, monkeypatch) -> None:
    fake, ca = ms
    env = make_env(tmp_path, fake, ca, monkeypatch, two_person=True)
    await deliver_wave(env, fake)
    app = create_app(env.config, env.db)
    admin, csrf = session(app, "admin@corp.test")
    r = admin.post("/recall/new", data={"csrf_token": csrf, "ids": "wave1", "reason": "wave"},
                   follow_redirects=False)
    job_url = r.headers["location"].split("?")[0]
    page = admin.get(job_url).text
    assert "awaiting_approval" in page and 'id="btn-approve"' in page
    r = admin.post(f"{job_url}/act", data={"csrf_token": csrf, "op": "approve"})
    assert "second administrator" in r.text and "awaiting_approval" in r.text
    from mailmoat.web.auth import create_user

    create_user(env.db, "sec@corp.test", "admin", PASSWORD, [])
    second, csrf2 = session(app, "sec@corp.test")
    r = second.post(f"{job_url}/act", data={"csrf_token": csrf2, "op": "approve"})
    assert "Approved" in r.text and "Approved by</th><td>sec@corp.test" in r.text
    run_jobs(env)
    assert fake.where("bob@b.test", f"<{MSG_ID}>") == ["Recalled"]
    env.db.dispose()
