"""Bad input never crashes the guard or loses mail: malformed identity headers, an account
with a huge number of recipients, clock skew between nodes, Redis away, damaged state, a
failing guard."""

from __future__ import annotations

import logging
import time

from mailmoat.internal.baseline import AccountBaseline, Entry
from mailmoat.internal.check import SYMBOLS
from mailmoat.internal.fingerprint import recipient_key
from mailmoat.internal.guard import InternalGuard
from mailmoat.internal.identity import SenderIdentity
from mailmoat.internal.signals import MessageFacts
from mailmoat.internal.store import MAX_WINDOW_ENTRIES, pack_entry, unpack_entry
from mailmoat.scan.base import Action
from mailmoat.store.models import MessageRow
from tests.conftest import make_config
from tests.internal.helpers import Org, held_count, internal_config, message, relay, settle
from tests.smtp.helpers import gateway_config, running_gateway

T0 = 1_780_000_000.0
CONTRACT = {"smtp": {"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
            "internal": {"identity_header": "X-Authenticated-Sender"}}


def facts(at: float, recipients: int = 1) -> MessageFacts:
    return MessageFacts(at=at, recipients=recipients, internal=recipients, external=0,
                        network="127.0.0.0/24", agent="", client_ip="127.0.0.1", types=(),
                        link_domains=(), reply_to="", reply_to_freemail=False, forwarded=False,
                        freemail_rcpts=0, category="clean", content_score=0.0,
                        threat_evidence=False, tag_threshold=5.0)


def entry(at: float, keys: tuple[int, ...], fp: int = 0) -> Entry:
    return Entry(at=at, fingerprint=fp, recipients=keys, new=0, external=0,
                 external_attachments=False, freemail=0, forwarded=False)


IDENT = SenderIdentity(account="big@example.test", source="header", client_ip="127.0.0.1",
                       network="127.0.0.0/24")


def weight(name: str, factor: float) -> float:
    return round(SYMBOLS[name].weight * factor, 3)


async def test_a_malformed_identity_header_is_logged_and_the_mail_delivered(tmp_path, sink,
                                                                             caplog):
    cfg = gateway_config(tmp_path, sink.port, **CONTRACT)
    raw = message("ann@example.test", ["bob@example.test"], "Hi", "Hi Bob,\nlunch?\n",
                  identity="\x7f not an address, not a login \x01")
    async with running_gateway(cfg) as gw:
        with caplog.at_level(logging.WARNING):
            out = await relay(gw.smtp_port, [("ann@example.test", ["bob@example.test"], raw)],
                              connections=1)
        mid = out.accepted["ann@example.test"][0]
        await sink.wait_for(1)

        def row():
            with gw.db.session() as s:
                return s.get(MessageRow, mid)
        await settle(row, what="logged")
        assert row().sender_account == "ann@example.test"  # the envelope stood in
    assert "identity header X-Authenticated-Sender from 127.0.0.1 ignored" in caplog.text


async def test_an_account_with_thousands_of_recipients_is_held_not_lost(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, smtp={**CONTRACT["smtp"], "max_recipients": 3000},
                         internal=CONTRACT["internal"])
    rcpts = [f"person{i}@example.test" for i in range(3000)]
    async with running_gateway(cfg) as gw:
        started = time.monotonic()
        out = await relay(gw.smtp_port, [("big@example.test", rcpts, message(
            "big@example.test", rcpts[:3], "Everyone", "Hi all,\nnews.\n"))], connections=1)
        assert len(out.accepted["big@example.test"]) == 1
        assert time.monotonic() - started < 60
        await settle(lambda: held_count(gw.db, "big@example.test") == 1, what="held")
        assert not sink.messages
        b = gw.internal_guard.baseline("big@example.test")
        assert b is not None and b.learned == 0  # a flagged message teaches nothing


async def test_a_million_recipients_stay_bounded():
    guard = InternalGuard(internal_config())
    try:
        keys = tuple(recipient_key(f"r{i}@example.test") for i in range(1000))
        started = time.perf_counter()
        for n in range(MAX_WINDOW_ENTRIES + 50):
            j = await guard.observe(IDENT, facts(T0 + n * 0.01, recipients=1_000_000),
                                    entry(T0 + n * 0.01, keys), weight)
        assert time.perf_counter() - started < 60
        assert j.action in ("refuse", "hold")  # flagged early, refused since
        slot = guard.memory.slots["big@example.test"]
        assert len(slot.entries) <= MAX_WINDOW_ENTRIES
        packed = pack_entry(entry(T0, keys * 3))
        assert len(unpack_entry(packed).recipients) == 1000
    finally:
        await guard.close()


async def test_clock_skew_is_logged_and_judged(caplog):
    guard = InternalGuard(internal_config())
    try:
        with caplog.at_level(logging.WARNING, logger="mailmoat.internal"):
            await guard.observe(IDENT, facts(T0), entry(T0, (1,)), weight)
            j = await guard.observe(IDENT, facts(T0 - 3600), entry(T0 - 3600, (2,)), weight)
        assert j.action == "none" and guard.stats.skew_warnings == 1
        assert "dated 3600 s before the newest seen" in caplog.text
    finally:
        await guard.close()


async def test_redis_away_judges_with_this_nodes_memory(caplog):
    cfg = make_config(smtp={"trusted_networks": ["127.0.0.1/32"],
                            "internal_domains": ["example.test"]},
                      redis={"url": "redis://127.0.0.1:1/0"})
    guard = InternalGuard(cfg)
    try:
        with caplog.at_level(logging.WARNING, logger="mailmoat.internal"):
            for i in range(25):
                j = await guard.observe(IDENT, facts(T0 + i), entry(T0 + i, (i,), fp=7), weight)
        assert "Redis did not answer" in caplog.text
        assert guard.stats.observed == 25 and guard.memory.slots["big@example.test"].entries
        # The suspension it earned is enforced by this node alone meanwhile.
        assert await guard.refusal("big@example.test", T0 + 30)
    finally:
        await guard.close()


def test_a_damaged_baseline_costs_history_not_a_crash():
    b = AccountBaseline.from_dict({"learned": "many", "peaks": [1, "x"], "bloom": "!!notb64",
                                   "profile": 5, "networks": {"a": "b", "c": 1.0},
                                   "first_seen": float("nan"), "hour": 7})
    assert b.learned == 0 and b.hour == 7 and b.networks == {"c": 1.0}
    assert not b.knows(12345) and b.first_seen == 0.0


async def test_a_failing_guard_yields_internal_fail_and_the_mail_goes_on(monkeypatch):
    org = Org(internal_config())

    async def broken(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(org.guard, "observe", broken)
    try:
        out = await org.send("ann@example.test", ["bob@example.test"], T0)
        fail = out.result.get("INTERNAL_FAIL")
        assert fail is not None and "disk on fire" in fail.reason
        assert out.verdict.action is Action.ACCEPT
    finally:
        await org.close()
