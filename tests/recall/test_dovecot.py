"""Recall against a real Dovecot: mail sent through a real gateway (SMTP over sockets) and
delivered into the mailboxes by Dovecot's LMTP; `mailmoat recall` finds every copy in
whatever folder its user moved it to, moves it to the recall folder, and `--restore` puts
each back where it was. Kill -9 half-way resumes; a refused master login and a vanished
mailbox fail their own items while the rest goes on; nothing is ever deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailmoat.config import load_config
from mailmoat.recall.connectors.base import Moved
from mailmoat.recall.jobs import RecallWorker, create_recall_job, get_job, job_items, undo
from mailmoat.store.models import RecallItemRow
from tests.conftest import mailmoat_cmd, make_email, subprocess_env
from tests.recall.dovecot import SlowProxy, dovecot_available, running_dovecot
from tests.recall.gateway import Gateway, recall_toml, running_gateway, with_recall

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

USERS = [f"user{i}@example.test" for i in range(1, 13)] + ["gone@example.test"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    why = dovecot_available()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("recall-dc")
    with running_dovecot(USERS) as dc, running_gateway(root / "gw", dc) as gw:
        yield gw


def lure(n: int, **kw: object) -> bytes:
    raw = make_email(subject=f"Invoice {n} overdue", sender="Billing <billing@phish.test>",
                     to="staff@example.test",
                     body=f"Pay invoice {n} today at https://pay-{n}.phish.test/now\n",
                     **kw)  # type: ignore[arg-type]
    return raw.replace(b"<test-1@sender.test>", f"<lure-{n}-{time.monotonic_ns()}@phish.test>"
                       .encode())


def recall_cli(config: Path, *ids: str, restore: bool = False,
               timeout: float = 120) -> tuple[int, list[dict[str, object]], str]:
    args = ["recall", "--config", str(config), "--format", "json", *ids]
    if restore:
        args.insert(1, "--restore")
    p = subprocess.run(mailmoat_cmd(*args), env=subprocess_env(), capture_output=True,
                       timeout=timeout)
    lines = [json.loads(x) for x in p.stdout.decode().splitlines() if x.strip()]
    return p.returncode, lines, p.stderr.decode()


def move_as_user(gw: Gateway, user: str, mmid: str, folder: str,
                 source: str = "INBOX") -> None:
    c = gw.dovecot.client(user)
    try:
        if not c.folder_exists(folder):
            c.create_folder(folder)
        c.select_folder(source)
        uids = c.search(["HEADER", "X-Mailmoat-ID", mmid])
        assert uids
        c.move(uids, folder)
    finally:
        c.logout()


def where(gw: Gateway, user: str, mmid: str) -> list[str]:
    return gw.dovecot.folders_of(user, "X-Mailmoat-ID", mmid)


def test_recall_finds_every_copy_and_restore_puts_each_back(gw: Gateway) -> None:
    users = USERS[:3]
    mmid = gw.send(lure(1), users)
    other = gw.send(lure(2), users[:1])  # a message that must stay where it is
    move_as_user(gw, users[1], mmid, "Archive/2026")
    assert where(gw, users[1], mmid) == ["Archive/2026"]

    rc, lines, err = recall_cli(gw.config, mmid)
    assert rc == 0, (lines, err)
    assert sorted((x["recipient"], x["status"]) for x in lines) == [(u, "moved") for u in users]
    assert all(x["id"] == mmid for x in lines)
    for u in users:
        assert where(gw, u, mmid) == ["Recalled"]
    assert where(gw, users[0], other) == ["INBOX"]
    by_user = {x["recipient"]: x for x in lines}
    assert by_user[users[1]]["folders"] == ["Archive/2026"]

    # Twice does no harm: nothing moves, every copy reported recalled, one copy each.
    rc, again, _ = recall_cli(gw.config, mmid)
    assert rc == 0 and {x["status"] for x in again} == {"moved"}
    for u in users:
        assert where(gw, u, mmid) == ["Recalled"]

    rc, restored, err = recall_cli(gw.config, mmid, restore=True)
    assert rc == 0, (restored, err)
    assert sorted((x["recipient"], x["status"]) for x in restored) == [
        (u, "restored") for u in users]
    assert where(gw, users[0], mmid) == ["INBOX"]
    assert where(gw, users[1], mmid) == ["Archive/2026"]
    assert where(gw, users[2], mmid) == ["INBOX"]

    # A second restore moves nothing twice.
    rc, twice, _ = recall_cli(gw.config, mmid, restore=True)
    assert rc == 0 and {x["status"] for x in twice} == {"not_found"}
    assert where(gw, users[1], mmid) == ["Archive/2026"]


def test_undo_restores_exactly_what_the_job_moved(gw: Gateway) -> None:
    users = USERS[3:5]
    mmid = gw.send(lure(3), users)
    cfg = load_config(gw.config)
    job = create_recall_job(gw.db, [mmid], reason="phishing wave", requested_by="admin@x",
                            source="console")
    worker = RecallWorker(cfg, gw.db)
    try:
        view = worker.run_job(job)
        assert view.state == "done" and view.counts == {"moved": 2}
        # A second recall of the same message finds it recalled already and moves nothing.
        second = create_recall_job(gw.db, [mmid], reason="again", requested_by="admin@x",
                                   source="console")
        assert worker.run_job(second).counts == {"moved": 2}
        assert all(not it.moved for it in job_items(gw.db, second))
        assert all(where(gw, u, mmid) == ["Recalled"] for u in users)
        restore = undo(gw.db, job, requested_by="admin@x")
        assert worker.run_job(restore).counts == {"restored": 2}
        assert all(where(gw, u, mmid) == ["INBOX"] for u in users)
        # Undoing the second recall finds nothing it moved.
        undo_second = undo(gw.db, second, requested_by="admin@x")
        assert job_items(gw.db, undo_second) == []
    finally:
        worker.close()


def test_kill_9_half_way_resumes_and_finishes(gw: Gateway, tmp_path: Path) -> None:
    users = USERS[:10]
    mmid = gw.send(lure(4), users)
    proxy = SlowProxy(gw.dovecot.imap_port, delay=0.4)
    cfg = with_recall(gw.config, tmp_path / "slow.toml", recall_toml(
        gw.dovecot, gw.tmp / "imap-master.secret", port=proxy.port, max_connections=1))
    try:
        proc = subprocess.Popen(mailmoat_cmd("recall", "--config", str(cfg), "--format",
                                             "json", mmid), env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        statuses: list[str] = []
        while time.monotonic() < deadline:
            with gw.db.session() as s:
                statuses = list(s.scalars(select(RecallItemRow.status).where(
                    RecallItemRow.mailmoat_id == mmid)))
            if statuses.count("moved") >= 2:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert statuses.count("moved") >= 2
        assert any(st in ("pending", "working") for st in statuses), statuses  # half-way
        moved_before = statuses.count("moved")
    finally:
        proxy.close()
    # The dead process's items are taken over once its lease ([recall] lease_seconds = 2)
    # runs out: the command waits for that itself.
    rc, lines, err = recall_cli(gw.config, mmid)
    assert rc == 0, (lines, err)
    assert sorted((x["recipient"], x["status"]) for x in lines) == [
        (u, "moved") for u in sorted(users)]
    assert len({x["job"] for x in lines}) == 1  # the same job, resumed
    for u in users:
        assert where(gw, u, mmid) == ["Recalled"]
    assert moved_before < len(users)
    rc, restored, _ = recall_cli(gw.config, mmid, restore=True)
    assert rc == 0 and {x["status"] for x in restored} == {"restored"}
    for u in users:
        assert where(gw, u, mmid) == ["INBOX"]


def test_a_move_the_job_store_never_heard_of_is_adopted(gw: Gateway) -> None:
    """The crash window: the server moved the copy, the process died before writing so.
    The item was marked `working` with the folder it came from; the next run adopts the
    recall-folder copy instead of calling it someone else's, and undo puts it back."""
    user = USERS[5]
    mmid = gw.send(lure(5), [user])
    move_as_user(gw, user, mmid, "Projects")
    job = create_recall_job(gw.db, [mmid], reason="r", requested_by="a", source="test")
    move_as_user(gw, user, mmid, "Recalled", source="Projects")  # the move that happened before the crash
    with gw.db.session() as s:
        item = s.scalars(select(RecallItemRow).where(RecallItemRow.job_id == job)).one()
        item.status, item.moved = "working", [Moved("Projects").as_dict()]
    worker = RecallWorker(load_config(gw.config), gw.db)
    try:
        assert worker.run_job(job).counts == {"moved": 1}
        [it] = job_items(gw.db, job)
        assert it.moved[0]["folder"] == "Projects" and it.moved[0]["handle"]
        assert worker.run_job(undo(gw.db, job, requested_by="a")).counts == {"restored": 1}
        assert where(gw, user, mmid) == ["Projects"]
    finally:
        worker.close()


