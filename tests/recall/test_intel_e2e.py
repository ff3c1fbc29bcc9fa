"""The contract of automatic recall, end to end: a real `mailmoat serve` with `[recall.imap]`
pointing at a real Dovecot and one `[[intel.feeds]]` polling a real TAXII 2.1 server
(medallion). Mail is sent over SMTP through the gateway and delivered by Dovecot's LMTP into
three mailboxes; then an indicator for its link is published on the TAXII collection. The
gateway's poller hunts the delivered copies, hands them to recall, and its recall worker
moves every copy to the recall folder within two poll intervals plus a minute. An indicator
below `auto_recall_confidence` only queues a recall for approval: nothing moves. The
gateway's own console, in headless Chromium, shows why: the hunt names the feed and the
indicator and lists the messages and the mailboxes they were taken from; the queued recall
waits on the approval queue until an administrator approves it there."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailmoat.recall.jobs import get_job, job_items
from mailmoat.store.models import IntelHuntRow
from tests.conftest import make_email, wait_for
from tests.e2e.gateway_proc import free_port, start_gateway, start_sink_thread, stop_gateway
from tests.intel.conftest import (  # noqa: F401  (fixtures)
    FileServer,
    Taxii,
    file_server,
    stix_indicator,
    taxii,
)
from tests.recall.dovecot import dovecot_available, running_dovecot
from tests.recall.gateway import Gateway, LmtpBridge, recall_toml, write_gateway_config
from tests.web.fixtures import PASSWORD
from tests.web.test_browser import ARGS, CHROMIUM, logged_in

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

USERS = ["ann@example.test", "bob@example.test", "cy@example.test"]
POLL = 2
SURE_URL = "https://team-calendar.example/login"
UNSURE_URL = "https://shared-docs.example/login"


def intel_toml(taxii: Taxii, secret: Path) -> str:  # noqa: F811
    return f"""
[[intel.feeds]]
name = "local-taxii"
kind = "taxii"
url = "{taxii.root}"
collection = "{taxii.collection}"
user = "reader"
password_file = "{secret}"
poll_interval = {POLL}
auto_recall_confidence = 70
lookback_days = 14
"""


def misp_feed_toml(url: str) -> str:
    return f"""
