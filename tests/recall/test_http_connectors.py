"""The Graph and Gmail connectors, the real code paths, against local fakes of the documented
APIs (tests/recall/fakes.py): token endpoints, search, move/trash/label, 401 on an expired
token, 404, 429 and 403 rate limits with Retry-After; run through recall jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.config import Config
from mailmoat.recall.connectors import Connectors
from mailmoat.recall.jobs import RecallWorker, create_recall_job, job_items, undo
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter
from tests.conftest import make_email
from tests.recall.fakes import FakeGoogle, FakeMicrosoft, fake_apis
from tests.recall.helpers import corp_config, log_delivered

MSG_ID = "lure-77@phish.test"


@pytest.fixture
def apis() -> Iterator[tuple[FakeMicrosoft, FakeGoogle, str]]:
    with fake_apis() as got:
        yield got


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'mm.db'}")
    db.create_schema()
    yield db
    db.dispose()


def lure() -> bytes:
    return make_email(subject="Reset your password").replace(b"test-1@sender.test",
                                                            MSG_ID.encode())


async def deliver(db: Database, mid: str, rcpts: tuple[str, ...]) -> None:
    writer = LogWriter(db)
    try:
        await log_delivered(writer, mid, lure(), rcpts)
    finally:
        writer.close()


def graph_config(ms: FakeMicrosoft, ca: str, monkeypatch: pytest.MonkeyPatch,
                 folder: str = "Recalled") -> Config:
    monkeypatch.setenv("MM_TEST_GRAPH_SECRET", FakeMicrosoft.SECRET)
    return corp_config(recall={"graph": {
        "tenant_id": FakeMicrosoft.TENANT, "client_id": FakeMicrosoft.CLIENT_ID,
        "client_secret_env": "MM_TEST_GRAPH_SECRET", "authority_url": ms.url,
        "graph_url": ms.url, "ca_file": ca, "folder": folder, "retries": 2,
        "backoff": 0.5}})


def worker_for(cfg: Config, db: Database, sleeps: list[float]) -> RecallWorker:
    return RecallWorker(cfg, db, Connectors(cfg, sleep=sleeps.append))


async def test_graph_recall_and_undo_with_429_token_expiry_and_404(apis, database,
                                                                   monkeypatch) -> None:
    ms, _, ca = apis
    for u in ("ann@corp.test", "bob@corp.test"):
        ms.add_mailbox(u)
    ms.deliver("ann@corp.test", f"<{MSG_ID}>")
    ms.deliver("bob@corp.test", f"<{MSG_ID}>", folder="Archive")
    await deliver(database, "m1", ("ann@corp.test", "bob@corp.test", "left@corp.test"))
    cfg = graph_config(ms, ca, monkeypatch)
    ms.fail("POST", "/move", 429, {"Retry-After": "7"})
    sleeps: list[float] = []
    worker = worker_for(cfg, database, sleeps)
    try:
        job = create_recall_job(database, ["m1"], reason="wave", requested_by="admin",
                                source="console")
        view = worker.run_job(job)
        items = {i.recipient: i for i in job_items(database, job)}
        assert items["ann@corp.test"].status == items["bob@corp.test"].status == "moved"
        assert items["left@corp.test"].status == "failed"  # the account is gone: 404
        assert "no mailbox 'left@corp.test'" in items["left@corp.test"].detail
        assert "ErrorInvalidUser" in items["left@corp.test"].detail
        assert view.state == "done"
        assert 7.0 in sleeps  # the server's Retry-After, not our backoff
        assert ms.where("ann@corp.test", f"<{MSG_ID}>") == ["Recalled"]
        assert ms.where("bob@corp.test", f"<{MSG_ID}>") == ["Recalled"]
        assert ms.token_requests == 1

        ms.expire_tokens()  # every token issued so far now answers 401
        restore = undo(database, job, requested_by="admin")
        assert worker.run_job(restore).counts == {"restored": 2}
        assert ms.token_requests == 2  # one fresh token, then on
        assert ms.where("ann@corp.test", f"<{MSG_ID}>") == ["Inbox"]
        assert ms.where("bob@corp.test", f"<{MSG_ID}>") == ["Archive"]
    finally:
        worker.close()


async def test_graph_to_deleted_items_and_a_message_already_gone(apis, database,
                                                                 monkeypatch) -> None:
    ms, _, ca = apis
    ms.add_mailbox("ann@corp.test")
    ms.add_mailbox("cy@corp.test")
    ms.deliver("ann@corp.test", f"<{MSG_ID}>")  # cy deleted hers before the recall
    await deliver(database, "m1", ("ann@corp.test", "cy@corp.test"))
    cfg = graph_config(ms, ca, monkeypatch, folder="deleteditems")
    worker = worker_for(cfg, database, [])
    try:
        job = create_recall_job(database, ["m1"], reason="r", requested_by="a", source="t")
        worker.run_job(job)
        got = {i.recipient: i.status for i in job_items(database, job)}
        assert got == {"ann@corp.test": "moved", "cy@corp.test": "not_found"}
        assert ms.where("ann@corp.test", f"<{MSG_ID}>") == ["Deleted Items"]
    finally:
        worker.close()


async def test_graph_wrong_client_secret_fails_every_item_without_showing_it(
        apis, database, monkeypatch) -> None:
    ms, _, ca = apis
    ms.add_mailbox("ann@corp.test")
    ms.deliver("ann@corp.test", f"<{MSG_ID}>")
    await deliver(database, "m1", ("ann@corp.test",))
    cfg = graph_config(ms, ca, monkeypatch)
    monkeypatch.setenv("MM_TEST_GRAPH_SECRET", "wrong-secret-value")
    worker = worker_for(cfg, database, [])
    try:
        job = create_recall_job(database, ["m1"], reason="r", requested_by="a", source="t")
        worker.run_job(job)
        [item] = job_items(database, job)
        assert item.status == "failed"
        assert "invalid_client" in item.detail and "wrong-secret-value" not in item.detail
        assert ms.where("ann@corp.test", f"<{MSG_ID}>") == ["Inbox"]
        assert "wrong-secret-value" not in repr(worker.connectors.get("graph"))
    finally:
        worker.close()


def gmail_config(google: FakeGoogle, ca: str, tmp_path: Path, mode: str = "label") -> Config:
    key = tmp_path / "sa.json"
    key.write_text(google.key_json())
    return corp_config(recall={"gmail": {"service_account_file": str(key),
                                         "api_url": google.url, "ca_file": ca, "mode": mode,
                                         "retries": 3, "backoff": 0.25}})


async def test_gmail_label_recall_and_restore_with_rate_limits_and_expiry(
        apis, database, tmp_path) -> None:
    _, google, ca = apis
    for u in ("ann@corp.test", "bob@corp.test"):
        google.add_mailbox(u)
    google.deliver("ann@corp.test", MSG_ID)
    google.deliver("bob@corp.test", MSG_ID, labels=["Label_1", "UNREAD"])  # filed by bob
    google.messages["stranger@corp.test"] = {}
    google.labels["stranger@corp.test"] = {}
    await deliver(database, "m1", ("ann@corp.test", "bob@corp.test", "stranger@corp.test"))
    cfg = gmail_config(google, ca, tmp_path)
    google.fail("POST", "/modify", 403, times=1)  # rateLimitExceeded, no Retry-After
    google.fail("GET", "/messages", 429, {"Retry-After": "3"}, times=1)
    sleeps: list[float] = []
    worker = worker_for(cfg, database, sleeps)
    try:
        job = create_recall_job(database, ["m1"], reason="r", requested_by="a", source="t")
        worker.run_job(job)
        got = {i.recipient: i for i in job_items(database, job)}
        assert got["ann@corp.test"].status == got["bob@corp.test"].status == "moved"
        # Not delegated: Google refuses the token; clear reason, the job goes on.
        assert got["stranger@corp.test"].status == "failed"
        assert "refused a token" in got["stranger@corp.test"].detail
        # One wait the server named (429 Retry-After), one backoff of ours (the 403).
        assert len(sleeps) == 2 and 3.0 in sleeps
        assert google.where("ann@corp.test", MSG_ID) == [["Recalled", "UNREAD"]]
        assert google.where("bob@corp.test", MSG_ID) == [["Recalled", "UNREAD"]]

        google.expire_tokens()
        restore = undo(database, job, requested_by="a")
        assert worker.run_job(restore).counts == {"restored": 2}
        assert google.where("ann@corp.test", MSG_ID) == [["INBOX", "UNREAD"]]
        assert google.where("bob@corp.test", MSG_ID) == [["Projects", "UNREAD"]]
    finally:
        worker.close()


async def test_gmail_trash_mode_and_a_message_deleted_meanwhile(apis, database,
                                                                tmp_path) -> None:
    _, google, ca = apis
    google.add_mailbox("ann@corp.test")
    mid = google.deliver("ann@corp.test", MSG_ID)
    await deliver(database, "m1", ("ann@corp.test",))
    cfg = gmail_config(google, ca, tmp_path, mode="trash")
    worker = worker_for(cfg, database, [])
    try:
        job = create_recall_job(database, ["m1"], reason="r", requested_by="a", source="t")
        assert worker.run_job(job).counts == {"moved": 1}
        assert google.where("ann@corp.test", MSG_ID) == [["TRASH", "UNREAD"]]
        assert worker.run_job(create_recall_job(database, ["m1"], reason="again",
                                                requested_by="a", source="t")).counts == {
            "moved": 1}  # already in Trash: nothing moves twice
        del google.messages["ann@corp.test"][mid]  # emptied from Trash meanwhile
        restore = undo(database, job, requested_by="a")
        [item] = [i for i in (worker.run_job(restore), ) for i in job_items(database, restore)]
        assert item.status == "not_found"
    finally:
        worker.close()