def test_refused_master_login_and_vanished_mailbox_fail_alone(gw: Gateway,
                                                              tmp_path: Path) -> None:
    users = [USERS[6], USERS[7], "gone@example.test"]
    mmid = gw.send(lure(6), users)
    # The mailbox vanishes (the account is deleted) after delivery.
    gw.dovecot.write_users([u for u in gw.dovecot.users if u != "gone@example.test"])
    try:
        rc, lines, _ = recall_cli(gw.config, mmid)
        assert rc == 1
        by = {x["recipient"]: x for x in lines}
        assert by[USERS[6]]["status"] == by[USERS[7]]["status"] == "moved"
        assert by["gone@example.test"]["status"] == "failed"
        assert "refused the login" in str(by["gone@example.test"]["detail"])
        assert "AUTHORIZATIONFAILED" in str(by["gone@example.test"]["detail"])

        # A master password the server refuses: every item fails with that reason, the
        # job finishes, nothing moves.
        mmid2 = gw.send(lure(7), users[:2])
        bad = tmp_path / "bad.secret"
        bad.write_text("not-the-password\n")
        cfg = with_recall(gw.config, tmp_path / "bad.toml", recall_toml(gw.dovecot, bad))
        rc, lines, _ = recall_cli(cfg, mmid2)
        assert rc == 1
        assert [x["status"] for x in lines] == ["failed", "failed"]
        assert all("refused the login of 'mailmoat'" in str(x["detail"]) for x in lines)
        assert all("password" not in str(x["detail"]).replace("master password", "")
                   for x in lines)
        assert "not-the-password" not in json.dumps(lines)
        for u in users[:2]:
            assert where(gw, u, mmid2) == ["INBOX"]
        job = int(lines[0]["job"])  # type: ignore[arg-type]
        assert get_job(gw.db, job).state == "done"
    finally:
        gw.dovecot.write_users(USERS)


