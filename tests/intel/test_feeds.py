"""MISP static feeds over local HTTP, STIX files, plain lists and abuse.ch-style CSV: each
is read, stored, hunted against mail logged through the real message log, and what a feed
withdraws stops matching."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select

from mailmoat.intel.misp import confidence_of
from mailmoat.intel.poller import poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.store.models import IntelHuntRow, IntelIndicatorRow
from tests.conftest import make_email
from tests.intel.conftest import intel_config, stix_indicator

PAYLOAD = b"MZ\x90\x00 not really a program, but a file with a hash " * 20
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
EVENT = "5f3a1b2c-0d4e-4f60-8a7b-9c0d1e2f3a4b"


def _event(uuid: str, attributes: list[dict], threat_level: str = "1", tags=()) -> dict:
    return {"Event": {"uuid": uuid, "info": "Invoice malspam wave", "threat_level_id": threat_level,
                      "timestamp": "1790000000", "published": True,
                      "Tag": [{"name": t} for t in tags], "Attribute": attributes}}


def _attr(uuid: str, atype: str, value: str, to_ids: bool = True) -> dict:
    return {"uuid": uuid, "type": atype, "value": value, "to_ids": to_ids,
            "category": "Payload delivery", "timestamp": "1790000000"}


async def test_misp_static_feed_over_http_hunts_an_attachment_hash(
        db, tmp_path, file_server, mail_log, recorder):
    await mail_log.deliver("mal1", make_email(subject="Your invoice", attachments=[
        ("invoice.exe", "application/octet-stream", PAYLOAD)]),
        ["ann@example.test", "bob@example.test"])
    await mail_log.deliver("ok1", make_email(subject="Minutes"), ["ann@example.test"])
    feed_dir = file_server.folder / "misp"
    feed_dir.mkdir()
    manifest = {EVENT: {"info": "Invoice malspam wave", "timestamp": "1790000000",
                        "threat_level_id": "1"}}
    (feed_dir / "manifest.json").write_text(json.dumps(manifest))
    (feed_dir / f"{EVENT}.json").write_text(json.dumps(_event(EVENT, [
        _attr("a0000000-0000-4000-8000-000000000001", "filename|sha256",
              f"invoice.exe|{PAYLOAD_SHA.upper()}"),
        _attr("a0000000-0000-4000-8000-000000000002", "email-src", "Billing@Lure.Example",
              to_ids=False),
        _attr("a0000000-0000-4000-8000-000000000003", "text", "a note, not an indicator"),
    ])))
    config = intel_config(tmp_path, db, {
        "name": "misp-osint", "kind": "misp-feed", "url": file_server.url + "misp/",
        "auto_recall_confidence": 80})
    feed = intel_settings(config).feeds[0]
    report = poll_feed(config, db, feed, recall=recorder)
    assert report.ok, report.error
    assert report.added == 2  # the hash and the address; the note is not an indicator
    with db.session() as s:
        rows = {r.kind: r for r in s.scalars(select(IntelIndicatorRow))}
    assert rows["sha256"].value == PAYLOAD_SHA and rows["sha256"].confidence == 90  # threat 1
    assert rows["email"].value == "billing@lure.example" and rows["email"].confidence == 40
    assert [(c.ids, c.approved) for c in recorder.calls] == [(["mal1"], True)]
    assert "misp-osint" in recorder.calls[0].source

    # Nothing changed: the manifest timestamp is the cursor, no event is fetched again.
    assert poll_feed(config, db, feed, recall=recorder).added == 0
    # The event leaves the manifest: its indicators are withdrawn.
    (feed_dir / "manifest.json").write_text("{}")
    report = poll_feed(config, db, feed, recall=recorder)
    assert report.ok and report.withdrawn == 2
    with db.session() as s:
        assert set(s.scalars(select(IntelIndicatorRow.revoked))) == {True}


def test_misp_confidence_mapping():
    event = {"threat_level_id": "2"}
    assert confidence_of(event, {"to_ids": True}, 50) == 70
    assert confidence_of({"threat_level_id": "4"}, {"to_ids": True}, 55) == 55
    tagged = {"threat_level_id": "3",
              "Tag": [{"name": 'misp:confidence-level="completely-confident"'}]}
    assert confidence_of(tagged, {"to_ids": "1"}, 50) == 100
    attr = {"to_ids": True, "Tag": [{"name":
                                     'estimative-language:confidence-in-analytic-judgment="low"'}]}
    assert confidence_of(tagged, attr, 50) == 30  # the attribute's own tag wins
    assert confidence_of(tagged, {"to_ids": False}, 50) == 40  # not for detection: capped


async def test_a_plain_list_and_its_withdrawals(db, tmp_path, mail_log, recorder):
    await mail_log.deliver("m1", make_email(body="Track your parcel at "
                                                 "http://parcel-track.example/p?id=1"),
                           ["ann@example.test"])
    await mail_log.deliver("m2", make_email(sender="Boss <ceo@exec-mail.example>",
                                            body="Are you at your desk?"),
                           ["bob@example.test"])
    listing = tmp_path / "iocs.txt"
    listing.write_text("# our own list\nparcel-track.example\n"
                       "ceo@exec-mail.example  # a BEC sender\n"
                       "203.0.113.50\n" + "a" * 64 + "\nhttp://x.example/#frag\n"
                       "not an indicator!\n")
    config = intel_config(tmp_path, db, {"name": "own", "kind": "list", "path": str(listing),
                                         "confidence": 75, "auto_recall_confidence": 70})
    feed = intel_settings(config).feeds[0]
    report = poll_feed(config, db, feed, recall=recorder)
    assert report.ok and report.added == 5 and report.skipped == 1
    with db.session() as s:
        kinds = dict(s.execute(select(IntelIndicatorRow.value, IntelIndicatorRow.kind)).all())
    assert kinds == {"parcel-track.example": "domain", "ceo@exec-mail.example": "email",
                     "203.0.113.50": "ip", "a" * 64: "sha256", "http://x.example/": "url"}
    assert sorted((c.ids[0], c.approved) for c in recorder.calls) == [("m1", True), ("m2", True)]

    listing.write_text("parcel-track.example\n")
    report = poll_feed(config, db, feed, recall=recorder)
    assert (report.added, report.withdrawn) == (0, 4)
    assert len(recorder.calls) == 2  # nothing new to hunt


async def test_abuse_ch_csv_urlhaus_and_malwarebazaar(db, tmp_path, file_server, mail_log,
                                                      recorder):
    await mail_log.deliver("u1", make_email(body="Download: http://198.51.100.7/bins/run.sh"),
                           ["ann@example.test"])
    (file_server.folder / "urlhaus.csv").write_text(
        "################\n# abuse.ch URLhaus Database Dump (CSV - recent URLs)\n#\n"
        "# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter\n"
        '"3456789","2026-11-30 10:00:00","http://198.51.100.7/bins/run.sh","online",'
        '"2026-11-30 10:00:00","malware_download","elf,mirai",'
        '"https://urlhaus.abuse.ch/url/3456789/","someone"\n'
        '"3456790","2026-11-30 10:01:00","not a url at all","online","","malware_download",'
        '"","",""\n')
    (tmp_path / "bazaar.csv").write_text(
        "# first_seen_utc,sha256_hash,md5_hash,sha1_hash,reporter,file_name,file_type_guess,"
        "mime_type,signature,clamav,vtpercent,imphash,ssdeep,tlsh\n"
        f'"2026-11-30 09:00:00", "{PAYLOAD_SHA}", "x", "y", "r", "invoice.exe", "exe", '
        '"application/x-dosexec", "AgentTesla", "n/a", "n/a", "n/a", "n/a", "n/a"\n')
    config = intel_config(tmp_path, db,
                          {"name": "urlhaus", "kind": "csv", "url": file_server.url + "urlhaus.csv",
                           "confidence": 60, "auto_recall_confidence": 90},
                          {"name": "bazaar", "kind": "csv", "path": str(tmp_path / "bazaar.csv")})
    urlhaus, bazaar = intel_settings(config).feeds
    report = poll_feed(config, db, urlhaus, recall=recorder)
    assert report.ok and (report.added, report.skipped) == (1, 1)
    with db.session() as s:
        row = s.scalars(select(IntelIndicatorRow)).one()
    assert (row.source_id, row.kind, row.label) == ("3456789", "url", "malware_download")
    assert [(c.ids, c.approved) for c in recorder.calls] == [(["u1"], False)]  # 60 < 90
    assert poll_feed(config, db, bazaar, recall=recorder).added == 1
    with db.session() as s:
        queued = s.scalars(select(IntelHuntRow).where(IntelHuntRow.mode == "queued")).one()
        assert queued.feed == "urlhaus" and queued.recipients == [["u1", "ann@example.test"]]


async def test_stix_bundle_file_with_and_of_the_same_message(db, tmp_path, mail_log, recorder):
    await mail_log.deliver("s1", make_email(subject="Payroll update",
                                            sender="HR <hr@payroll-lure.example>"),
                           ["ann@example.test"])
    await mail_log.deliver("s2", make_email(subject="Payroll update",
                                            sender="HR <hr@real-company.example>"),
                           ["bob@example.test"])
    bundle = {"type": "bundle", "id": "bundle--6b8d2a3e-4f5c-4d6e-9f0a-1b2c3d4e5f60",
              "objects": [stix_indicator(
                  "2b3c4d5e-6f70-4a1b-8c2d-3e4f5a6b7c8d",
                  "[email-message:subject = 'Payroll update' AND "
                  "email-message:from_ref.value = 'hr@payroll-lure.example']",
                  confidence=90)]}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    config = intel_config(tmp_path, db, {"name": "stixfile", "kind": "stix", "path": str(path),
                                         "auto_recall_confidence": 70})
    report = poll_feed(config, db, intel_settings(config).feeds[0], recall=recorder)
    assert report.ok and report.added == 1
    with db.session() as s:
        row = s.scalars(select(IntelIndicatorRow)).one()
    assert (row.kind, row.value) == ("email", "hr@payroll-lure.example")  # the selective one
    assert row.also == [["subject", "payroll update"]]
    # both messages have the subject; only s1 also has the sender
    assert [(c.ids, c.approved) for c in recorder.calls] == [(["s1"], True)]
