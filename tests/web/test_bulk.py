"""Bulk in the console and the API: a category of its own in tracking and on the dashboard
(never a threat), the bulk level on the message page, and a user's own bulk threshold and
action, saved as a recipient override in a new, audited policy version."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailmoat.config import config_from_dict
from mailmoat.policy.decide import thresholds_for
from mailmoat.store.models import AuditRow
from mailmoat.web.charts import COLORS
from mailmoat.web.policy_store import (
    apply_policy_document,
    current_overrides,
    latest_version_id,
    validate_document,
)
from tests.web.conftest import bearer
from tests.web.fixtures import add_message
from tests.web.test_pages import form_login

ALICE = "alice@a.test"


@pytest.fixture
def bulk_env(env):
    """The seeded mail plus two bulk messages: one delivered to alice, one that bob's
    settings quarantined (it must still not count as blocked or as a threat)."""
    now = datetime.now(UTC)
    add_message(env.config, env.db, "m0100bulkalice", rcpts=[ALICE], sender="news@news.test",
                subject="Weekly digest", category="bulk", action="accept", score=1.0, bulk_level=6,
                when=now - timedelta(minutes=3), symbols=[])
    add_message(env.config, env.db, "m0101bulkbob", rcpts=["bob@b.test"], sender="news@news.test",
                subject="Offers", category="bulk", action="quarantine", score=1.0, bulk_level=8,
                when=now - timedelta(minutes=2), symbols=[])
    return env


def live_thresholds(env, address: str):
    return thresholds_for(apply_policy_document(env.config, current_overrides(env.db)).policy, address)


def set_keys(entries: dict) -> dict:
    """Override entries as saved, without the keys left unset (stored as null)."""
    return {k: {f: v for f, v in o.items() if v is not None} for k, o in entries.items()}


def audit_rows(env, action: str) -> list[AuditRow]:
    with env.db.session() as s:
        return list(s.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id)))


def test_tracking_filters_bulk_and_the_message_page_shows_the_level(app, bulk_env):
    alice, admin = bearer(app, bulk_env, "alice"), bearer(app, bulk_env, "admin")
    r = admin.get("/api/v1/messages", params={"category": "bulk"})
    assert r.status_code == 200
    assert [(m["id"], m["category"], m["bulk_level"]) for m in r.json()["items"]] == [
        ("m0101bulkbob", "bulk", 8), ("m0100bulkalice", "bulk", 6)]
    assert [m["id"] for m in alice.get("/api/v1/messages", params={"category": "bulk"}).json()["items"]] == [
        "m0100bulkalice"]
    assert admin.get("/api/v1/messages", params={"category": "newsletter"}).status_code == 422
    spam = admin.get("/api/v1/messages", params={"category": "spam"}).json()["items"]
    assert spam and all(m["category"] == "spam" and m["bulk_level"] is None for m in spam)
    assert alice.get("/api/v1/messages/m0100bulkalice").json()["bulk_level"] == 6
    enum = admin.get("/openapi.json").json()["components"]["schemas"]["Category"]["enum"]
    assert "bulk" in enum

    c, _ = form_login(app, ALICE)
    page = c.get("/messages", params={"category": "bulk"}).text
    assert "<option selected>bulk</option>" in page
    assert re.findall(r'href="/messages/(\w+)"', page) == ["m0100bulkalice"]
    assert 'class="badge b-bulk"' in page
    detail = c.get("/messages/m0100bulkalice").text
    assert '<span class="badge b-bulk">bulk</span>' in detail
    assert re.search(r'id="bulk-level"[^>]*>bulk level 6<', detail)
    assert 'id="bulk-level"' not in c.get("/messages/m0001spamalice").text
    assert ".b-bulk{" in c.get("/static/app.css").text


def test_dashboard_counts_bulk_separately_and_not_as_a_threat(app, bulk_env):
    admin, alice = bearer(app, bulk_env, "admin"), bearer(app, bulk_env, "alice")
    d = admin.get("/api/v1/stats/dashboard").json()
    cats = {c["key"]: c["count"] for c in d["by_category"]}
    assert cats["bulk"] == 2 and d["bulk"] == 2
    assert d["total"] == 8 and d["threats"] == 5  # spam 2, phishing 2, malware 1; not clean, not bulk
    assert sum(p["count"] for p in d["volume"] if p["category"] == "bulk") == 2
    # bob's quarantined bulk is neither a blocked sender nor a targeted recipient
    assert "news.test" not in {c["key"] for c in d["top_blocked_domains"]}
    assert "news@news.test" not in {c["key"] for c in d["top_blocked_senders"]}
    assert {c["key"]: c["count"] for c in d["top_recipients"]}["bob@b.test"] == 2  # phish + shared
    mine = alice.get("/api/v1/stats/dashboard").json()
    assert mine["bulk"] == 1 and mine["threats"] == 4

    c, _ = form_login(app, "admin@corp.test")
    page = c.get("/").text
    assert '<span id="threats">5 threats</span>' in page and '<span id="bulk">2 bulk</span>' in page
    volume = page.split('id="chart-volume"')[1].split("</svg>")[0]
    bulk_bars = re.findall(r'data-category="bulk" data-count="(\d+)"[^>]*fill="([^"]+)"', volume)
    assert sum(int(n) for n, _ in bulk_bars) == 2 and {f for _, f in bulk_bars} == {COLORS["bulk"]}
    assert 'data-key="bulk" data-count="2"' in page.split('id="chart-category"')[1]


def test_user_sets_own_bulk_threshold_through_the_api(app, env):
    admin, alice = bearer(app, env, "admin"), bearer(app, env, "alice")
    doc = admin.get("/api/v1/policy").json()["document"]
    assert doc["thresholds"]["bulk_threshold"] == 7 and doc["thresholds"]["bulk_action"] == "deliver"
    doc["domains"] = {"a.test": {"bulk_threshold": 5}}
    assert admin.put("/api/v1/policy", json={"document": doc}).status_code == 200

    got = alice.get("/api/v1/me/bulk").json()
    assert (got["address"], got["bulk_threshold"], got["threshold_from"]) == (ALICE, 5, "domain")
    assert (got["bulk_action"], got["action_from"]) == ("deliver", "global")

    r = alice.put("/api/v1/me/bulk", json={"bulk_threshold": 3, "bulk_action": "quarantine"})
    assert r.status_code == 200, r.text
    assert r.json() | {"version": None} == {
        "address": ALICE, "bulk_threshold": 3, "threshold_from": "recipient", "bulk_action": "quarantine",
        "action_from": "recipient", "own_threshold": 3, "own_action": "quarantine", "version": None}
    version = latest_version_id(env.db)
    assert r.json()["version"] == version
    saved = current_overrides(env.db)
    assert set_keys(saved["recipients"]) == {ALICE: {"bulk_threshold": 3, "bulk_action": "quarantine"}}
    assert set_keys(saved["domains"]) == {"a.test": {"bulk_threshold": 5}}  # the admin's edit is kept
    (entry,) = audit_rows(env, "policy.bulk")
    assert (entry.actor, entry.target) == (ALICE, f"policy:{version}")
    assert entry.details == {"address": ALICE, "bulk_threshold": 3, "bulk_action": "quarantine"}
    t = live_thresholds(env, ALICE)
    assert (t.bulk, t.bulk_action) == (3, "quarantine")
    carol = live_thresholds(env, "carol@a.test")  # alice's domain, not alice
    assert (carol.bulk, carol.bulk_action) == (5, "deliver")

    # The policy form carries the users' settings, so an administrator's save keeps them.
    c, csrf = form_login(app, "admin@corp.test")
    page = c.get("/policy").text
    assert "alice@a.test" in page and 'name="bulk_threshold" value="7"' in page
    form = {"csrf_token": csrf, "comment": "no change"} | {
        k: v for k, v in re.findall(r'<input name="(\w+)" value="([^"]*)"', page)}
    form |= {k: v.strip() for k, v in re.findall(r'<textarea name="(\w+)"[^>]*>([^<]*)</textarea>', page)}
    form = {k: v.replace("&#34;", '"') for k, v in form.items()} | {"bulk_action": "deliver"}
    assert c.post("/policy", data=form).status_code == 303
    assert current_overrides(env.db)["recipients"][ALICE]["bulk_threshold"] == 3

    r = alice.delete("/api/v1/me/bulk")
    assert r.status_code == 200 and r.json()["threshold_from"] == "domain" and r.json()["bulk_threshold"] == 5
    assert ALICE not in current_overrides(env.db)["recipients"]
    assert [e.details["bulk_threshold"] for e in audit_rows(env, "policy.bulk")] == [3, None]


def test_user_cannot_set_anyone_elses_bulk_settings(app, env):
    alice, dadmin = bearer(app, env, "alice"), bearer(app, env, "dadmin")
    body = {"bulk_threshold": 2, "bulk_action": "quarantine"}
    r = alice.put("/api/v1/me/bulk", json=body | {"address": "bob@b.test"})
    assert r.status_code == 403 and "only your own" in r.json()["detail"]
    # a domain administrator neither: a user's own setting is theirs
    assert dadmin.put("/api/v1/me/bulk", json=body | {"address": ALICE}).status_code == 403
    assert alice.put("/api/v1/policy", json={"document": {"recipients": {"bob@b.test": body}}}).status_code == 403
    c, csrf = form_login(app, ALICE)
    r = c.post("/settings", data={"csrf_token": csrf, "address": "bob@b.test", "bulk_threshold": "2",
                                  "bulk_action": "quarantine"})
    assert r.status_code == 403 and "only your own" in r.text
    assert c.post("/settings", data={"bulk_threshold": "2", "bulk_action": "deliver"}).status_code == 403  # no CSRF
    assert latest_version_id(env.db) is None and audit_rows(env, "policy.bulk") == []
    t = live_thresholds(env, "bob@b.test")
    assert (t.bulk, t.bulk_action) == (7, "deliver")
    # Case and spaces do not make an address someone else's.
    assert alice.put("/api/v1/me/bulk", json=body | {"address": " Alice@A.test"}).status_code == 200


def test_invalid_bulk_values_are_refused(app, env):
    alice, admin = bearer(app, env, "alice"), bearer(app, env, "admin")
    r = alice.put("/api/v1/me/bulk", json={"bulk_threshold": 11, "bulk_action": "deliver"})
    assert r.status_code == 422 and "less than or equal to 10" in r.text
    r = alice.put("/api/v1/me/bulk", json={"bulk_threshold": 5, "bulk_action": "maybe"})
    assert r.status_code == 422 and "deliver" in r.text and "quarantine" in r.text

    c, csrf = form_login(app, ALICE)
    page = c.get("/settings").text
    assert 'name="bulk_threshold" value="7"' in page and "10 never marks mail bulk" in page
    r = c.post("/settings", data={"csrf_token": csrf, "bulk_threshold": "11", "bulk_action": "quarantine"})
    assert r.status_code == 422
    assert "give a whole number from 0 (mark the most mail bulk) to 10 (never mark mail bulk)" in r.text
    assert 'name="bulk_threshold" value="11"' in r.text
    assert '<option value="quarantine" selected>' in r.text  # what was chosen stays chosen
    r = c.post("/settings", data={"csrf_token": csrf, "bulk_threshold": "4", "bulk_action": "maybe"})
    assert r.status_code == 422 and "choose deliver or quarantine" in r.text
    assert 'name="bulk_threshold" value="4"' in r.text
    assert latest_version_id(env.db) is None

    doc = admin.get("/api/v1/policy").json()["document"]
    for bad in ({"domains": {"a.test": {"bulk_threshold": 11}}},
                {"domains": {"a.test": {"bulk_action": "maybe"}}},
                {"recipients": {"@a.test": {"bulk_threshold": 3}}},
                {"recipients": {ALICE: {"bulk_threshold": -1}}},
                {"thresholds": doc["thresholds"] | {"bulk_threshold": 11}}):
        assert admin.put("/api/v1/policy", json={"document": doc | bad}).status_code == 422, bad


def test_user_saves_from_the_settings_page(app, env):
    c, csrf = form_login(app, ALICE)
    r = c.post("/settings", data={"csrf_token": csrf, "bulk_threshold": "4", "bulk_action": "quarantine",
                                  "address": ALICE, "op": "save"})
    assert r.status_code == 303
    page = c.get(r.headers["location"]).text
    assert "Saved: bulk threshold 4, bulk mail quarantine." in page
    assert '<td id="in-force-threshold">4</td><td>your own setting</td>' in page
    saved = set_keys(current_overrides(env.db)["recipients"])
    assert saved == {ALICE: {"bulk_threshold": 4, "bulk_action": "quarantine"}}
    assert audit_rows(env, "policy.bulk")[0].actor == ALICE
    r = c.post("/settings", data={"csrf_token": csrf, "op": "reset"})
    assert r.status_code == 303 and "threshold 7" in c.get(r.headers["location"]).text
    assert current_overrides(env.db)["recipients"] == {}


def test_admin_sets_bulk_globally_and_per_domain_on_the_policy_page(app, env):
    c, csrf = form_login(app, "admin@corp.test")
    base = {"csrf_token": csrf, "tag_threshold": "5", "quarantine_threshold": "10", "reject_threshold": "15",
            "bulk_threshold": "6", "bulk_action": "deliver",
            "domains": '{"b.test": {"bulk_threshold": 4, "bulk_action": "quarantine"}}',
            "recipients": '{"alice@a.test": {"bulk_threshold": 9}}'}
    assert c.post("/policy", data=base).status_code == 303
    assert (live_thresholds(env, "carol@a.test").bulk, live_thresholds(env, ALICE).bulk) == (6, 9)
    bob = live_thresholds(env, "bob@b.test")
    assert (bob.bulk, bob.bulk_action) == (4, "quarantine")
    r = c.post("/policy", data=base | {"domains": '{"b.test": {"bulk_action": "maybe"}}'})
    assert r.status_code == 422 and "bulk_action" in r.text
    r = c.post("/policy", data=base | {"recipients": "{nope"})
    assert r.status_code == 422 and "Per-recipient overrides are not valid JSON" in r.text


def test_documents_without_bulk_settings_leave_the_toml_in_force(tmp_path):
    config = config_from_dict({"storage": {"data_dir": str(tmp_path)},
                               "policy": {"bulk_threshold": 4, "bulk_action": "quarantine",
                                          "recipients": {"ceo@a.test": {"allow_senders": ["x@y.test"]}}}})
    old = {"thresholds": {"tag_threshold": 5, "quarantine_threshold": 10, "reject_threshold": 15},
           "recipients": {"ceo@a.test": {"bulk_threshold": 2}}}
    assert validate_document(old).thresholds.bulk_threshold is None
    live = apply_policy_document(config, old)
    assert (live.policy.bulk_threshold, live.policy.bulk_action) == (4, "quarantine")
    # a recipient entry is merged over the TOML's, whose lists it does not carry
    assert live.policy.recipients["ceo@a.test"] == {"allow_senders": ["x@y.test"], "bulk_threshold": 2}
    assert thresholds_for(live.policy, "ceo@a.test").bulk == 2


def test_the_logged_verdict_carries_the_bulk_level_to_the_message_page(app, env):
    """From Verdict.bulk_level through the message log (store/log.py) to the console, with
    the user's own threshold deciding whether the same mail is bulk."""
    from mailmoat.message.model import Envelope
    from mailmoat.message.parse import parse_message
    from mailmoat.policy.decide import decide
    from mailmoat.scan.base import ScanResult
    from mailmoat.scan.engine import ScanOutcome
    from mailmoat.store.log import message_log_data, write_message
    from tests.conftest import make_email

    bearer(app, env, "alice").put("/api/v1/me/bulk", json={"bulk_threshold": 4, "bulk_action": "deliver"})
    policy = apply_policy_document(env.config, current_overrides(env.db)).policy
    envelope = Envelope(mail_from="news@news.test", rcpt_tos=(ALICE, "bob@b.test"), client_ip="192.0.2.5")
    result = ScanResult(specs={})
    result.facts.bulk_level = 5
    verdicts = {r: decide(result, policy, r) for r in envelope.rcpt_tos}
    assert (verdicts[ALICE].category.value, verdicts["bob@b.test"].category.value) == ("bulk", "clean")
    outcome = ScanOutcome(message=parse_message(make_email(subject="News", to=ALICE), envelope),
                          result=result, verdict=verdicts[ALICE], per_recipient=verdicts, elapsed=0.01)
    with env.db.session() as s:
        write_message(s, message_log_data(mailmoat_id="m0200logged", envelope=envelope, outcome=outcome))
    c, _ = form_login(app, ALICE)
    page = c.get("/messages/m0200logged").text
    assert '<span class="badge b-bulk">bulk</span>' in page and ">bulk level 5<" in page
