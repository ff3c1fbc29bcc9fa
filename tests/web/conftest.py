from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mailmoat.web.app import create_app
from mailmoat.web.auth import set_hash_cost
from tests.web.fixtures import PASSWORD, Seeded, seed


@pytest.fixture(autouse=True, scope="session")
def _cheap_hashes():
    # Production cost (64 MiB, 3 passes) is deliberate for attackers and slow for tests.
    set_hash_cost(1, 1024)


@pytest.fixture
def env(tmp_path) -> Seeded:
    sd = seed(tmp_path / "data")
    yield sd
    sd.db.dispose()


@pytest.fixture
def app(env):
    return create_app(env.config, env.db)


@pytest.fixture
def anon(app):
    with TestClient(app) as c:
        yield c


def bearer(app, env: Seeded, who: str) -> TestClient:
    c = TestClient(app)
    c.headers["Authorization"] = f"Bearer {env.tokens[who]}"
    return c


def login(app, email: str, password: str = PASSWORD) -> tuple[TestClient, str]:
    """A client with a session cookie; returns it and its CSRF token."""
    c = TestClient(app)
    r = c.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]
