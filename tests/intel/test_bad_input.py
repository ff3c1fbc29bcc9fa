"""Bad feeds: malformed STIX, patterns an equality look-up cannot decide, a feed that does
not answer, expired and revoked indicators. Each is a clear, recorded error or a skipped
item with its reason, never a crash, and the other feeds go on."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mailmoat.intel.live import LiveIndicators
from mailmoat.intel.poller import IntelService, poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.store.models import IntelFeedRow, IntelIndicatorRow
from tests.conftest import make_email
from tests.intel.conftest import intel_config, stix_indicator


def _bundle(*objects) -> str:
    return json.dumps({"type": "bundle", "id": "bundle--6b8d2a3e-4f5c-4d6e-9f0a-1b2c3d4e5f60",
                       "objects": list(objects)})


def test_unsupported_patterns_are_skipped_with_a_logged_reason(db, tmp_path, recorder, caplog):
    path = tmp_path / "bundle.json"
    path.write_text(_bundle(
        stix_indicator("00000000-0000-4000-8000-000000000001",
                       "[url:value = 'https://ok.example/login']"),
        stix_indicator("00000000-0000-4000-8000-000000000002", "[url:value LIKE '%evil%']"),
        stix_indicator("00000000-0000-4000-8000-000000000003",
                       "[url:value = 'https://a.example/'] AND [url:value = 'https://b.example/']"),
        stix_indicator("00000000-0000-4000-8000-000000000004",
                       "[file:hashes.'SHA-256' = '" + "ab" * 32 + "' AND file:name = 'x.exe']"),
        stix_indicator("00000000-0000-4000-8000-000000000005", "[url:value = ]"),
        stix_indicator("00000000-0000-4000-8000-000000000006", "alert tcp any any -> any any",
                       pattern_type="snort"),
        {"type": "indicator", "id": "indicator--broken"},
        {"type": "malware", "id": "malware--00000000-0000-4000-8000-000000000007"},
    ))
    config = intel_config(tmp_path, db, {"name": "mixed", "kind": "stix", "path": str(path)})
    with caplog.at_level(logging.WARNING, logger="mailmoat.intel"):
        report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert report.ok and (report.added, report.skipped) == (1, 6)
    with db.session() as s:
        skipped = s.get(IntelFeedRow, "mixed").skipped
    text = "\n".join(skipped)
    for reason in ("operator LIKE", "AND between observations may span several messages",
                   "file:name is not held by the delivery index",
                   "Invalid value for Indicator 'pattern'",
                   "pattern_type snort is not a STIX pattern", "invalid STIX"):
        assert reason in text
        assert reason in caplog.text


def test_malformed_stix_fails_its_feed_and_the_others_go_on(db, tmp_path, file_server,
                                                            recorder):
    (file_server.folder / "broken.json").write_text('{"type": "bundle", "objects": [{"type": ')
    (file_server.folder / "notabundle.json").write_text('{"hello": "world"}')
    good = tmp_path / "good.txt"
    good.write_text("evil-domain.example\n")
    config = intel_config(
        tmp_path, db,
        {"name": "broken", "kind": "stix", "url": file_server.url + "broken.json"},
        {"name": "odd", "kind": "stix", "url": file_server.url + "notabundle.json"},
        {"name": "good", "kind": "list", "path": str(good)})
    done: dict[str, object] = {}
    all_polled = asyncio.Event()

    def polled(report) -> None:
        done[report.feed] = report
        if len(done) == 3:
            all_polled.set()

    async def run() -> None:
        service = IntelService(config, db, recall=recorder, on_poll=polled)
        service.start()
        try:
            await asyncio.wait_for(all_polled.wait(), 30)
        finally:
            await service.close()

    asyncio.run(run())
    assert not done["broken"].ok and "malformed JSON" in done["broken"].error
    assert not done["odd"].ok and 'no "objects" list' in done["odd"].error
    assert done["good"].ok and done["good"].added == 1
    with db.session() as s:
        states = {r.name: r.last_status for r in s.scalars(select(IntelFeedRow))}
    assert states == {"broken": "error", "odd": "error", "good": "ok"}


def test_a_feed_that_does_not_answer_times_out(db, tmp_path, file_server, recorder):
    file_server.hang_paths.update({"/slow.txt", "/taxii/"})
    config = intel_config(
        tmp_path, db,
        {"name": "slow-list", "kind": "list", "url": file_server.url + "slow.txt"},
        {"name": "slow-taxii", "kind": "taxii", "url": file_server.url + "taxii/api1/",
         "collection": "91a7b528-80eb-42ed-a74d-c6fbd5a26116"},
        fetch_timeout=0.5)
    listing, taxii = intel_settings(config).feeds
    report = poll_feed(config, db, listing, recall=recorder)
    assert not report.ok and "did not answer within 0.5 s" in report.error
    report = poll_feed(config, db, taxii, recall=recorder)
    assert not report.ok and "did not answer within 0.5 s" in report.error
    assert report.seconds < 10


async def test_expired_and_revoked_indicators_stop_matching(db, tmp_path, mail_log, recorder):
    await mail_log.deliver("m1", make_email(body="https://expired.example/x and "
                                                 "https://revoked.example/y"),
                           ["ann@example.test"])
    now = datetime.now(UTC)
    soon = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "b.json"
    path.write_text(_bundle(
        stix_indicator("00000000-0000-4000-8000-0000000000e1",
                       "[url:value = 'https://expired.example/x']",
                       valid_until="2026-11-02T00:00:00Z"),
        stix_indicator("00000000-0000-4000-8000-0000000000e2",
                       "[url:value = 'https://revoked.example/y']", revoked=True),
        stix_indicator("00000000-0000-4000-8000-0000000000e3",
                       "[url:value = 'https://soon-expired.example/']", valid_until=soon),
    ))
    config = intel_config(tmp_path, db, {"name": "f", "kind": "stix", "path": str(path)})
    report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert report.ok and report.added == 3 and report.hunted == 1  # only the live one
    assert recorder.calls == []  # the expired and the revoked one are not hunted
    with db.session() as s:
        assert s.scalar(select(IntelIndicatorRow.revoked).where(
            IntelIndicatorRow.value == "https://revoked.example/y")) is True
    live = LiveIndicators(db)
    live.refresh()
    facts = {("url", "https://expired.example/x"), ("url", "https://revoked.example/y"),
             ("url", "https://soon-expired.example/")}
    assert [i.value for i in live.match(facts)] == ["https://soon-expired.example/"]
    assert live.match(facts, now=now + timedelta(hours=2)) == []  # expires between reloads


def test_an_http_error_names_the_feed_and_status_not_the_credentials(db, tmp_path,
                                                                      file_server, recorder):
    url = file_server.url.replace("http://", "http://someone:pa55word@") + "missing.csv"
    config = intel_config(tmp_path, db, {"name": "gone", "kind": "csv", "url": url})
    report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert not report.ok and "answered HTTP 404" in report.error
    assert "pa55word" not in report.error


def test_an_older_version_never_overwrites_a_newer_one(db, tmp_path, recorder):
    uid = "00000000-0000-4000-8000-0000000000f1"
    path = tmp_path / "b.json"
    config = intel_config(tmp_path, db, {"name": "v", "kind": "stix", "path": str(path)})
    feed = intel_settings(config).feeds[0]
    path.write_text(_bundle(stix_indicator(
        uid, "[url:value = 'https://a.example/' OR url:value = 'https://b.example/']",
        modified="2026-11-05T00:00:00.000Z", confidence=80)))
    assert poll_feed(config, db, feed, recall=recorder).added == 2
    # the feed serves an older version with another pattern: nothing changes
    path.write_text(_bundle(stix_indicator(uid, "[url:value = 'https://c.example/']",
                                           modified="2026-11-01T00:00:00.000Z",
                                           confidence=10)))
    report = poll_feed(config, db, feed, recall=recorder)
    assert (report.added, report.changed, report.withdrawn) == (0, 0, 0)
    with db.session() as s:
        rows = s.execute(select(IntelIndicatorRow.value, IntelIndicatorRow.confidence,
                                IntelIndicatorRow.revoked)).all()
    assert sorted(rows) == [("https://a.example/", 80, False), ("https://b.example/", 80, False)]
    # a newer version drops b: b is withdrawn, a is kept with the new confidence
    path.write_text(_bundle(stix_indicator(uid, "[url:value = 'https://a.example/']",
                                           modified="2026-11-09T00:00:00.000Z",
                                           confidence=90)))
    report = poll_feed(config, db, feed, recall=recorder)
    assert (report.changed, report.withdrawn) == (1, 1)


def test_a_taxii_url_that_answers_garbage_is_a_clear_error(db, tmp_path, file_server,
                                                           recorder):
    coll = file_server.folder / "api1" / "collections" / "c1"
    coll.mkdir(parents=True)
    (coll / "index.html").write_text("<html><body>Welcome to nginx!</body></html>")
    config = intel_config(tmp_path, db, {"name": "not-taxii", "kind": "taxii",
                                         "url": file_server.url + "api1/", "collection": "c1"})
    report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert not report.ok and report.error.startswith("feed not-taxii: TAXII:"), report.error
    assert "Unexpected Response" in report.error
