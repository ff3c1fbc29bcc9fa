"""The same searches, paging, scoping and dashboard on PostgreSQL (a database created for
this test session and dropped afterwards)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailmoat.web.app import create_app
from tests.pg import fresh_postgres_database
from tests.web.conftest import bearer
from tests.web.fixtures import add_message, seed

pytestmark = pytest.mark.postgres

@pytest.fixture(scope="module")
def pg_url():
    with fresh_postgres_database("mm_web") as url:
        yield url


def test_search_paging_scopes_dashboard_on_postgres(tmp_path, pg_url):
    env = seed(tmp_path / "pg", database_url=pg_url)
    try:
        when = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(5):
            add_message(env.config, env.db, f"tie{i}", rcpts=["x@c.test"], when=when, action="accept",
                        category="clean")
        app = create_app(env.config, env.db)
        admin, bob = bearer(app, env, "admin"), bearer(app, env, "bob")
        seen, cursor = [], None
        for _ in range(10):
            page = admin.get("/api/v1/messages", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
            seen += [m["id"] for m in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == 11 and len(set(seen)) == 11 and seen[-5:] == ["tie4", "tie3", "tie2", "tie1", "tie0"]
        assert {m["id"] for m in bob.get("/api/v1/messages").json()["items"]} == {"m0002phishbob", "m0006shared"}
        assert [m["id"] for m in admin.get("/api/v1/messages", params={"subject": "pills"}).json()["items"]] == [
            "m0001spamalice"]
        assert [m["id"] for m in admin.get("/api/v1/messages", params={"sender": "@good.test"}).json()["items"]] == [
            "m0003cleanalice"]
        d = admin.get("/api/v1/stats/dashboard").json()
        assert d["total"] == 6 and sum(p["count"] for p in d["volume"]) == 6
        assert set(p["bucket"] for p in d["volume"]) <= set(d["buckets"])
        assert admin.post("/api/v1/quarantine/m0002phishbob/release").json()["recipients"] == ["bob@b.test"]
        assert "mailmoat_quarantine_held 4.0" in admin.get("/metrics").text
    finally:
        env.db.dispose()
