"""Administrators act on accounts and incidents through the REST API and the CLI; every
change is audited, non-administrators are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from mailmoat.cli import app as cli
from mailmoat.internal.accounts import record_flag
from mailmoat.store.models import AuditRow, MessageRow
from mailmoat.web.app import create_app
from mailmoat.web.auth import set_hash_cost
from tests.web.fixtures import add_message, seed


@pytest.fixture
def env(tmp_path):
    set_hash_cost(1, 1024)
    sd = seed(tmp_path / "data")
    yield sd
    sd.db.dispose()


def client(env, who: str) -> TestClient:
    c = TestClient(create_app(env.config, env.db))
    c.headers["Authorization"] = f"Bearer {env.tokens[who]}"
    return c


def incident_with_mail(env) -> tuple[int, list[str]]:
    """An incident of m@example.test and what it sent: two delivered, one held, one older."""
    now = datetime.now(UTC)
    ids = []
    for k, (status, action, ago) in enumerate([("delivered", "accept", 50), ("quarantined",
                                                "quarantine", 40), ("delivered", "accept", 30),
                                               ("delivered", "accept", 7200)]):
        mid = f"inc{k}"
        add_message(env.config, env.db, mid, rcpts=[f"c{k}@example.test"],
                    sender="m@example.test", category="clean", action=action, status=status,
                    direction="internal", when=now - timedelta(seconds=ago))
        with env.db.session() as s:
            s.get(MessageRow, mid).sender_account = "m@example.test"
        ids.append(mid)
    incident = record_flag(env.db, account="m@example.test", at=now.timestamp() - 30,
                           window_start=now.timestamp() - 60, action="suspend", score=6.3,
                           signals=[{"name": "INTERNAL_FANOUT", "score": 6.3, "reason": "r"}],
                           node="mx")
    return incident, ids


def audited(env, action: str) -> list[AuditRow]:
    with env.db.session() as s:
        return list(s.scalars(select(AuditRow).where(AuditRow.action == action)))


def test_only_administrators(env):
    for who in ("alice", "dadmin"):
        assert client(env, who).get("/api/v1/internal/accounts").status_code == 403
    assert TestClient(create_app(env.config, env.db)).get(
        "/api/v1/internal/incidents").status_code == 401


def test_suspend_and_release_through_the_api(env):
    c = client(env, "admin")
    r = c.post("/api/v1/internal/accounts/Ann@Example.test/suspend",
               json={"minutes": 30, "reason": "phished", "reply": "5xx"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["account"] == "ann@example.test" and body["active"] and body["reply"] == "5xx"
    assert body["by"] == env.users["admin"] and body["until"] is not None
    assert [x["account"] for x in c.get("/api/v1/internal/accounts").json()] == ["ann@example.test"]
    view = c.get("/api/v1/internal/accounts/ann@example.test").json()
    assert view["restriction"]["state"].startswith("suspended until ") and view["baseline"] is None
    assert c.post("/api/v1/internal/accounts/ann@example.test/release",
                  json={"grace_hours": 2}).json()["released_by"] == env.users["admin"]
    assert c.post("/api/v1/internal/accounts/ann@example.test/release").status_code == 409
    assert c.post("/api/v1/internal/accounts/nobody@example.test/release").status_code == 404
    assert c.get("/api/v1/internal/accounts").json() == []
    assert len(c.get("/api/v1/internal/accounts", params={"all": True}).json()) == 1
    assert c.post("/api/v1/internal/accounts/two%20words/suspend", json={}).status_code == 422
    assert [a.target for a in audited(env, "internal.suspend")] == ["ann@example.test"]
    assert [a.details["grace_hours"] for a in audited(env, "internal.release")] == [2]


def test_incidents_their_messages_and_the_ids_for_recall(env):
    incident, ids = incident_with_mail(env)
    c = client(env, "admin")
    listed = c.get("/api/v1/internal/incidents", params={"status": "open"}).json()
    assert [i["id"] for i in listed] == [incident] and listed[0]["signals"][0]["name"] == \
        "INTERNAL_FANOUT"
    shown = c.get(f"/api/v1/internal/incidents/{incident}").json()
    assert [(m["id"], m["status"]) for m in shown["messages"]] == [
        (ids[0], "delivered"), (ids[1], "held"), (ids[2], "delivered")]  # not the older one
    got = c.get(f"/api/v1/internal/incidents/{incident}/message-ids").json()
    assert got == {"incident": incident, "statuses": ["delivered"], "message_ids": [ids[0], ids[2]]}
    held = c.get(f"/api/v1/internal/incidents/{incident}/message-ids",
                 params={"status": ["quarantined"]}).json()
    assert held["message_ids"] == [ids[1]]
    closed = c.post(f"/api/v1/internal/incidents/{incident}/close", json={"note": "recalled"})
    assert closed.json()["status"] == "closed" and closed.json()["closed_by"] == env.users["admin"]
    assert c.get("/api/v1/internal/incidents", params={"status": "open"}).json() == []
    assert c.get("/api/v1/internal/incidents/999").status_code == 404
    assert c.get(f"/api/v1/internal/incidents/{2**40}").status_code == 422
    assert audited(env, "internal.incident.close")[0].details == {"account": "m@example.test",
                                                                  "note": "recalled"}


def test_the_cli(env, tmp_path):
    path = tmp_path / "mailmoat.toml"
    path.write_text(f'[storage]\ndata_dir = "{env.config.data_dir}"\n')
    incident, ids = incident_with_mail(env)
    run = CliRunner().invoke
    r = run(cli, ["account", "suspend", "bob@example.test", "-c", str(path), "--kind", "hold",
                  "--minutes", "60", "--reason", "odd logins", "--actor", "ops"])
    assert r.exit_code == 0 and "bob@example.test: mail held until " in r.output, r.output
    r = run(cli, ["account", "list", "-c", str(path)])
    assert "bob@example.test  mail held until" in r.output and "by ops" in r.output
    r = run(cli, ["account", "show", "bob@example.test", "-c", str(path)])
    assert "state:       mail held until" in r.output and "nothing learned yet" in r.output
    r = run(cli, ["account", "release", "bob@example.test", "-c", str(path), "--grace", "0"])
    assert r.exit_code == 0 and r.output.strip() == "bob@example.test: released"
    r = run(cli, ["account", "release", "bob@example.test", "-c", str(path)])
    assert r.exit_code == 1 and "already released" in r.output
    r = run(cli, ["account", "incidents", "--open", "-c", str(path)])
    assert f"{incident:>5}  open" in r.output and "INTERNAL_FANOUT" in r.output
    r = run(cli, ["account", "incident", str(incident), "-c", str(path)])
    assert "messages (3):" in r.output and f"{ids[1]}" in r.output and "held" in r.output
    r = run(cli, ["account", "incident", str(incident), "-c", str(path), "--message-ids"])
    assert r.output.split() == [ids[0], ids[2]]
    r = run(cli, ["account", "close", str(incident), "-c", str(path), "--note", "done"])
    assert r.exit_code == 0 and "closed" in r.output
    r = run(cli, ["account", "incident", "999", "-c", str(path)])
    assert r.exit_code == 1 and "no incident 999" in r.output


def test_statistics(env):
    incident, ids = incident_with_mail(env)
    add_message(env.config, env.db, "out1", rcpts=["x@partner.test"], sender="ann@example.test",
                category="clean", action="accept", direction="outbound")
    with env.db.session() as s:
        s.get(MessageRow, "out1").sender_account = "ann@example.test"
    got = client(env, "admin").get("/api/v1/internal/stats", params={"days": 7}).json()
    assert sum(d["internal"] for d in got["volume"]) == 4
    assert sum(d["outbound"] for d in got["volume"]) == 1
    assert sum(d["stopped"] for d in got["volume"]) == 1  # the held one
    assert got["top_senders"][0] == {"account": "m@example.test", "messages": 4, "stopped": 1}
    assert got["incidents"][0]["opened"] == 1 and got["open_incidents"] == 1
    assert got["restricted"] == {"suspend": 0, "hold": 0, "throttle": 0}
    assert client(env, "alice").get("/api/v1/internal/stats").status_code == 403