def test_imap_without_move_copies_then_expunges_only_that_message(gw: Gateway,
                                                                  monkeypatch) -> None:
    from imapclient import IMAPClient

    user = USERS[8]
    keep = gw.send(lure(8), [user])
    mmid = gw.send(lure(9), [user])
    c = gw.dovecot.client(user)
    c.select_folder("INBOX")
    c.add_flags(c.search(["HEADER", "X-Mailmoat-ID", keep]), [b"\\Deleted"])  # user's own
    c.logout()
    real = IMAPClient.has_capability
    monkeypatch.setattr(IMAPClient, "has_capability",
                        lambda self, cap: False if cap.upper() == "MOVE" else real(self, cap))
    job = create_recall_job(gw.db, [mmid], reason="r", requested_by="a", source="test")
    worker = RecallWorker(load_config(gw.config), gw.db)
    try:
        assert worker.run_job(job).counts == {"moved": 1}
        assert where(gw, user, mmid) == ["Recalled"]
        assert where(gw, user, keep) == ["INBOX"]  # flagged by the user, not expunged by us
        assert worker.run_job(undo(gw.db, job, requested_by="a")).counts == {"restored": 1}
        assert where(gw, user, mmid) == ["INBOX"]
    finally:
        worker.close()


def test_serve_works_jobs_and_resumes_one_killed_half_way(gw: Gateway, tmp_path: Path) -> None:
    """A job created elsewhere (console, API, threat intelligence) is worked by `mailmoat
    serve`; serve killed with -9 half-way, then started again, finishes it."""
    from tests.e2e.gateway_proc import free_port, start_gateway, stop_gateway

    users = USERS[:8]
    mmid = gw.send(lure(10), users)
    job = create_recall_job(gw.db, [mmid], reason="wave", requested_by="admin@x",
                            source="console", approved=False)
    proxy = SlowProxy(gw.dovecot.imap_port, delay=0.4)
    secret = gw.tmp / "imap-master.secret"

    def serve_config(name: str, **kw: object) -> tuple[Path, int]:
        port = free_port()
        text = with_recall(gw.config, tmp_path / f"{name}.toml",
                           recall_toml(gw.dovecot, secret, worker_interval=0.2, **kw))
        text.write_text(text.read_text().replace(f"127.0.0.1:{gw.smtp_port}",
                                                 f"127.0.0.1:{port}"))
        return text, port

    slow, port = serve_config("slow", port=proxy.port, max_connections=1)
    proc = start_gateway(slow, port, tmp_path / "serve1.log")
    try:
        from mailmoat.recall.jobs import approve

        approve(gw.db, job, by="second@x")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and get_job(gw.db, job).counts.get("moved", 0) < 2:
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        view = get_job(gw.db, job)
        assert view.counts.get("moved", 0) >= 2 and view.state == "running", view
    finally:
        proxy.close()
        stop_gateway(proc)
    fast, port = serve_config("fast")
    proc = start_gateway(fast, port, tmp_path / "serve2.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and get_job(gw.db, job).state != "done":
            time.sleep(0.05)
        assert get_job(gw.db, job).counts == {"moved": len(users)}
    finally:
        stop_gateway(proc)
    for u in users:
        assert where(gw, u, mmid) == ["Recalled"]
    rc, restored, _ = recall_cli(gw.config, mmid, restore=True)
    assert rc == 0 and {x["status"] for x in restored} == {"restored"}


def test_delete_only_ever_takes_a_recalled_copy(gw: Gateway) -> None:
    """The connectors' optional delete acts on the copies a recall moved, in the recall
    folder, and on nothing else: a copy restored or never recalled cannot be deleted."""
    from mailmoat.recall.connectors import Connectors
    from mailmoat.recall.connectors.base import Target

    user, other = USERS[9], USERS[10]
    mmid = gw.send(lure(11), [user, other])
    imap = Connectors(load_config(gw.config)).get("imap")
    mine, theirs = Target(mmid, "", user), Target(mmid, "", other)
    recalled = imap.recall(mine)
    assert recalled.status == "moved" and where(gw, user, mmid) == ["Recalled"]
    assert imap.delete(mine, recalled.moved).status == "deleted"
    assert where(gw, user, mmid) == []
    assert imap.delete(mine, recalled.moved).status == "not_found"  # nothing twice
    # A copy that is back where it was is out of reach of delete.
    back = imap.recall(theirs)
    assert imap.restore(theirs, back.moved).status == "restored"
    assert imap.delete(theirs, back.moved).status == "not_found"
    assert where(gw, other, mmid) == ["INBOX"]
