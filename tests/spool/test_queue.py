from __future__ import annotations

import json

from mailmoat.spool.queue import Handover, Spool, SpoolEntry, new_message_id


def _entry() -> SpoolEntry:
    return SpoolEntry(id=new_message_id(), mail_from="a@b.test", rcpt_tos=["c@d.test"],
                      received_at=1.0, handover=Handover(plan={"c@d.test": "deliver"}))


def test_put_read_claim_and_states(tmp_path):
    spool = Spool(tmp_path)
    e = _entry()
    spool.put(e, b"Subject: x\r\n\r\nbody")
    assert spool.ids("incoming") == [e.id]
    assert spool.move(e.id, "incoming", "active")
    assert not spool.move(e.id, "incoming", "active")  # a second worker loses the claim
    got, raw = spool.read("active", e.id)
    assert got.pending == ["c@d.test"] and got.handover.plan == {"c@d.test": "deliver"}
    assert raw == b"Subject: x\r\n\r\nbody"
    got.attempts = 3
    spool.update("active", got)
    assert spool.read("active", e.id)[0].attempts == 3
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_handover_is_stored_as_the_extra_dict_it_always_was(tmp_path):
    spool = Spool(tmp_path)
    e = _entry()
    e.handover = Handover(plan={"c@d.test": "quarantine"}, log={"id": e.id}, received="from x",
                          sender_auth_failed=False)
    spool.put(e, b"x")
    side = json.loads((tmp_path / "incoming" / f"{e.id}.json").read_text())
    assert side["extra"] == {"plan": {"c@d.test": "quarantine"}, "log": {"id": e.id},
                             "received": "from x", "sender_auth_failed": False}
    assert spool.read("incoming", e.id)[0].handover == e.handover


def test_a_sidecar_spooled_before_the_typed_handover_still_reads(tmp_path):
    """What intake, a DSN and a quarantine release wrote as an untyped dict: every key it
    used reads into the record; one nothing ever read ("tls") is dropped."""
    spool = Spool(tmp_path)
    old = {"id": "m1", "mail_from": "a@b.test", "rcpt_tos": ["c@d.test"], "received_at": 1.0,
           "client_ip": "192.0.2.1", "helo": "h", "auth_user": "", "direction": "inbound",
           "pending": ["c@d.test"], "attempts": 2, "next_attempt": 5.0, "last_error": "",
           "scanned": True, "version": 1,
           "extra": {"plan": {"c@d.test": "deliver"}, "log": {"symbols": []}, "tls": True,
                     "received": "from h", "sender_auth_failed": True, "logged": True,
                     "dsn": True, "dsn_for": "m0", "mailmoat_id": "m0r1",
                     "released_from": "m0", "released_by": "admin"}}
    (tmp_path / "deferred" / "m1.json").write_text(json.dumps(old))
    (tmp_path / "deferred" / "m1.eml").write_bytes(b"x")
    got, _ = spool.read("deferred", "m1")
    assert got.attempts == 2 and got.pending == ["c@d.test"]
    assert got.handover == Handover(plan={"c@d.test": "deliver"}, log={"symbols": []},
                                    logged=True, received="from h", sender_auth_failed=True,
                                    dsn=True, dsn_for="m0", mailmoat_id="m0r1",
                                    released_from="m0", released_by="admin")
    # An entry from before `sender_auth_failed` existed: the field stays "not recorded".
    old["extra"] = {"plan": {"c@d.test": "deliver"}, "log": {"symbols": []}}
    (tmp_path / "deferred" / "m1.json").write_text(json.dumps(old))
    got, _ = spool.read("deferred", "m1")
    assert got.handover.sender_auth_failed is None and not got.handover.logged


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


def test_concurrent_puts_share_directory_fsyncs_and_all_survive(tmp_path):
    """Group commit: 64 puts from 16 threads each wait for a directory fsync that started
    after their renames, and together they issue fewer fsyncs than puts."""
    import concurrent.futures
    import threading
    import time

    import mailmoat.spool.queue as q

    spool = Spool(tmp_path)
    lock = threading.Lock()
    real_fsync_dir = q._fsync_dir
    fsync_starts = []

    def slow_fsync_dir(path):  # a slow disk, so that callers pile up behind one fsync
        with lock:
            fsync_starts.append(path)
        time.sleep(0.01)
        real_fsync_dir(path)

    q._fsync_dir = slow_fsync_dir
    try:
        entries = [_entry() for _ in range(64)]

        def put(e):
            spool.put(e, b"Subject: x\r\n\r\n" + e.id.encode())
            return e.id

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(put, entries))
    finally:
        q._fsync_dir = real_fsync_dir
    assert sorted(spool.ids("incoming")) == sorted(ids)
    for e in entries:
        assert spool.read("incoming", e.id)[1].endswith(e.id.encode())
    assert 1 <= spool.dir_sync.fsyncs < 64
    assert spool.dir_sync.fsyncs == len(fsync_starts)


def test_group_dir_sync_retries_after_a_failed_fsync(tmp_path):
    import mailmoat.spool.queue as q

    spool = Spool(tmp_path)
    real = q._fsync_dir
    calls = []

    def failing_once(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "I/O error")
        real(path)

    q._fsync_dir = failing_once
    try:
        import pytest

        from mailmoat.errors import SpoolError
        with pytest.raises(SpoolError):
            spool.put(_entry(), b"x")
        e = _entry()
        spool.put(e, b"y")  # the failure did not leave the directory marked busy
    finally:
        q._fsync_dir = real
    assert e.id in spool.ids("incoming") and len(calls) == 2


def test_group_dir_sync_never_counts_an_fsync_that_began_before_the_call(tmp_path):
    """B asks while A's fsync is already running: B must wait for a second fsync."""
    import threading

    import mailmoat.spool.queue as q

    started, release = threading.Event(), threading.Event()
    calls = []

    def fake_fsync_dir(path):
        calls.append(path)
        if len(calls) == 1:
            started.set()
            assert release.wait(5)

    real = q._fsync_dir
    q._fsync_dir = fake_fsync_dir
    try:
        sync = q._GroupDirSync()
        a = threading.Thread(target=sync.sync, args=(tmp_path,))
        a.start()
        assert started.wait(5)
        b_done = threading.Event()
        b = threading.Thread(target=lambda: (sync.sync(tmp_path), b_done.set()))
        b.start()
        release.set()
        a.join(5)
        b.join(5)
    finally:
        q._fsync_dir = real
    assert b_done.is_set() and len(calls) == 2 and sync.fsyncs == 2
