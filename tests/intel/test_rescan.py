"""Re-scanning delivered mail still in the spool with today's rules: a message delivered
clean is judged again after a feed lists its link, and handed to recall; mail outside the
window, or not delivered, is left alone."""

from __future__ import annotations

import time

from sqlalchemy import select

from mailmoat.intel.poller import poll_feed
from mailmoat.intel.rescan import rescan_delivered
from mailmoat.intel.settings import intel_settings
from mailmoat.spool.queue import Spool, SpoolEntry
from mailmoat.store.models import IntelHuntRow
from tests.conftest import make_email
from tests.intel.conftest import intel_config


async def test_rescan_finds_what_is_a_threat_today(db, tmp_path, mail_log, recorder):
    listing = tmp_path / "iocs.txt"
    listing.write_text("")
    config = intel_config(tmp_path, db, {"name": "own", "kind": "list", "path": str(listing),
                                         "confidence": 95})
    spool = Spool(config.data_dir / "spool")
    now = time.time()
    for mid, age_h, delivered in (("fresh", 2, True), ("old", 30, True), ("held", 2, False)):
        raw = make_email(subject=f"Doc {mid}", body="Open https://share.lure.example/doc")
        await mail_log.deliver(mid, raw, ["ann@example.test", "bob@example.test"],
                               received_at=now - age_h * 3600, delivered=delivered)
        spool.put(SpoolEntry(id=mid, mail_from="x@partner.example",
                             rcpt_tos=["ann@example.test", "bob@example.test"],
                             received_at=now - age_h * 3600, client_ip="192.0.2.10"),
                  raw, state="done")

    assert await rescan_delivered(config, db, 24, recall=recorder) == []  # clean yesterday

    listing.write_text("https://share.lure.example/doc\n")
    assert poll_feed(config, db, intel_settings(config).feeds[0], recall=None).ok
    found = await rescan_delivered(config, db, 24, recall=recorder)
    assert [(f["id"], f["action"], f["category"]) for f in found] == \
        [("fresh", "reject", "phishing")]
    assert "INTEL_URL" in found[0]["reason"]
    assert [(c.ids, c.approved, c.source) for c in recorder.calls] == \
        [(["fresh"], False, "intel:rescan/fresh")]
    with db.session() as s:
        row = s.scalars(select(IntelHuntRow).where(IntelHuntRow.origin == "rescan")).one()
    assert (row.mode, row.status) == ("queued", "handed")
    assert sorted(r for _, r in row.recipients) == ["ann@example.test", "bob@example.test"]
