"""The account state on PostgreSQL: baselines written behind (upserts), restrictions and
incidents, and what a restarted guard reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailmoat.internal.accounts import get_restriction, list_incidents
from mailmoat.internal.stats import internal_stats
from mailmoat.internal.store import count_baselines, load_baseline
from mailmoat.store.db import Database
from tests.conftest import make_config
from tests.internal.helpers import Org
from tests.pg import fresh_postgres_database

pytestmark = pytest.mark.postgres
T0 = 1_780_000_000.0


async def test_state_on_postgres_survives_a_restart():
    with fresh_postgres_database() as url:
        cfg = make_config(smtp={"trusted_networks": ["127.0.0.1/32"],
                                "internal_domains": ["example.test"]},
                          internal={"identity_header": "X-Authenticated-Sender"},
                          storage={"database_url": url})
        db = Database(url)
        db.create_schema()
        org = Org(cfg, db)
        try:
            for k in range(5):
                for m in range(3):
                    await org.send(f"u{k}@example.test", [f"u{(k + 1) % 5}@example.test"],
                                   T0 + k * 60 + m, body=f"Hi,\nnote {m} of {k}\n")
            for i in range(21):
                out = await org.send("m@example.test", [f"c{i}@example.test"], T0 + 600 + i,
                                     subject="Rota", body="Hi,\nplease check the rota.\n")
            assert out.result.facts.internal.flagged
        finally:
            await org.close()  # writes the baselines
        assert count_baselines(db) == 7  # six accounts and the peers
        assert load_baseline(db, "u0@example.test")["learned"] == 3
        r = get_restriction(db, "m@example.test")
        assert r is not None and r.kind == "suspend" and r.incident_id is not None
        assert list_incidents(db, account="m@example.test")[0].signals[0]["name"] == \
            "INTERNAL_FANOUT"
        stats = internal_stats(db, days=3650, now=datetime.fromtimestamp(T0 + 900, UTC))
        assert stats["restricted"]["suspend"] == 1 and stats["open_incidents"] == 1
        assert [d["opened"] for d in stats["incidents"]] == [1]
        # A second run of the gateway on the same database.
        org = Org(cfg, db)
        try:
            assert await org.guard.refusal("m@example.test", T0 + 700)
            out = await org.send("u0@example.test", ["u1@example.test"], T0 + 800,
                                 body="Hi,\nnote again\n")
            assert org.guard.baseline("u0@example.test").learned == 4
            assert not out.result.facts.internal.flagged
        finally:
            await org.close()
        assert load_baseline(db, "u0@example.test")["learned"] == 4
        db.dispose()
