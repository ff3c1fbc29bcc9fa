from __future__ import annotations

from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id


def _entry() -> SpoolEntry:
    return SpoolEntry(id=new_message_id(), mail_from="a@b.test", rcpt_tos=["c@d.test"],
                      received_at=1.0, extra={"plan": {"c@d.test": "deliver"}})


def test_put_read_claim_and_states(tmp_path):
    spool = Spool(tmp_path)
    e = _entry()
    spool.put(e, b"Subject: x\r\n\r\nbody")
    assert spool.ids("incoming") == [e.id]
    assert spool.move(e.id, "incoming", "active")
    assert not spool.move(e.id, "incoming", "active")  # a second worker loses the claim
    got, raw = spool.read("active", e.id)
    assert got.pending == ["c@d.test"] and got.extra["plan"] == {"c@d.test": "deliver"}
    assert raw == b"Subject: x\r\n\r\nbody"
    got.attempts = 3
    spool.update("active", got)
    assert spool.read("active", e.id)[0].attempts == 3
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_recover_returns_active_and_drops_unacknowledged_halves(tmp_path):
    spool = Spool(tmp_path)
    e = _entry()
    spool.put(e, b"x", state="active")
    (tmp_path / "incoming" / "lonely.eml").write_bytes(b"never acknowledged")
    (tmp_path / "incoming" / ".half.json.1234.tmp").write_bytes(b"{")
    assert spool.recover() == 1
    assert spool.ids("incoming") == [e.id] and spool.ids("active") == []
    assert not (tmp_path / "incoming" / "lonely.eml").exists()
    assert not (tmp_path / "incoming" / ".half.json.1234.tmp").exists()


def test_ids_sort_by_time():
    a = new_message_id()
    b = new_message_id()
    assert len(a) == 27 and a[:11] <= b[:11]