[[intel.feeds]]
name = "misp-static"
kind = "misp-feed"
url = "{url}"
poll_interval = {POLL}
auto_recall_confidence = 70
lookback_days = 14
"""


@pytest.fixture
def gw(tmp_path: Path, taxii: Taxii) -> Iterator[Gateway]:  # noqa: F811
    from tests.intel.taxii_server import USERS as TAXII_USERS

    root = tmp_path / "gw"
    root.mkdir()
    taxii_secret = root / "taxii.secret"
    taxii_secret.write_text(TAXII_USERS["reader"] + "\n")
    with running_gateway(root, intel_toml(taxii, taxii_secret)) as gateway:
        yield gateway


@pytest.fixture
def gw_misp(tmp_path: Path, file_server: FileServer) -> Iterator[Gateway]:  # noqa: F811
    # An empty feed at first: the gateway's first poll finds nothing.
    (file_server.folder / "misp").mkdir()
    (file_server.folder / "misp" / "manifest.json").write_text("{}")
    root = tmp_path / "gw"
    root.mkdir()
    with running_gateway(root, misp_feed_toml(file_server.url + "misp/")) as gateway:
        yield gateway


@contextmanager
def running_gateway(root: Path, feeds: str) -> Iterator[Gateway]:
    """`mailmoat serve` with those feeds, recall to a fresh Dovecot holding USERS, and its
    console on a free port."""
    why = dovecot_available()
    if why:
        pytest.skip(why)
    with running_dovecot(USERS) as dc:
        bridge = LmtpBridge(dc)
        sink = start_sink_thread(bridge)
        smtp_port, web_port = free_port(), free_port()
        recall = recall_toml(dc, root / "imap-master.secret", worker_interval=0.5,
                             extra=feeds)
        cfg = write_gateway_config(root, dc, smtp_port, int(sink.port), recall=recall,
                                   web_port=web_port)
        try:
            proc = start_gateway(cfg, smtp_port, root / "gateway.log")
            gateway = Gateway(root, dc, bridge, cfg, smtp_port)
            gateway.web_url = f"http://127.0.0.1:{web_port}"
            try:
                yield gateway
            finally:
                gateway.db.dispose()
                stop_gateway(proc)
        finally:
            sink.stop()


def lure(subject: str, url: str) -> bytes:
    # Harmless-looking when it arrives (delivered, not quarantined): the link is known to be
    # bad only later, when the feed lists it.
    raw = make_email(subject=subject, sender="Office <office@partner.test>",
                     to=", ".join(USERS), body=f"The notes are on {url} as usual.\n")
    return raw.replace(b"<test-1@sender.test>",
                       f"<{time.monotonic_ns()}@partner.test>".encode())


def hunt_for(gw: Gateway, source_id: str) -> IntelHuntRow | None:
    with gw.db.session() as s:
        return s.scalars(select(IntelHuntRow).where(
            IntelHuntRow.source_id == source_id,
            IntelHuntRow.status.in_(("handed", "failed")))).first()


def console_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.browser
def test_indicator_on_taxii_recalls_every_delivered_copy(gw: Gateway, taxii: Taxii  # noqa: F811
                                                         ) -> None:
    sure = gw.send(lure("Team lunch on Friday", SURE_URL), USERS,
                   sender="office@partner.test")
    unsure = gw.send(lure("Minutes of the weekly meeting", UNSURE_URL), USERS,
                     sender="office@partner.test")
    for u in USERS:
        assert gw.dovecot.folders_of(u, "X-Mailmoat-ID", sure) == ["INBOX"]
        assert gw.dovecot.folders_of(u, "X-Mailmoat-ID", unsure) == ["INBOX"]

    sure_id = "indicator--0b6e2c1a-6f0d-4a53-9c1e-5d2b7a8e4f10"
    published = time.monotonic()
    taxii.publish(stix_indicator(sure_id.split("--")[1], f"[url:value = '{SURE_URL}']",
                                 confidence=85))

    def all_recalled() -> bool:
        return all(gw.dovecot.folders_of(u, "X-Mailmoat-ID", sure) == ["Recalled"]
                   for u in USERS)

    wait_for("every copy in Recalled", all_recalled, 2 * POLL + 60)
    took = time.monotonic() - published
    print(f"\nindicator published -> all {len(USERS)} copies recalled: {took:.2f}s")
    assert took < 2 * POLL + 60

    # The record says why: the hunt names the feed and indicator and links the job, and the
    # job names the indicator as its source.
    hunt = hunt_for(gw, sure_id)
    assert hunt is not None and hunt.status == "handed", hunt and hunt.error
    assert (hunt.feed, hunt.mode, hunt.confidence) == ("local-taxii", "auto", 85)
    assert hunt.message_ids == [sure]
    assert sorted(a for _, a in hunt.recipients) == USERS
    job = get_job(gw.db, int(hunt.job_id))
    assert job.source == f"intel:local-taxii/{sure_id}"
    assert job.requested_by == "intel:local-taxii"
    assert SURE_URL in job.reason
    done = wait_for("the job marked done", lambda: get_job(gw.db, job.id).state == "done"
                    or None, 30)
    assert done and get_job(gw.db, job.id).counts == {"moved": len(USERS)}
    # The other message was not touched.
    for u in USERS:
        assert gw.dovecot.folders_of(u, "X-Mailmoat-ID", unsure) == ["INBOX"]

    # Below auto_recall_confidence: a recall awaiting approval, nothing moved.
    unsure_id = "indicator--7c3d9e2f-1a4b-4c5d-8e6f-9a0b1c2d3e4f"
    taxii.publish(stix_indicator(unsure_id.split("--")[1], f"[url:value = '{UNSURE_URL}']",
                                 confidence=40, modified="2026-11-02T00:00:00.000Z"))
    queued = wait_for("the queued hunt", lambda: hunt_for(gw, unsure_id), 2 * POLL + 60)
    assert queued.status == "handed", queued.error
    assert (queued.mode, queued.confidence, queued.message_ids) == ("queued", 40, [unsure])
    pending = get_job(gw.db, int(queued.job_id))
    assert pending.state == "awaiting_approval"
    assert pending.source == f"intel:local-taxii/{unsure_id}"
    items = job_items(gw.db, pending.id)
    assert sorted(i.recipient for i in items) == USERS
    assert {i.status for i in items} == {"pending"} and all(not i.moved for i in items)
    # The worker takes only approved jobs: this one waits, and its copies stay put.
    assert get_job(gw.db, pending.id).state == "awaiting_approval"
    for u in USERS:
        assert gw.dovecot.folders_of(u, "X-Mailmoat-ID", unsure) == ["INBOX"]
        assert gw.dovecot.folders_of(u, "X-Mailmoat-ID", sure) == ["Recalled"]

    # The console shows why, in a real browser, served by the gateway itself.
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed: the console part is not checked")
    from playwright.sync_api import sync_playwright

    from mailmoat.web.auth import create_user

    wait_for("the gateway's console", lambda: console_up(gw.web_url), 30)
    create_user(gw.db, "admin@corp.test", "admin", PASSWORD, [])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            with logged_in(browser, gw.web_url, "admin@corp.test") as page:
                page.click("text=Threat intel")
                page.click("#tab-hunts")
                row = page.locator("#intel-hunts tr.hunt", has_text=SURE_URL)
                assert "recalled automatically" in row.inner_text()
                row.locator(f'a[href="/intel/hunts/{hunt.id}"]').click()
                page.wait_for_load_state()
                assert page.inner_text("#hunt-feed") == "local-taxii"
                indicator = page.inner_text("#hunt-indicator")
                assert SURE_URL in indicator and sure_id in indicator
                messages = page.inner_text("#hunt-messages")
                assert sure in messages and "Team lunch on Friday" in messages
                assert unsure not in messages
                rows = page.locator("#hunt-recipients tr").all_inner_texts()[1:]
                assert sorted(r.split("\t")[0] for r in rows) == USERS
                assert all("\tmoved\t" in r and r.endswith("INBOX") for r in rows), rows

                # The unsure indicator's recall waits on the approval queue: approve it.
                page.click("#tab-queue")
                waiting = page.locator(f"#queued-{queued.id}")
                assert UNSURE_URL in waiting.inner_text()
                assert "waits for approval" in waiting.inner_text()
                page.click(f"#btn-approve-{queued.id}")
                page.wait_for_load_state()
                assert f"Approved: the recall of hunt {queued.id}" in page.inner_text("#flash")
        finally:
            browser.close()

    def unsure_recalled() -> bool:
        return all(gw.dovecot.folders_of(u, "X-Mailmoat-ID", unsure) == ["Recalled"]
                   for u in USERS)

    wait_for("the approved recall", unsure_recalled, 60)
    assert get_job(gw.db, pending.id).decided_by == "admin@corp.test"


def test_misp_static_feed_recalls_a_delivered_attachment(gw_misp: Gateway,
                                                        file_server: FileServer  # noqa: F811
                                                        ) -> None:
    """A MISP static feed served over local HTTP (manifest.json plus one event file)
    publishes the SHA-256 of an attachment delivered earlier: every copy is recalled."""
    payload = b"%PDF-1.4\n% quarterly statement " + str(time.monotonic_ns()).encode() + \
        b"\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    digest = hashlib.sha256(payload).hexdigest()
    raw = make_email(subject="Quarterly statement", sender="Billing <billing@partner.test>",
                     to=", ".join(USERS), body="Please find the statement attached.\n",
                     attachments=[("statement.pdf", "application/pdf", payload)])
    mal = gw_misp.send(raw, USERS, sender="billing@partner.test")
    other = gw_misp.send(lure("Minutes of the weekly meeting", UNSURE_URL), USERS,
                         sender="office@partner.test")
    for u in USERS:
        assert gw_misp.dovecot.folders_of(u, "X-Mailmoat-ID", mal) == ["INBOX"]

    event, attribute = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", \
        "7b2d3c4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
    folder = file_server.folder / "misp"
    (folder / f"{event}.json").write_text(json.dumps({"Event": {
        "uuid": event, "info": "Statement malspam", "threat_level_id": "1",
        "timestamp": "1790000000", "published": True,
        "Attribute": [{"uuid": attribute, "type": "filename|sha256",
                       "value": f"statement.pdf|{digest}", "to_ids": True,
                       "category": "Payload delivery", "timestamp": "1790000000"}]}}))
    published = time.monotonic()
    # The manifest last: the event file is in place before the feed lists it.
    (folder / "manifest.json").write_text(json.dumps(
        {event: {"info": "Statement malspam", "timestamp": "1790000000"}}))

    def all_recalled() -> bool:
        return all(gw_misp.dovecot.folders_of(u, "X-Mailmoat-ID", mal) == ["Recalled"]
                   for u in USERS)

    wait_for("every copy in Recalled", all_recalled, 2 * POLL + 60)
    took = time.monotonic() - published
    print(f"\nMISP event published -> all {len(USERS)} copies recalled: {took:.2f}s")
    hunt = hunt_for(gw_misp, attribute)
    assert hunt is not None and hunt.status == "handed", hunt and hunt.error
    assert (hunt.feed, hunt.kind, hunt.value, hunt.mode, hunt.confidence) == \
        ("misp-static", "sha256", digest, "auto", 90)
    assert hunt.message_ids == [mal]
    job = get_job(gw_misp.db, int(hunt.job_id))
    assert job.source == f"intel:misp-static/{attribute}"
    wait_for("the job marked done", lambda: get_job(gw_misp.db, job.id).state == "done"
             or None, 30)
    assert get_job(gw_misp.db, job.id).counts == {"moved": len(USERS)}
    for u in USERS:
        assert gw_misp.dovecot.folders_of(u, "X-Mailmoat-ID", other) == ["INBOX"]
