"""The console's threat-intelligence pages (administrators only): the feeds with their last
poll and a "poll now" button, the searchable indicators, the hunts (indicator, feed, the
mail it matched, recalled automatically or queued, the recall job and its per-recipient
outcome) and the approval queue, whose approve and deny buttons decide the waiting recall
through recall's own functions and are audited. Forms post with the session's CSRF token,
as a browser does; polls hand over to the real recall jobs."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from mailmoat.recall.jobs import get_job, job_items
from mailmoat.store.models import AuditRow
from mailmoat.web.app import create_app
from mailmoat.web.auth import create_user, set_hash_cost
from tests.conftest import make_email
from tests.intel.conftest import intel_config
from tests.web.fixtures import PASSWORD

SURE = "https://lure.example/login"


def session(app, email: str) -> tuple[TestClient, str]:
    c = TestClient(app)
    r = c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


def flash(r) -> str:
    m = re.search(r'id="flash">([^<]*)<', r.text)
    return m.group(1) if m else ""


async def test_feeds_hunts_and_queue_pages(db, tmp_path, mail_log) -> None:
    set_hash_cost(1, 1024)
    # m1 reached two of our mailboxes and, as an outbound copy, a partner's; m2 and m3 one
    # mailbox each.
    await mail_log.deliver("m1", make_email(subject="Password expiry", body=f"Go to {SURE}"),
                           ["ann@example.test", "bob@example.test", "pat@partner.test"])
    await mail_log.deliver("m2", make_email(subject="Shared file",
                                            body="See https://files.second-lure.example/x"),
                           ["cy@example.test"])
    await mail_log.deliver("m3", make_email(subject="Invoice",
                                            body="Pay at https://pay.third-lure.example/"),
                           ["dee@example.test"])
    sure = tmp_path / "sure.txt"
    sure.write_text(f"{SURE}\n")
    maybe = tmp_path / "maybe.txt"
    maybe.write_text("second-lure.example\nthird-lure.example\n")
    secret = tmp_path / "pw.secret"
    secret.write_text("s3cret-never-shown")
    config = intel_config(
        tmp_path, db,
        {"name": "sure-list", "kind": "list", "url": "http://reader:pw@127.0.0.1:9/sure.txt",
         "confidence": 95, "auto_recall_confidence": 90},
        {"name": "maybe-list", "kind": "list", "path": str(maybe), "confidence": 50,
         "auto_recall_confidence": 90, "user": "u", "password_file": str(secret)},
        {"name": "local-list", "kind": "list", "path": str(sure), "confidence": 95,
         "auto_recall_confidence": 90})
    create_user(db, "admin@corp.test", "admin", PASSWORD, [])
    create_user(db, "alice@example.test", "user", PASSWORD, [])
    create_user(db, "post@example.test", "domain_admin", PASSWORD, ["example.test"])
    app = create_app(config, db)
    admin, csrf = session(app, "admin@corp.test")

    # Administrators only, and in the navigation for them alone.
    assert 'href="/intel/feeds"' in admin.get("/").text
    for who in ("alice@example.test", "post@example.test"):
        other, _ = session(app, who)
        assert 'href="/intel/feeds"' not in other.get("/").text
        for path in ("/intel/feeds", "/intel/indicators", "/intel/hunts", "/intel/queue"):
            assert other.get(path).status_code == 403, (who, path)

    page = admin.get("/intel/feeds").text
    for name in ("sure-list", "maybe-list", "local-list"):
        assert f'id="btn-poll-{name}"' in page
    # The URL is shown without its credentials; no secret is shown.
    assert "http://127.0.0.1:9/sure.txt" in page and "reader:pw" not in page
    assert "s3cret" not in page and "never" in page

    # Poll now: a wrong CSRF token does nothing; the right one polls, hunts and hands over.
    r = admin.post("/intel/feeds/local-list/poll", data={"csrf_token": "wrong"},
                   follow_redirects=False)
    assert r.status_code == 403
    r = admin.post("/intel/feeds/local-list/poll", data={"csrf_token": csrf})
    assert flash(r) == ("Polled local-list: 1 new, 0 changed, 0 withdrawn, 0 skipped; "
                        "1 hunt(s) matched delivered mail.")
    feed_row = r.text.split('id="feed-local-list"')[1].split("</tr>")[0]
    assert "ok" in feed_row and "<td>1</td>" in feed_row  # one live indicator
    # A feed that cannot be read shows its error.
    r = admin.post("/intel/feeds/sure-list/poll", data={"csrf_token": csrf})
    assert flash(r).startswith("Poll of sure-list failed:")
    assert "error" in r.text.split('id="feed-sure-list"')[1].split("</tr>")[0]
    assert admin.post("/intel/feeds/nope/poll", data={"csrf_token": csrf}).status_code == 404

    # The hunt: recalled automatically, the partner's copy left out.
    hunts = admin.get("/intel/hunts").text
    row = hunts.split('class="hunt"')[1].split("</tr>")[0]
    assert "local-list" in row and SURE in row and "recalled automatically" in row
    hunt_id = int(re.search(r'href="/intel/hunts/(\d+)"', row).group(1))
    job_id = int(re.search(r'href="/recall/jobs/(\d+)"', row).group(1))
    detail = admin.get(f"/intel/hunts/{hunt_id}").text
    assert "local-list" in detail.split('id="hunt-feed"')[1].split("</td>")[0]
    assert SURE in detail.split('id="hunt-indicator"')[1].split("</td>")[0]
    assert "Password expiry" in detail.split('id="hunt-messages"')[1]
    outcome = detail.split('id="hunt-recipients"')[1].split("</table>")[0]
    assert outcome.count(">pending<") == 2 and "pat@partner.test" in outcome
    assert "outside our domains" in outcome
    assert get_job(db, job_id).state == "pending"
    assert admin.get("/intel/hunts/999").status_code == 404

    # Below the threshold: two recalls wait in the queue.
    admin.post("/intel/feeds/maybe-list/poll", data={"csrf_token": csrf})
    queue = admin.get("/intel/queue").text
    waiting = re.findall(r'id="queued-(\d+)"', queue)
    assert len(waiting) == 2 and "waits for approval" in queue
    by_value = {}
    for hid in waiting:
        row = queue.split(f'id="queued-{hid}"')[1].split("</tr>")[0]
        assert f'id="btn-approve-{hid}"' in row and f'id="btn-deny-{hid}"' in row
        by_value["second" if "second-lure" in row else "third"] = int(hid)
    r = admin.post(f"/intel/queue/{by_value['second']}/act",
                   data={"csrf_token": csrf, "op": "approve", "note": "seen it too"})
    assert flash(r).startswith(f"Approved: the recall of hunt {by_value['second']} is queued")
    r = admin.post(f"/intel/queue/{by_value['third']}/act",
                   data={"csrf_token": csrf, "op": "deny"})
    assert flash(r).startswith(f"Denied: hunt {by_value['third']}")
    assert "Nothing waits for approval." in r.text
    decided = r.text.split('id="intel-decided"')[1]
    assert "approved" in decided and "denied" in decided
    # Deciding twice is refused with the reason, not an error page.
    r = admin.post(f"/intel/queue/{by_value['third']}/act",
                   data={"csrf_token": csrf, "op": "approve"})
    assert "not awaiting approval" in flash(r)
    r = admin.post(f"/intel/queue/{hunt_id}/act", data={"csrf_token": csrf, "op": "approve"})
    assert f"hunt {hunt_id} is not in the approval queue (auto)" in flash(r)
    r = admin.post(f"/intel/queue/{by_value['second']}/act",
                   data={"csrf_token": "wrong", "op": "deny"}, follow_redirects=False)
    assert r.status_code == 403

    api = admin.get("/api/v1/intel/hunts").json()["items"]
    states = {h["value"]: h["job_state"] for h in api}
    assert states == {SURE: "pending", "second-lure.example": "pending",
                      "third-lure.example": "denied"}
    third = next(h for h in api if h["value"] == "third-lure.example")
    assert all(i.status == "pending" and not i.moved
               for i in job_items(db, int(third["job_id"])))
    with db.session() as s:
        audited = [(a.actor, a.action, a.target) for a in s.scalars(
            select(AuditRow).where(AuditRow.action.in_(
                ("intel.approve", "intel.deny", "intel.poll", "recall.approve",
                 "recall.deny"))).order_by(AuditRow.id))]
    second_job = next(h["job_id"] for h in api if h["value"] == "second-lure.example")
    assert ("admin@corp.test", "intel.approve", f"intel-hunt:{by_value['second']}") in audited
    assert ("admin@corp.test", "intel.deny", f"intel-hunt:{by_value['third']}") in audited
    assert ("admin@corp.test", "recall.approve", f"recall-job:{second_job}") in audited
    assert ("admin@corp.test", "intel.poll", "intel-feed:local-list") in audited

    # Indicators: searchable by feed, kind and part of the value.
    page = admin.get("/intel/indicators", params={"q": "LURE"}).text
    assert page.count('class="indicator"') == 3
    page = admin.get("/intel/indicators", params={"kind": "url"}).text
    assert page.count('class="indicator"') == 1 and SURE in page
    page = admin.get("/intel/indicators", params={"feed": "maybe-list", "q": "third"}).text
    assert page.count('class="indicator"') == 1 and "third-lure.example" in page
    assert "kind must be one of" in admin.get("/intel/indicators",
                                              params={"kind": "bogus"}).text
