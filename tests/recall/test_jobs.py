"""Recall jobs on SQLite and PostgreSQL: what a recall touches (internal forwards followed
by Message-ID and attachment, pictures not), the size guard, approval, retrying failed
mailboxes, and the [recall] configuration contract."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mailmoat.config import config_from_dict
from mailmoat.errors import ConfigError
from mailmoat.message.model import Direction
from mailmoat.recall.connectors import Connectors
from mailmoat.recall.jobs import (
    JobError,
    RecallWorker,
    approve,
    create_recall_job,
    deny,
    get_job,
    job_items,
    list_jobs,
    preview,
    retry_failed,
)
from mailmoat.recall.settings import own_domains, recall_settings
from mailmoat.store.db import Database
from mailmoat.store.log import LogWriter
from tests.conftest import make_config, make_email
from tests.recall.fakes import FakeMicrosoft, fake_apis
from tests.recall.helpers import corp_config, log_delivered

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4f00000000049454e44ae426082")


def mail(subject: str, msgid: str, attachments: list[tuple[str, str, bytes]]) -> bytes:
    return make_email(subject=subject, attachments=attachments).replace(
        b"test-1@sender.test", msgid.encode())


async def test_internal_forwards_are_followed_by_message_id_and_attachment(db) -> None:
    now = time.time()
    writer = LogWriter(db)
    try:
        lure = [("invoice.pdf", "application/pdf", PDF), ("logo.png", "image/png", PNG)]
        await log_delivered(writer, "m1", mail("Invoice", "lure@phish.test", lure),
                            ("u1@corp.test",), received_at=now - 3600)
        # u1 forwards the invoice to u2 (new Message-ID, same file): followed.
        await log_delivered(writer, "m2", mail("Fwd: Invoice", "fwd@corp.test",
                                               [lure[0]]), ("u2@corp.test",),
                            direction=Direction.INTERNAL, mail_from="u1@corp.test",
                            received_at=now - 1800)
        # u1 redirects the original to u3 (same Message-ID): followed.
        await log_delivered(writer, "m3", mail("Invoice", "lure@phish.test", []),
                            ("u3@corp.test",), direction=Direction.INTERNAL,
                            mail_from="u1@corp.test", received_at=now - 1700)
        # u2 redirects the forward to u5 (m2's Message-ID): followed from m2.
        await log_delivered(writer, "m4", mail("Fwd: Invoice", "fwd@corp.test", []),
                            ("u5@corp.test",),
                            direction=Direction.INTERNAL, mail_from="u2@corp.test",
                            received_at=now - 1600)
        # Only the logo in common: a picture is no link.
        await log_delivered(writer, "m5", mail("Newsletter", "news@corp.test", [lure[1]]),
                            ("u6@corp.test",), direction=Direction.INTERNAL,
                            mail_from="comms@corp.test", received_at=now - 1500)
        # The same file from outside is another message, not a forward.
        await log_delivered(writer, "m6", mail("Invoice", "other@phish.test", [lure[0]]),
                            ("u7@corp.test",), received_at=now - 1400)
        # Older than the message: not its forward.
        await log_delivered(writer, "m0", mail("Old", "old@corp.test", [lure[0]]),
                            ("u8@corp.test",), direction=Direction.INTERNAL,
                            mail_from="u1@corp.test", received_at=now - 7200)
    finally:
        writer.close()
    got = {(c.recipient, c.mailmoat_id): c.via for c in preview(db, ["m1"])}
    assert set(got) == {("u1@corp.test", "m1"), ("u2@corp.test", "m2"),
                        ("u3@corp.test", "m3"), ("u5@corp.test", "m4")}
    assert got[("u1@corp.test", "m1")] == ""
    assert got[("u2@corp.test", "m2")].startswith("same attachment as m1 (invoice.pdf")
    assert got[("u3@corp.test", "m3")] == "same Message-ID as m1"
    assert got[("u5@corp.test", "m4")] == "same Message-ID as m2"
    assert [c.recipient for c in preview(db, ["m1"], follow_forwards=False)] == ["u1@corp.test"]
    assert [c.recipient for c in preview(db, ["m1"], domains=["other.test"])] == []

    with pytest.raises(JobError, match="would touch 4 mailbox copies"):
        create_recall_job(db, ["m1"], reason="r", requested_by="a", source="t", max_items=3)
    job = create_recall_job(db, ["m1"], reason="r", requested_by="a", source="t",
                            approved=False)
    assert get_job(db, job).state == "awaiting_approval" and get_job(db, job).total == 4
    assert [v.id for v in list_jobs(db, state="awaiting_approval")] == [job]
    deny(db, job, by="b", note="not phishing")
    assert get_job(db, job).state == "denied"
    with pytest.raises(JobError, match="not awaiting approval"):
        approve(db, job, by="b")


@pytest.fixture
def ms() -> Iterator[tuple[FakeMicrosoft, str]]:
    with fake_apis() as (ms, _google, ca):
        yield ms, ca


async def test_failed_mailboxes_are_retried_and_approval_needs_a_second_person(
        db: Database, ms, monkeypatch) -> None:
    fake, ca = ms
    monkeypatch.setenv("MM_TEST_GRAPH_SECRET", FakeMicrosoft.SECRET)
    cfg = corp_config(recall={"graph": {
        "tenant_id": FakeMicrosoft.TENANT, "client_id": FakeMicrosoft.CLIENT_ID,
        "client_secret_env": "MM_TEST_GRAPH_SECRET", "authority_url": fake.url,
        "graph_url": fake.url, "ca_file": ca, "retries": 0}})
    fake.add_mailbox("ann@corp.test")
    fake.deliver("ann@corp.test", "<x1@phish.test>")
    writer = LogWriter(db)
    try:
        await log_delivered(writer, "w1", mail("x", "x1@phish.test", []),
                            ("ann@corp.test", "new@corp.test"))
    finally:
        writer.close()
    job = create_recall_job(db, ["w1"], reason="r", requested_by="alice", source="t",
                            approved=False)
    with pytest.raises(JobError, match="second administrator"):
        approve(db, job, by="alice", two_person=True)
    approve(db, job, by="bob", two_person=True)
    worker = RecallWorker(cfg, db, Connectors(cfg, sleep=lambda _s: None))
    try:
        assert worker.run_job(job).counts == {"moved": 1, "failed": 1}
        # The mailbox is created (a new hire's account, provisioned late): retry.
        fake.add_mailbox("new@corp.test")
        fake.deliver("new@corp.test", "<x1@phish.test>")
        assert retry_failed(db, job, by="alice") == 1
        assert worker.run_job(job).counts == {"moved": 2}
        assert {i.attempts for i in job_items(db, job)} == {1, 2}
        assert fake.where("new@corp.test", "<x1@phish.test>") == ["Recalled"]
    finally:
        worker.close()


def test_the_imap_contract_section_loads_and_typos_are_refused() -> None:
    text = """
