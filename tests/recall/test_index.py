"""The delivery index: each logged message's URLs, domains, hashes, addresses, client IP,
subject and Message-ID are rows matched by equality, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from mailmoat.message.model import Direction, Envelope
from mailmoat.recall.index import deliveries, find_messages, normalise, observables
from mailmoat.store.log import LogWriter, message_log_data
from mailmoat.store.models import ObservableRow
from mailmoat.store.retention import purge_old_messages
from tests.conftest import make_email, scan_bytes


@pytest.mark.parametrize("kind,raw,expected", [
    ("url", "HTTPS://Login.Example.COM:443/Reset?u=A#frag", "https://login.example.com/Reset?u=A"),
    ("url", "http://bank.example@evil.test:8080", "http://evil.test:8080/"),
    ("url", "not a url", "not a url"),
    ("domain", "Evil.Example.", "evil.example"),
    ("ip", "[2001:DB8::1]", "2001:db8::1"),
    ("ip", "not-an-ip", ""),
    ("email", " Boss@Example.COM ", "boss@example.com"),
    ("subject", "  Your   Invoice\tIS READY ", "your invoice is ready"),
    ("message_id", "<abc@mx.example>", "abc@mx.example"),
])
def test_normalise(kind, raw, expected):
    assert normalise(kind, raw) == expected


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown observable kind"):
        normalise("colour", "red")


def test_observables_of_a_message():
    data = {"id": "m1", "urls": ["https://a.b.evil.co.uk/x", "http://203.0.113.7/login"],
            "url_domains": ["a.b.evil.co.uk", "203.0.113.7"],
            "mail_from": "Bounce@ESP.example", "from_header": "ceo@corp.example",
            "headers": {"Reply-To": "CEO <ceo.private@freemail.example>"},
            "client_ip": "198.51.100.9", "subject": "Pay  now",
            "message_id": "<x@y>", "attachments": [{"sha256": "AB" * 32}]}
    facts = set(observables(data))
    assert {("domain", "a.b.evil.co.uk"), ("domain", "b.evil.co.uk"),
            ("domain", "evil.co.uk")} <= facts
    assert ("domain", "co.uk") not in facts  # never above the organisational domain
    assert ("ip", "203.0.113.7") in facts and ("ip", "198.51.100.9") in facts
    assert ("url", "http://203.0.113.7/login") in facts
    assert {("email", "bounce@esp.example"), ("email", "ceo@corp.example"),
            ("email", "ceo.private@freemail.example")} <= facts
    assert ("domain", "freemail.example") in facts
    assert ("sha256", "ab" * 32) in facts
    assert ("subject", "pay now") in facts and ("message_id", "x@y") in facts
    assert len(facts) == len(observables(data))  # no repeats


async def _log(db, writer, mid, raw, received_at, rcpts=("u1@example.test", "u2@example.test")):
    out = await scan_bytes(raw)
    env = Envelope(mail_from="sender@outside.example", rcpt_tos=tuple(rcpts),
                   client_ip="192.0.2.10", direction=Direction.INBOUND,
                   received_at=received_at)
    data = message_log_data(mailmoat_id=mid, envelope=env, outcome=out)
    data["recipients"] = {r: "accept" for r in rcpts}  # scan_bytes scanned for its own
    assert writer.log_message(data).result(10) is True
    return data


async def test_logged_messages_are_found_by_indicator_and_their_deliveries_listed(db):
    writer = LogWriter(db)
    try:
        now = time.time()
        lure = make_email(subject="Verify your mailbox",
                          body="Log in at https://Mail-Verify.evil.example/login now")
        other = make_email(subject="Lunch", body="See https://intranet.example.test/menu")
        await _log(db, writer, "old", lure, now - 40 * 86400)
        await _log(db, writer, "new", lure, now)
        await _log(db, writer, "lunch", other, now)
        writer.log_delivery("new", [("u1@example.test", "delivered", "250 ok"),
                                    ("u2@example.test", "deferred", "451 later")], 1).result(10)
        with db.session() as s:
            since = datetime.now(UTC) - timedelta(days=14)
            hits = find_messages(s, "url", ["https://mail-verify.evil.example/login"], since)
            assert hits == [("new", "https://mail-verify.evil.example/login")]
            assert sorted(m for m, _ in find_messages(s, "domain", ["evil.example"])) == \
                ["new", "old"]
            assert find_messages(s, "domain", ["example"]) == []
            assert find_messages(s, "ip", ["192.0.2.10"], since) != []
            got = deliveries(s, ["new", "old", "lunch"])
        assert [(d.mailmoat_id, d.recipient) for d in got] == [("new", "u1@example.test")]
        assert got[0].subject == "Verify your mailbox"
    finally:
        writer.close()


async def test_a_message_logged_twice_is_indexed_once_and_purged_with_its_message(db):
    writer = LogWriter(db)
    try:
        raw = make_email(subject="Twice", body="https://twice.example/")
        data = await _log(db, writer, "m2", raw, time.time() - 100 * 86400)
        assert writer.log_message(data).result(10) is False
        with db.session() as s:
            n = s.scalar(select(func.count()).select_from(ObservableRow)
                         .where(ObservableRow.message_id == "m2"))
            assert n == len(observables(data)) > 0
        assert purge_old_messages(db, 90) == 1
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(ObservableRow)) == 0
    finally:
        writer.close()


def test_many_values_are_looked_up_in_chunks(db):
    with db.session() as s:
        assert find_messages(s, "sha256", [f"{i:064x}" for i in range(1200)]) == []
