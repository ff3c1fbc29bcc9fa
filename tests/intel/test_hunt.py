"""What the hunt keeps when recall cannot take a match: the hunt is recorded first, marked
failed with the reason, and handed again later; a hunt a crash left pending is handed by
the next retry, one still being handed by a poll is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mailmoat.intel.hunt import hand_pending
from mailmoat.intel.poller import poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.store.models import IntelHuntRow
from tests.conftest import make_email
from tests.intel.conftest import intel_config


async def test_a_refused_hand_over_is_kept_and_handed_again(db, tmp_path, mail_log, recorder):
    await mail_log.deliver("m1", make_email(body="https://refused.example/x"),
                           ["ann@example.test"])
    listing = tmp_path / "l.txt"
    listing.write_text("refused.example\n")
    config = intel_config(tmp_path, db, {"name": "l", "kind": "list", "path": str(listing),
                                         "confidence": 95})

    def down(db, ids, *, reason, requested_by, source,  # type: ignore[no-untyped-def]
             approved=True):
        raise RuntimeError("recall is down")

    assert poll_feed(config, db, intel_settings(config).feeds[0], recall=down).ok
    with db.session() as s:
        hunt = s.scalars(select(IntelHuntRow)).one()
    assert (hunt.status, hunt.mode) == ("failed", "auto")
    assert hunt.error == "RuntimeError: recall is down"
    assert hand_pending(db, recorder, stale_before=datetime.now(UTC)) == 1
    with db.session() as s:
        hunt = s.scalars(select(IntelHuntRow)).one()
    assert (hunt.status, hunt.job_id, hunt.error) == ("handed", "job-1", "")
    assert [c.ids for c in recorder.calls] == [["m1"]]
    assert hand_pending(db, recorder) == 0  # handed once only


def test_a_hunt_left_pending_by_a_crash_is_handed_by_the_next_retry(db, recorder):
    now = datetime.now(UTC)
    with db.session() as s:
        for at, mid in ((now - timedelta(hours=1), "crashed"), (now, "in-flight")):
            s.add(IntelHuntRow(at=at, feed="f", source_id=mid, kind="url",
                               value=f"https://{mid}.example/", confidence=90, mode="auto",
                               status="pending", message_ids=[mid], recipients=[], job_id="",
                               error="", origin="feed"))
    assert hand_pending(db, recorder, stale_before=now - timedelta(minutes=10)) == 1
    assert [c.ids for c in recorder.calls] == [["crashed"]]
    assert recorder.calls[0].source == "intel:f/crashed" and recorder.calls[0].approved


async def test_a_message_is_queued_once_and_recalled_when_a_sure_indicator_comes(
        db, tmp_path, mail_log, recorder):
    await mail_log.deliver("m1", make_email(subject="Wire transfer",
                                            body="https://pay.weak-lure.example/invoice"),
                           ["ann@example.test"])
    weak, sure = tmp_path / "weak.txt", tmp_path / "sure.txt"
    weak.write_text("weak-lure.example\n")
    sure.write_text("")
    config = intel_config(tmp_path, db,
                          {"name": "weak", "kind": "list", "path": str(weak), "confidence": 40},
                          {"name": "other-weak", "kind": "list", "path": str(weak),
                           "confidence": 50},
                          {"name": "sure", "kind": "list", "path": str(sure), "confidence": 95})
    weak_feed, other_feed, sure_feed = intel_settings(config).feeds
    assert poll_feed(config, db, weak_feed, recall=recorder).ok
    assert poll_feed(config, db, other_feed, recall=recorder).ok  # same message, queued already
    assert [(c.ids, c.approved) for c in recorder.calls] == [(["m1"], False)]
    sure.write_text("https://pay.weak-lure.example/invoice\n")
    assert poll_feed(config, db, sure_feed, recall=recorder).ok
    assert [(c.ids, c.approved) for c in recorder.calls] == [(["m1"], False), (["m1"], True)]
    with db.session() as s:
        modes = {h.feed: (h.mode, h.error) for h in s.scalars(select(IntelHuntRow))}
    assert modes["other-weak"] == ("none", "every delivered copy was already handed to "
                                           "recall by an earlier hunt")
    assert modes["sure"] == ("auto", "")


def test_withdrawn_indicators_are_purged_after_the_retention(db, tmp_path, recorder):
    from mailmoat.intel.store import purge_withdrawn
    from mailmoat.store.models import IntelIndicatorRow

    listing = tmp_path / "l.txt"
    listing.write_text("kept.example\nwithdrawn.example\n")
    config = intel_config(tmp_path, db, {"name": "l", "kind": "list", "path": str(listing)})
    feed = intel_settings(config).feeds[0]
    assert poll_feed(config, db, feed, recall=recorder).added == 2
    listing.write_text("kept.example\n")
    assert poll_feed(config, db, feed, recall=recorder).withdrawn == 1
    with db.session() as s:
        assert purge_withdrawn(s, datetime.now(UTC) - timedelta(days=1)) == 0  # too recent
    with db.session() as s:
        assert purge_withdrawn(s, datetime.now(UTC) + timedelta(seconds=1)) == 1
    with db.session() as s:
        assert s.scalars(select(IntelIndicatorRow.value)).all() == ["kept.example"]
