"""Quarantine roles as Microsoft 365's quarantine policies have them, over real HTTP: an end
user releases spam themselves, but a phish or malware only by asking; an administrator
approves (the message is released into the spool) or denies; both hear of it in the console
and, with mail notifications on, by mail through the downstream. Plus the console's list
search, actions on a selection, and confirmation before anything is deleted."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from mailmoat.spool.queue import Spool
from mailmoat.store.models import AuditRow, QuarantineRow
from mailmoat.web.app import create_app
from tests.web.fixtures import seed
from tests.web.live import live_console
from tests.web.sink import Sink
from tests.web.test_users import csrf_of, form_login


@pytest.fixture
def world(tmp_path):
    with Sink() as sink:
        env = seed(tmp_path / "data", delivery={"downstream": f"127.0.0.1:{sink.port}"},
                   digest={"enabled": True, "from_address": "quarantine@corp.test"},
                   web={"public_url": "http://console.test"})
        with live_console(create_app(env.config, env.db)) as base:
            yield env, base, sink
        env.db.dispose()


def client(base: str, env, who: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {env.tokens[who]}"})


def released(env) -> list[tuple[str, list[str]]]:
    sp = Spool(env.config.data_dir / "spool")
    entries = [sp.read("incoming", i)[0] for i in sp.ids("incoming")]
    return sorted((e.handover.released_from, e.rcpt_tos) for e in entries)


def audit_actions(env) -> list[tuple[str, str, str]]:
    with env.db.session() as s:
        return [(r.actor, r.action, r.target) for r in s.scalars(select(AuditRow).order_by(AuditRow.id))]


def mails_to(sink, address: str) -> list:
    return [sink.parsed(i) for i, m in enumerate(sink.messages) if m[1] == [address]]


def test_user_token_cannot_release_a_phish_but_can_request_it(world):
    env, base, sink = world
    alice, bob = client(base, env, "alice"), client(base, env, "bob")
    admin, dadmin = client(base, env, "admin"), client(base, env, "dadmin")
    # Phishing and malware: 403, and nothing is reported, learned or released.
    for mid in ("m0004hostile", "m0005malware"):
        r = alice.post(f"/api/v1/quarantine/{mid}/release", json={"report_not_spam": True})
        assert r.status_code == 403 and "request its release" in r.json()["detail"], r.text
    assert released(env) == []
    assert not [a for a in audit_actions(env) if a[1] in ("quarantine.report", "quarantine.release")]
    # Spam: released by the user at once.
    r = alice.post("/api/v1/quarantine/m0001spamalice/release")
    assert r.status_code == 200 and r.json()["recipients"] == ["alice@a.test"]
    # Someone else's phish stays invisible (404), as before.
    assert bob.post("/api/v1/quarantine/m0004hostile/request-release").status_code == 404
    # The request.
    r = alice.post("/api/v1/quarantine/m0004hostile/request-release", json={"note": "I expected this"})
    assert r.status_code == 201, r.text
    req = r.json()
    assert (req["status"], req["requested_by"], req["recipients"]) == ("pending", "alice@a.test", ["alice@a.test"])
    again = alice.post("/api/v1/quarantine/m0004hostile/request-release")
    assert again.status_code == 409 and "asked for its release already" in again.text
    # Who sees it: the requester, administrators, the domain's administrator; not bob.
    assert [x["id"] for x in alice.get("/api/v1/quarantine/requests").json()] == [req["id"]]
    assert bob.get("/api/v1/quarantine/requests").json() == []
    assert [x["id"] for x in admin.get("/api/v1/quarantine/requests", params={"status": "pending"}).json()] == [req["id"]]
    assert [x["id"] for x in dadmin.get("/api/v1/quarantine/requests").json()] == [req["id"]]
    # The approvers were told by mail: the administrator and a.test's domain administrator.
    [note_admin] = mails_to(sink, "admin@corp.test")
    assert note_admin["Subject"] == "Release requested: Account locked"
    body = note_admin.get_content()
    assert "alice@a.test asks to release a message held as phishing" in body and "I expected this" in body
    assert "http://console.test/quarantine" in body
    assert len(mails_to(sink, "postmaster@a.test")) == 1 and mails_to(sink, "bob@b.test") == []
    # A user cannot decide; the administrator approves and the message is released.
    assert alice.post(f"/api/v1/quarantine/requests/{req['id']}/approve").status_code == 403
    r = admin.post(f"/api/v1/quarantine/requests/{req['id']}/approve", json={"note": "looked fine"})
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["decided_by"] == "admin@corp.test"
    assert ("m0004hostile", ["alice@a.test"]) in released(env)
    assert admin.post(f"/api/v1/quarantine/requests/{req['id']}/approve").status_code == 409
    # The requester sees the outcome, in the API and by mail.
    mine = alice.get("/api/v1/quarantine/requests").json()
    assert (mine[0]["status"], mine[0]["decision_note"]) == ("approved", "looked fine")
    [outcome] = mails_to(sink, "alice@a.test")
    assert outcome["Subject"] == "Release approved: Account locked"
    assert "was approved by admin@corp.test" in outcome.get_content()
    acts = audit_actions(env)
    assert ("alice@a.test", "quarantine.request_release", "m0004hostile") in acts
    assert ("admin@corp.test", "quarantine.release_approved", "m0004hostile") in acts


def test_deny_and_withdrawn_and_domain_scope(world):
    env, base, sink = world
    alice, bob = client(base, env, "alice"), client(base, env, "bob")
    admin, dadmin = client(base, env, "admin"), client(base, env, "dadmin")
    r_mal = alice.post("/api/v1/quarantine/m0005malware/request-release").json()
    r_bob = bob.post("/api/v1/quarantine/m0002phishbob/request-release").json()
    # a.test's domain administrator decides for a.test only.
    assert dadmin.post(f"/api/v1/quarantine/requests/{r_bob['id']}/deny").status_code == 404
    r = dadmin.post(f"/api/v1/quarantine/requests/{r_mal['id']}/deny", json={"note": "it is malware"})
    assert r.status_code == 200 and r.json()["status"] == "denied"
    with env.db.session() as s:
        assert s.get(QuarantineRow, "m0005malware").held_for == ["alice@a.test"]
    assert released(env) == []
    [outcome] = mails_to(sink, "alice@a.test")
    assert outcome["Subject"] == "Release denied: Invoice attached"
    assert "stays in quarantine" in outcome.get_content() and "it is malware" in outcome.get_content()
    # The message leaves quarantine another way: approving finds nothing to release.
    assert admin.post("/api/v1/quarantine/m0002phishbob/delete").status_code == 200
    r = admin.post(f"/api/v1/quarantine/requests/{r_bob['id']}/approve")
    assert r.status_code == 409 and "withdrawn" in r.text
    assert bob.get("/api/v1/quarantine/requests").json()[0]["status"] == "withdrawn"


def test_console_roles_requests_and_confirmations(world):
    env, base, _ = world
    alice = form_login(base, "alice@a.test")
    page = alice.get("/quarantine").text
    csrf = csrf_of(page)
    row = lambda mid: re.search(rf'<tr class="held" data-id="{mid}".*?</tr>', page, re.S).group(0)
    assert 'value="request"' in row("m0004hostile") and 'value="release"' not in row("m0004hostile")
    assert 'value="release"' in row("m0001spamalice")
    # A hand-made release of the phish is refused with the reason.
    r = alice.post("/quarantine/m0004hostile/act", data={"csrf_token": csrf, "op": "release"})
    assert r.status_code == 303 and "released+only+by+an+administrator" in r.headers["location"].replace("%20", "+")
    assert released(env) == []
    r = alice.post("/quarantine/m0004hostile/act", data={"csrf_token": csrf, "op": "request", "note": "please"},
                   follow_redirects=True)
    assert "Asked an administrator to release m0004hostile" in r.text
    assert 'data-status="pending"' in r.text and "waiting for an administrator" in r.text
    # The administrator sees it on the Quarantine page and approves it there.
    admin = form_login(base, "admin@corp.test")
    apage = admin.get("/quarantine").text
    assert 'id="requests-pending"' in apage and "please" in apage
    rid = re.search(r'<tr class="request" data-id="(\d+)"', apage).group(1)
    r = admin.post(f"/quarantine/requests/{rid}/decide", data={"csrf_token": csrf_of(apage), "op": "approve"},
                   follow_redirects=True)
    assert f"Approved request {rid}: released m0004hostile to alice@a.test" in r.text
    assert released(env) == [("m0004hostile", ["alice@a.test"])]
    assert "approved: released" in alice.get("/quarantine").text
    # Delete asks first, for one message and for a selection.
    r = alice.post("/quarantine/m0005malware/act", data={"csrf_token": csrf, "op": "delete"})
    assert r.status_code == 200 and 'id="confirm-question"' in r.text and "Invoice attached" in r.text
    with env.db.session() as s:
        assert s.get(QuarantineRow, "m0005malware").deleted_at is None
    r = alice.post("/quarantine/bulk", data={"csrf_token": csrf, "op": "delete",
                                             "ids": ["m0005malware", "m0006shared"]})
    assert r.status_code == 200 and "Delete these 2 held messages?" in r.text
    # (m0006shared is also held for bob: alice may not delete it.)
    r = alice.post("/quarantine/bulk", data={"csrf_token": csrf, "op": "delete", "confirm": "yes",
                                             "ids": ["m0005malware", "m0006shared"]}, follow_redirects=True)
    assert "Deleted 1 message." in r.text and "m0006shared (it is also held for people outside" in r.text
    # Release a selection: spam goes, a phish is left with what to do instead.
    bob = form_login(base, "bob@b.test")
    r = bob.post("/quarantine/bulk", data={"csrf_token": csrf_of(bob.get("/quarantine").text), "op": "release",
                                           "ids": ["m0006shared", "m0002phishbob"]}, follow_redirects=True)
    assert "Released 1 message." in r.text and "1 may be released only by an administrator (m0002phishbob)" in r.text
    assert ("m0006shared", ["bob@b.test"]) in released(env)


def test_quarantine_search(world):
    env, base, _ = world
    admin = form_login(base, "admin@corp.test")
    ids = lambda **q: re.findall(r'<tr class="held" data-id="([^"]+)"', admin.get("/quarantine", params=q).text)
    assert len(ids()) == 5
    assert ids(category="phishing") == ["m0004hostile", "m0002phishbob"]
    assert ids(subject="INVOICE") == ["m0005malware"]
    assert ids(recipient="bob@") == ["m0006shared", "m0002phishbob"]
    assert ids(sender="spammer@bad") == ids()
    assert ids(sender="nobody") == []
    assert ids(since="2000-01-01", until="2000-01-02") == []
    from datetime import UTC, datetime

    today = datetime.now(UTC).date().isoformat()
    assert len(ids(since=today, until=today)) == 5
    page = admin.get("/quarantine", params={"since": "yesterday"}).text
    assert 'id="search-error"' in page and "is not a date" in page
    # A user's search stays inside their own mail, and matches only recipients they may see:
    # m0006shared is also addressed to bob@b.test, which must not give him away.
    alice = form_login(base, "alice@a.test")
    found = lambda **q: re.findall(r'<tr class="held" data-id="([^"]+)"', alice.get("/quarantine", params=q).text)
    assert found(recipient="b.test") == []
    assert "m0006shared" in found(recipient="alice")
