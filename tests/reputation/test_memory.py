"""Local sender memory: first contact, known correspondent, reply to our mail, bad history,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat.message.model import Direction, Envelope
from mailmoat.message.parse import parse_message
from mailmoat.reputation_memory import SenderMemory, message_ids_in
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner
from mailmoat.store.db import Database
from tests.conftest import make_config, make_email
from tests.pg import fresh_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request, tmp_path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'mm.db'}")
        db.create_schema()
        yield db
        db.dispose()
        return
    with fresh_postgres_database("mm_auth") as url:
        db = Database(url)
        try:
            db.create_schema()
            yield db
        finally:
            db.dispose()


PARTNER = "Pat Partner <pat@partner.test>"


async def _scan(db: Database, raw: bytes, *, mail_from="pat@partner.test",
                rcpts=("bob@example.test",), network=False, config=None):
    cfg = config or make_config(reputation={"known_min_clean": 2})
    scanner = Scanner(BuildContext(config=cfg, network=network, database=db))
    try:
        return await scanner.scan(raw, Envelope(mail_from=mail_from, rcpt_tos=rcpts,
                                                client_ip="192.0.2.10", helo="mx.partner.test"))
    finally:
        await scanner.close()


def _names(out) -> set[str]:
    return {s.name for s in out.result.symbols if s.name.startswith("REP_")}


async def test_first_contact_then_known_correspondent(database):
    mem = SenderMemory(database)
    raw = make_email(sender=PARTNER, subject="Hello")
    out = await _scan(database, raw)
    assert _names(out) == {"REP_FIRST_CONTACT"}
    assert out.result.facts.sender_memory.first_contact is True
    assert "pat@partner.test" in out.result.get("REP_FIRST_CONTACT").reason

    mem.observe_message(out.message, "clean")
    out = await _scan(database, raw)
    assert _names(out) == set()  # one clean message: no longer new, not yet "known"
    assert out.result.facts.sender_memory.first_contact is False

    mem.observe_message(out.message, "clean")
    out = await _scan(database, raw)
    assert _names(out) == {"REP_KNOWN_CORRESPONDENT"}
    sym = out.result.get("REP_KNOWN_CORRESPONDENT")
    assert sym.score < 0 and "2 clean messages" in sym.reason

    # another recipient of ours has never heard from pat
    out = await _scan(database, raw, rcpts=("carol@example.test",))
    assert _names(out) == {"REP_FIRST_CONTACT"}


async def test_bad_history(database):
    mem = SenderMemory(database)
    mem.observe("pat@partner.test", ["bob@example.test"], "phishing", Direction.INBOUND)
    mem.observe("pat@partner.test", ["bob@example.test"], "spam", "inbound")
    out = await _scan(database, make_email(sender=PARTNER))
    assert _names(out) == {"REP_BAD_HISTORY"}
    assert "2 of 2" in out.result.get("REP_BAD_HISTORY").reason


async def test_reply_to_a_message_we_sent(database):
    mem = SenderMemory(database)
    raw = make_email(sender="Bob <bob@example.test>", to="x@far.test").replace(
        b"<test-1@sender.test>", b"<out-77@example.test>")
    sent = parse_message(raw,
                         Envelope(mail_from="bob@example.test", rcpt_tos=("x@far.test",),
                                  direction=Direction.OUTBOUND))
    mem.observe_message(sent, "clean")
    reply = make_email(sender="X <x@elsewhere.test>", subject="Re: hi",
                       headers={"In-Reply-To": "<out-77@example.test>",
                                "References": "<a@b.test> <out-77@example.test>"})
    out = await _scan(database, reply, mail_from="x@elsewhere.test")
    assert _names(out) == {"REP_REPLY_TO_OUR_MAIL"}
    assert "out-77@example.test" in out.result.get("REP_REPLY_TO_OUR_MAIL").reason
    assert out.result.facts.sender_memory.first_contact is False


async def test_sender_our_user_wrote_to(database):
    mem = SenderMemory(database)
    mem.observe("bob@example.test", ["pat@partner.test"], "clean", Direction.OUTBOUND)
    out = await _scan(database, make_email(sender=PARTNER))
    assert _names(out) == {"REP_REPLY_TO_OUR_MAIL"}
    assert "bob@example.test wrote to pat@partner.test" in out.result.get("REP_REPLY_TO_OUR_MAIL").reason


async def test_no_database_no_memory_check():
    cfg = make_config()
    scanner = Scanner(BuildContext(config=cfg, network=False, database=None))
    assert "sender_memory" not in {c.name for c in scanner.pipeline.checks}
    await scanner.close()


def test_message_ids_in():
    assert message_ids_in("<a@b> junk <c.d@e>") == ["a@b", "c.d@e"]
    assert message_ids_in("") == []


async def test_async_observe(database):
    mem = SenderMemory(database)
    msg = parse_message(make_email(sender=PARTNER), Envelope(mail_from="pat@partner.test",
                                                             rcpt_tos=("bob@example.test",)))
    await mem.aobserve_message(msg, "clean")
    facts = mem.recall("pat@partner.test", ["bob@example.test"])
    assert facts.history["bob@example.test"].clean == 1 and not facts.first_contact


def test_observe_many_sums_a_batch_and_adds_to_stored_counters(database):
    from datetime import UTC, datetime, timedelta

    from mailmoat.reputation_memory import Observation

    mem = SenderMemory(database)
    t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    mem.observe("pat@partner.test", ["bob@example.test"], "clean", "inbound", at=t0)
    batch = [Observation.of("Pat@Partner.test", ["bob@example.test", "carol@example.test"],
                            "clean", "inbound", at=t0 + timedelta(hours=1)),
             Observation.of("pat@partner.test", ["<BOB@example.test>"], "spam", "inbound",
                            at=t0 + timedelta(hours=2)),
             Observation.of("bob@example.test", ["pat@partner.test"], "clean", "outbound",
                            message_id="<out-1@example.test>", at=t0),
             Observation.of("bob@example.test", ["pat@partner.test"], "clean", "outbound",
                            message_id="<out-1@example.test>", at=t0)]  # a resend
    mem.observe_many(batch)
    mem.cache.clear()  # read what the database holds, not the write-through cache
    facts = mem.recall("pat@partner.test", ["bob@example.test", "carol@example.test"],
                       reply_ids=["out-1@example.test"])
    bob = facts.history["bob@example.test"]
    assert (bob.messages, bob.clean, bob.bad) == (3, 2, 1)
    assert bob.first_seen.replace(tzinfo=UTC) == t0
    assert bob.last_seen.replace(tzinfo=UTC) == t0 + timedelta(hours=2)
    assert facts.history["carol@example.test"].messages == 1
    assert facts.wrote_to_sender == ["bob@example.test"]
    assert facts.replied_ids == ["out-1@example.test"]
    # the outbound pair is marked, and a later batch keeps the mark
    mem.observe_many([Observation.of("bob@example.test", ["pat@partner.test"], "clean",
                                     "internal")])
    mem.cache.clear()
    back = mem.recall("bob@example.test", ["pat@partner.test"]).history["pat@partner.test"]
    assert back.outbound and back.messages == 3


def test_observe_many_refreshes_cached_pairs(database):
    mem = SenderMemory(database)
    assert mem.recall("pat@partner.test", ["bob@example.test"]).first_contact  # now cached
    mem.observe("pat@partner.test", ["bob@example.test"], "clean", "inbound")
    facts = mem.recall_cached(parse_message(
        make_email(sender=PARTNER), Envelope(mail_from="pat@partner.test",
                                             rcpt_tos=("bob@example.test",))))
    assert facts is not None and facts.history["bob@example.test"].messages == 1


def test_feed_writes_in_batches_and_drains_on_close(database):
    from mailmoat.reputation_memory import ObservationFeed

    mem = SenderMemory(database)
    feed = ObservationFeed(mem)
    msg = parse_message(make_email(sender=PARTNER), Envelope(mail_from="pat@partner.test",
                                                             rcpt_tos=("bob@example.test",)))
    for _ in range(250):
        assert feed.offer(msg, "clean")
    feed.close()
    assert not feed.offer(msg, "clean")  # closed: refused, not queued forever
    mem.cache.clear()
    assert mem.recall("pat@partner.test", ["bob@example.test"]).history[
        "bob@example.test"].clean == 250


def test_feed_drops_beyond_its_limit_and_survives_database_errors(database, caplog):
    from mailmoat.reputation_memory import ObservationFeed

    class Broken(SenderMemory):
        def observe_many(self, observations):
            raise RuntimeError("database gone")

    feed = ObservationFeed(Broken(database), max_pending=0)
    msg = parse_message(make_email(sender=PARTNER), Envelope(mail_from="pat@partner.test",
                                                             rcpt_tos=("bob@example.test",)))
    assert not feed.offer(msg, "clean")
    assert "behind" in caplog.text
    feed.max_pending = 10
    assert feed.offer(msg, "clean")
    feed.close()
    assert "recording 1 observation(s) failed" in caplog.text
    assert feed._pending == 0
