"""The REST API (administrators only, no secrets) and the `mailmoat intel` commands."""

from __future__ import annotations

import json
import subprocess

from fastapi.testclient import TestClient

from mailmoat.intel.poller import poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.web.app import create_app
from mailmoat.web.auth import create_token, create_user, set_hash_cost
from tests.conftest import make_email, mailmoat_cmd, subprocess_env
from tests.intel.conftest import intel_config


def _setup(tmp_path, db):
    listing = tmp_path / "iocs.txt"
    listing.write_text("https://lure.example/login\nsecond-lure.example\n")
    secret = tmp_path / "pw.secret"
    secret.write_text("s3cret-never-shown")
    config = intel_config(tmp_path, db,
                          {"name": "own", "kind": "list", "path": str(listing), "confidence": 80,
                           "auto_recall_confidence": 90, "user": "u",
                           "password_file": str(secret)})
    return config, listing


async def test_api_shows_feeds_indicators_hunts_and_queue_to_admins_only(
        db, tmp_path, mail_log, recorder):
    set_hash_cost(1, 1024)
    await mail_log.deliver("m1", make_email(body="https://lure.example/login"),
                           ["ann@example.test", "bob@example.test"])
    config, _ = _setup(tmp_path, db)
    assert poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder).ok
    admin = create_token(db, create_user(db, "admin@corp.test", "admin", "pw-admin-1").id)
    user = create_token(db, create_user(db, "alice@example.test", "user", "pw-user-12").id)
    app = create_app(config, db)
    with TestClient(app, headers={"Authorization": f"Bearer {admin}"}) as c:
        body = c.get("/api/v1/intel/feeds").json()
        assert [(f["name"], f["last_status"], f["live_indicators"]) for f in body["items"]] == \
            [("own", "ok", 2)]
        assert "s3cret" not in json.dumps(body)
        ind = c.get("/api/v1/intel/indicators", params={"kind": "url"}).json()["items"]
        assert [i["value"] for i in ind] == ["https://lure.example/login"]
        queue = c.get("/api/v1/intel/queue").json()["items"]
        assert len(queue) == 1 and queue[0]["mode"] == "queued"  # 80 < 90
        assert sorted(r["recipient"] for r in queue[0]["recipients"]) == \
            ["ann@example.test", "bob@example.test"]
        one = c.get(f"/api/v1/intel/hunts/{queue[0]['id']}").json()
        assert one["source_id"] == "https://lure.example/login" and one["job_id"] == "job-1"
        assert c.get("/api/v1/intel/hunts/999").status_code == 404
        assert c.get("/api/v1/intel/hunts", params={"mode": "auto"}).json()["items"] == []
        assert c.post("/api/v1/intel/feeds/nope/poll").status_code == 404
        polled = c.post("/api/v1/intel/feeds/own/poll").json()
        assert polled["ok"] and polled["added"] == 0
    with TestClient(app, headers={"Authorization": f"Bearer {user}"}) as c:
        for path in ("/api/v1/intel/feeds", "/api/v1/intel/indicators", "/api/v1/intel/hunts",
                     "/api/v1/intel/queue"):
            assert c.get(path).status_code == 403
    with TestClient(app) as c:
        assert c.get("/api/v1/intel/feeds").status_code == 401


async def test_cli_poll_list_feeds_and_hunt(db, tmp_path, mail_log):
    await mail_log.deliver("m1", make_email(body="see https://www.second-lure.example/x"),
                           ["ann@example.test"])
    config, listing = _setup(tmp_path, db)
    toml = tmp_path / "mailmoat.toml"
    toml.write_text(f"""
[storage]
data_dir = "{tmp_path / 'var'}"
database_url = "{db.url}"

[[intel.feeds]]
name = "own"
kind = "list"
path = "{listing}"
confidence = 80
user = "u"
password_file = "{tmp_path / 'pw.secret'}"
""")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(mailmoat_cmd("intel", *args, "--config", str(toml)),
                              capture_output=True, text=True, env=subprocess_env(), timeout=120)

    polled = run("poll", "--json")
    assert polled.returncode == 0, polled.stderr
    report = json.loads(polled.stdout)
    # the recall side is not installed here or refused: the hunt is recorded and kept
    assert report["ok"] and report["added"] == 2 and len(report["hunts"]) == 1
    listed = [json.loads(x) for x in run("list", "--json").stdout.splitlines()]
    assert {i["value"] for i in listed} == {"https://lure.example/login", "second-lure.example"}
    feeds = run("feeds", "--json")
    assert json.loads(feeds.stdout)["live_indicators"] == 2
    assert "s3cret" not in polled.stdout + feeds.stdout + polled.stderr
    hunted = [json.loads(x) for x in run("hunt", "--json").stdout.splitlines()]
    assert [(h["value"], h["message_ids"]) for h in hunted] == [("second-lure.example", ["m1"])]
    one = run("hunt", "--kind", "url", "--value", "https://WWW.second-lure.example/x", "--json")
    assert json.loads(one.stdout)["recipients"] == [{"id": "m1", "recipient": "ann@example.test"}]
    missing = run("poll", "--feed", "nope")
    assert missing.returncode == 2 and "no feed named nope" in missing.stderr
