"""Two gateway nodes on one Redis see one account: a burst split across them is one
account's burst, and a suspension made by one is enforced by the other at once (they
share no database here: Redis alone carries it)."""

from __future__ import annotations

import pytest

from tests.internal.helpers import Outcome, lure, message, relay, settle
from tests.smtp.helpers import Sink, gateway_config, port_of, running_gateway, start_sink

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"
MALLORY = "mallory@example.test"


def node(tmp_path, name: str, sink_port: int, prefix: str):
    return gateway_config(tmp_path / name, sink_port, **{
        "smtp": {"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"],
                 "hostname": f"{name}.gateway.test"},
        "internal": {"identity_header": "X-Authenticated-Sender"},
        "redis": {"url": URL, "key_prefix": prefix}})


async def test_a_burst_split_across_two_nodes_is_one_accounts_burst(tmp_path, redis_prefix):
    sink = Sink()
    server = await start_sink(sink)
    try:
        async with running_gateway(node(tmp_path, "a", port_of(server), redis_prefix)) as a, \
                running_gateway(node(tmp_path, "b", port_of(server), redis_prefix)) as b:
            total = Outcome()
            for i in range(60):
                rcpt = f"colleague{i}@example.test"
                subject, body = lure(f"colleague{i}")
                gw = a if i % 2 == 0 else b
                total.add(await relay(gw.smtp_port, [(MALLORY, [rcpt], message(
                    MALLORY, [rcpt], subject, body))], connections=1))
            # One account's window: the 21st message overall flagged it, not the 41st.
            assert len(total.accepted[MALLORY]) == 21
            assert len(total.refused[MALLORY]) == 39
            # Each node refuses it now; the one that did not flag it learned it from Redis.
            flagged_on = a if a.internal_guard.stats.flagged else b
            other = b if flagged_on is a else a
            assert flagged_on.internal_guard.stats.flagged == 1
            assert other.internal_guard.stats.flagged == 0
            assert await other.internal_guard.refusal(MALLORY, 2e9)
            await settle(lambda: len(sink.messages) == 20, what="20 delivered")
            # Both nodes' views of the account's baseline are the same one.
            ra = await a.internal_guard.redis.get(f"{redis_prefix}internal:b:{MALLORY}")
            assert ra is not None
    finally:
        server.close()


async def test_a_suspension_from_the_console_reaches_every_node_through_redis(tmp_path,
                                                                                redis_prefix):
    from mailmoat.internal.accounts import restrict_account

    sink = Sink()
    server = await start_sink(sink)
    try:
        cfg = node(tmp_path, "a", port_of(server), redis_prefix)
        async with running_gateway(cfg) as a:
            # Written by another process (the console) to its own database and to Redis.
            other_db_cfg = node(tmp_path, "console", port_of(server), redis_prefix)
            from mailmoat.store.db import Database

            db = Database(other_db_cfg.database_url)
            db.create_schema()
            restrict_account(other_db_cfg, db, "ann@example.test", "admin@example.test")
            db.dispose()
            out = await relay(a.smtp_port, [("ann@example.test", ["bob@example.test"], message(
                "ann@example.test", ["bob@example.test"], "Hi", "Hi Bob,\nlunch?\n"))],
                connections=1)
            assert "ann@example.test" not in out.accepted
            assert "suspended" in out.refused["ann@example.test"][0]
    finally:
        server.close()
