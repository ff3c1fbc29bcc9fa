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


def test_recover_reunites_a_move_cut_short_by_a_crash(tmp_path):
    """kill -9 between a move's two renames: sidecar in active/, bytes still in incoming/."""
    spool = Spool(tmp_path)
    a, b = _entry(), _entry()
    spool.put(a, b"bytes of a")
    spool.put(b, b"bytes of b", state="active")
    (tmp_path / "incoming" / f"{a.id}.json").rename(tmp_path / "active" / f"{a.id}.json")
    (tmp_path / "active" / f"{b.id}.eml").rename(tmp_path / "done" / f"{b.id}.eml")
    assert spool.recover() == 2
    assert sorted(spool.ids("incoming")) == sorted([a.id, b.id])
    assert spool.read("incoming", a.id)[1] == b"bytes of a"
    assert spool.read("incoming", b.id)[1] == b"bytes of b"


def test_move_finds_bytes_left_behind(tmp_path):
    spool = Spool(tmp_path)
    a = _entry()
    spool.put(a, b"payload")
    (tmp_path / "incoming" / f"{a.id}.eml").rename(tmp_path / "deferred" / f"{a.id}.eml")
    assert spool.move(a.id, "incoming", "active")
    assert spool.read("active", a.id)[1] == b"payload"