[recall.imap]
host = "127.0.0.1"
port = 143
tls = "none"
master_user = "mailmoat"
master_password_file = "/etc/mailmoat/imap-master.secret"
folder = "Recalled"
domains = []
"""
    import tomllib

    cfg = config_from_dict(tomllib.loads(text), text=text)
    imap = recall_settings(cfg).imap
    assert imap is not None and imap.folder == "Recalled" and imap.tls == "none"
    bad = text.replace("master_user", "master_usr")
    with pytest.raises(ConfigError, match=r"unknown key 'master_usr' in \[recall.imap\].*"
                                          r"did you mean 'master_user'"):
        config_from_dict(tomllib.loads(bad), text=bad)
    with pytest.raises(ConfigError, match=r"tls = 'tls'.*none, starttls or ssl|must be"):
        config_from_dict({"recall": {"imap": {"tls": "tls"}}})


def test_an_unreadable_secret_fails_items_naming_the_setting(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MM_NO_SUCH_SECRET", raising=False)
    cfg = make_config(recall={"imap": {"master_user": "m", "master_password_env":
                                       "MM_NO_SUCH_SECRET"},
                              "graph": {"client_secret_file": str(tmp_path / "missing"),
                                        "domains": ["ms.test"]}})
    conns = Connectors(cfg)
    assert conns.name_for("a@ms.test") == "graph" and conns.name_for("a@x.test") == "imap"
    with pytest.raises(Exception, match=r"\[recall.imap\] master password: environment "
                                        r"variable MM_NO_SUCH_SECRET"):
        conns.get("imap")
    with pytest.raises(Exception, match=r"\[recall.graph\] client secret: cannot read"):
        conns.get("graph")
    monkeypatch.setenv("MM_SECRET_SET", "hunter2-master")
    cfg = make_config(recall={"imap": {"master_user": "m", "master_password_env":
                                       "MM_SECRET_SET"}})
    c = Connectors(cfg).get("imap")
    assert "hunter2" not in repr(c) and "hunter2" not in repr(recall_settings(cfg))


async def test_an_outbound_copy_to_an_external_recipient_is_left_out(db, ms,
                                                                     monkeypatch) -> None:
    """ann@corp.test wrote to bob@corp.test and to a partner; the partner's copy is in
    another organisation's mailbox. A recall shows it as outside our domains in the preview
    and the job and never tries it, even where the partner's mail system would answer (the
    fake serves every address), and even for a job created without the list of domains."""
    fake, ca = ms
    monkeypatch.setenv("MM_TEST_GRAPH_SECRET", FakeMicrosoft.SECRET)
    cfg = corp_config(recall={"graph": {
        "tenant_id": FakeMicrosoft.TENANT, "client_id": FakeMicrosoft.CLIENT_ID,
        "client_secret_env": "MM_TEST_GRAPH_SECRET", "authority_url": fake.url,
        "graph_url": fake.url, "ca_file": ca, "retries": 0}})
    for u in ("bob@corp.test", "pat@partner.test"):
        fake.add_mailbox(u)
        fake.deliver(u, "<out1@corp.test>")
    writer = LogWriter(db)
    try:
        await log_delivered(writer, "o1", mail("Quote", "out1@corp.test", []),
                            ("bob@corp.test", "pat@partner.test"),
                            direction=Direction.OUTBOUND, mail_from="ann@corp.test")
    finally:
        writer.close()
    ours = own_domains(cfg)
    assert ours == {"corp.test"}
    planned = {c.recipient: c.outside for c in preview(db, ["o1"], own_domains=ours)}
    assert planned == {"bob@corp.test": False, "pat@partner.test": True}

    job = create_recall_job(db, ["o1"], reason="sent by mistake", requested_by="admin",
                            source="t", own_domains=ours, max_items=1)  # the partner's
    # copy is not one the recall touches: it does not count against max_items either
    items = {i.recipient: i for i in job_items(db, job)}
    assert items["pat@partner.test"].status == "outside"
    assert "outside our domains" in items["pat@partner.test"].detail
    assert items["bob@corp.test"].status == "pending"
    # An older caller that does not pass the domains: the worker leaves the copy out itself.
    blind = create_recall_job(db, ["o1"], reason="again", requested_by="admin", source="t")
    assert {i.status for i in job_items(db, blind)} == {"pending"}
    worker = RecallWorker(cfg, db, Connectors(cfg, sleep=lambda _s: None))
    try:
        assert worker.run_job(job).counts == {"moved": 1, "outside": 1}
        assert worker.run_job(blind).counts == {"moved": 1, "outside": 1}  # already there
    finally:
        worker.close()
    assert fake.where("bob@corp.test", "<out1@corp.test>") == ["Recalled"]
    assert fake.where("pat@partner.test", "<out1@corp.test>") == ["Inbox"]
    paths = [p for _, p, _ in fake.requests]
    assert any("bob" in p for p in paths) and not any("partner.test" in p for p in paths)
    assert {i.attempts for i in job_items(db, job) if i.status == "outside"} == {0}
