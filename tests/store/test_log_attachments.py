"""The message log keeps the hash of every file, archive members included."""

from __future__ import annotations

import hashlib

from mailmoat.store.log import message_log_data
from tests.attachments import fixtures as fx
from tests.conftest import make_config, make_email, scan_bytes


async def test_archive_members_are_logged_with_their_hashes():
    inner = b"quarterly figures\n" * 10
    raw = make_email(attachments=[("q3.zip", "application/zip", fx.zip_bytes({"q3.txt": inner}))])
    out = await scan_bytes(raw)
    data = message_log_data(mailmoat_id="m1", envelope=out.message.envelope, outcome=out)
    by_hash = {a["sha256"]: a for a in data["attachments"]}
    member = by_hash[hashlib.sha256(inner).hexdigest()]
    assert member["filename"] == "q3.txt" and member["size"] == len(inner)
    assert "q3.zip" in member["container"]
    top = [a for a in data["attachments"] if a["filename"] == "q3.zip"]
    assert len(top) == 1 and top[0]["container"] == ""


async def test_top_level_parts_when_the_attachments_family_is_off():
    payload = b"a,b\n1,2\n"
    raw = make_email(attachments=[("t.csv", "text/csv", payload)])
    cfg = make_config(attachments={"enabled": False})
    out = await scan_bytes(raw, cfg)
    assert out.result.facts.attachments is None
    data = message_log_data(mailmoat_id="m2", envelope=out.message.envelope, outcome=out)
    assert data["attachments"] == [{"filename": "t.csv", "type": "text/plain",  # detected
                                     "size": len(payload),
                                     "sha256": hashlib.sha256(payload).hexdigest(),
                                     "container": ""}]
