"""No endpoint answers without credentials except health, login, the API docs and digest
links: walk every route of the app and call it anonymously."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

PUBLIC = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"), ("POST", "/api/v1/auth/login"),
          ("GET", "/d/{token}"), ("POST", "/d/{token}"), ("GET", "/openapi.json"),
}


def all_routes(routes):
    """Flatten the app's routes (FastAPI wraps included routers)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from all_routes(inner.routes)
        else:
            yield r


def test_every_route_requires_auth(app, anon):
    checked = 0
    for route in all_routes(app.routes):
        if isinstance(route, Mount):
            continue
        assert isinstance(route, (APIRoute, Route)), route
        for method in sorted(route.methods or ()):
            if method == "HEAD" or (method, route.path) in PUBLIC:
                continue
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            r = anon.request(method, path, json={})
            assert r.status_code in (401, 403), f"{method} {route.path} answered {r.status_code} anonymously"
            checked += 1
    assert checked >= 30


def test_public_routes_still_work(anon):
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/login").status_code == 200
    assert anon.get("/d/not-a-valid-token").status_code == 400
    assert anon.get("/static/app.css").status_code == 200


def test_console_pages_answer_401_with_login_form(anon):
    r = anon.get("/messages")
    assert r.status_code == 401 and 'id="login-form"' in r.text and 'value="/messages"' in r.text
