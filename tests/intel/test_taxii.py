"""A real TAXII 2.1 server (medallion) publishes indicators for URLs that were in mail
logged earlier: the poll picks them up with added_after, the retro-hunt finds the delivered
copies and hands them to recall, routed by confidence."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from mailmoat.intel.live import LiveIndicators
from mailmoat.intel.poller import poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.store.models import IntelFeedRow, IntelHuntRow, IntelIndicatorRow
from tests.conftest import make_email
from tests.intel.conftest import intel_config, stix_indicator

LURE = "https://login.mailbox-verify.example/reset?u=7"
OTHER = "https://invoices.payments-portal.example/view"
RCPTS = ["ann@example.test", "bob@example.test", "cy@example.test"]


def _feed(taxii, tmp_path, **extra):
    secret = tmp_path / "taxii.secret"
    secret.write_text("reader-secret\n")
    return {"name": "local-taxii", "kind": "taxii", "url": taxii.root,
            "collection": taxii.collection, "user": "reader", "password_file": str(secret),
            "poll_interval": 30, "auto_recall_confidence": 70, "lookback_days": 14, **extra}


async def test_taxii_indicators_hunt_delivered_mail_and_route_by_confidence(
        db, tmp_path, taxii, mail_log, recorder):
    await mail_log.deliver("lure1", make_email(subject="Mailbox full",
                                               body=f"Verify now: {LURE}"), RCPTS)
    await mail_log.deliver("inv1", make_email(subject="Invoice", body=f"See {OTHER}"),
                           ["dee@example.test"])
    await mail_log.deliver("clean", make_email(body="Lunch at noon?"), ["ann@example.test"])
    config = intel_config(tmp_path, db, _feed(taxii, tmp_path))
    feed = intel_settings(config).feeds[0]

    taxii.publish(
        stix_indicator("8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f", f"[url:value = '{LURE}']",
                       confidence=85),
        stix_indicator("1c3e5f2a-9b8d-4e6f-a1b2-c3d4e5f60718",
                       f"[url:value = '{OTHER}' OR domain-name:value = 'never-seen.example']",
                       confidence=40),
    )
    report = poll_feed(config, db, feed, recall=recorder)
    assert report.ok, report.error
    assert (report.added, report.hunted) == (3, 3)
    by_id = {c.source.rsplit("/", 1)[1]: c for c in recorder.calls}
    assert len(recorder.calls) == 2
    auto = by_id["indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"]
    assert auto.ids == ["lure1"] and auto.approved is True
    assert auto.source.startswith("intel:local-taxii/") and auto.requested_by == "intel:local-taxii"
    assert "confidence 85" in auto.reason and LURE.split("?")[0] in auto.reason
    queued = by_id["indicator--1c3e5f2a-9b8d-4e6f-a1b2-c3d4e5f60718"]
    assert queued.ids == ["inv1"] and queued.approved is False

    with db.session() as s:
        hunts = {h.source_id: h for h in s.scalars(select(IntelHuntRow))}
        state = s.get(IntelFeedRow, "local-taxii")
        assert state.last_status == "ok" and state.cursor  # X-TAXII-Date-Added-Last
        cursor = state.cursor
    lure = hunts["indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"]
    assert (lure.mode, lure.status) == ("auto", "handed")
    assert lure.job_id == f"job-{recorder.calls.index(auto) + 1}"
    assert sorted(a for _, a in lure.recipients) == RCPTS
    assert hunts["indicator--1c3e5f2a-9b8d-4e6f-a1b2-c3d4e5f60718"].mode == "queued"

    # The next poll asks for what was added after the cursor: nothing new, nothing handed.
    again = poll_feed(config, db, feed, recall=recorder)
    assert again.ok and (again.added, again.changed, again.hunted) == (0, 0, 0)
    assert len(recorder.calls) == 2

    # A third indicator: only it is read, hunted and (matching nothing delivered) recorded.
    taxii.publish(stix_indicator("5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                                 "[domain-name:value = 'mailbox-verify.example']",
                                 confidence=95))
    third = poll_feed(config, db, feed, recall=recorder)
    assert third.ok and third.added == 1
    with db.session() as s:
        assert s.get(IntelFeedRow, "local-taxii").cursor > cursor
    # the domain covers the lure's host; lure1 was already handed automatically
    assert len(recorder.calls) == 2
    with db.session() as s:
        dom = s.scalars(select(IntelHuntRow).where(
            IntelHuntRow.source_id == "indicator--5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f")).one()
        assert dom.message_ids == ["lure1"] and dom.mode == "none"


async def test_a_revoked_version_stops_matching(db, tmp_path, taxii, mail_log, recorder):
    config = intel_config(tmp_path, db, _feed(taxii, tmp_path))
    feed = intel_settings(config).feeds[0]
    uid = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
    taxii.publish(stix_indicator(uid, f"[url:value = '{LURE}']"))
    assert poll_feed(config, db, feed, recall=recorder).ok
    live = LiveIndicators(db)
    live.refresh()
    facts = {("url", "https://login.mailbox-verify.example/reset?u=7")}
    assert [i.source_id for i in live.match(facts)] == [f"indicator--{uid}"]

    taxii.publish(stix_indicator(uid, f"[url:value = '{LURE}']", revoked=True,
                                 modified="2026-11-02T00:00:00.000Z"))
    report = poll_feed(config, db, feed, recall=recorder)
    assert report.ok and report.changed == 1
    with db.session() as s:
        assert s.scalars(select(IntelIndicatorRow.revoked)).all() == [True]
    assert live.refresh() is True and live.match(facts) == []


def test_a_wrong_password_is_a_recorded_error_not_a_crash(db, tmp_path, taxii, recorder):
    feed_table = _feed(taxii, tmp_path)
    (tmp_path / "taxii.secret").write_text("wrong")
    config = intel_config(tmp_path, db, feed_table)
    report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert not report.ok and "HTTP 401" in report.error
    assert "wrong" not in report.error  # the secret is never in an error
    with db.session() as s:
        state = s.get(IntelFeedRow, "local-taxii")
        assert state.last_status == "error" and "HTTP 401" in state.last_error
        assert state.last_poll_at is not None and state.last_success_at is None
    assert datetime.now(UTC) >= state.last_poll_at.replace(tzinfo=UTC)
