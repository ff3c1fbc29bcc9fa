"""The web console and REST API: one FastAPI app over the message log and quarantine store.

`create_app(config, database)` builds it; `mailmoat serve` runs it with uvicorn. The REST API
lives under /api/v1 (OpenAPI at /openapi.json); the console pages are server-rendered
Jinja2 with no JavaScript needed; /healthz, the login page and digest links are the only
things that answer without credentials. Background jobs (lifespan): purge expired
quarantine on an interval, and send digests at the configured hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Match
from starlette.types import Scope

import mailmoat.store.webmodels  # noqa: F401  (registers the web tables on Base)
from mailmoat import __version__
from mailmoat.config import Config
from mailmoat.store.db import Database
from mailmoat.store.quarantine import purge_expired
from mailmoat.web import metrics
from mailmoat.web.auth import cookie_secure, secret_key
from mailmoat.web.deps import AdminUser, LoginRequired, csrf_token, get_db
from mailmoat.web.digest import ConsoleSettings, DigestSettings, send_digests
from mailmoat.web.errors import AUTH, responses

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent

CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")


async def _purge_loop(config: Config, db: Database, every_s: float, at_start: bool) -> None:
    if not at_start:
        await asyncio.sleep(every_s)
    while True:
        try:
            n = await asyncio.to_thread(purge_expired, config, db)
            if n:
                log.info("purged %d expired quarantined messages", n)
        except Exception:  # keep the loop alive; the next run tries again
            log.exception("quarantine purge failed")
        await asyncio.sleep(every_s)


def seconds_until_hour(hour: int, now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    nxt = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if nxt <= now:
        nxt += timedelta(days=1)
    return (nxt - now).total_seconds()


async def _digest_loop(config: Config, db: Database, hour: int) -> None:
    while True:
        await asyncio.sleep(seconds_until_hour(hour))
        try:
            users, n = await asyncio.to_thread(send_digests, config, db)
            log.info("sent %d digests listing %d messages", users, n)
        except Exception:
            log.exception("digest sending failed")


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route answers on this path, for `Allow` on a 405: Starlette's own
    names only the methods of the first route that matched the path (GET /x and POST /x
    are two routes). Asks each route, with a bare request per method."""
    allowed = []
    for method in HTTP_METHODS:
        probe = {"type": "http", "method": method, "path": scope["path"],
                 "root_path": scope.get("root_path", ""), "headers": []}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def wants_html(request: Request) -> bool:
    """A browser asks for HTML first; API clients and scripts ask for JSON or anything."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept.split(",")[0] or accept.startswith("text/html")


ERROR_TITLES = {400: "That request is not valid", 403: "Not for you", 404: "Not found",
                409: "That cannot be done now", 410: "Gone", 422: "That is not valid"}


def error_page(request: Request, status: int, detail: str) -> Response:
    """The console's error page (403, 404, …) for a browser, with a way back."""
    title = ERROR_TITLES.get(status, "Something went wrong")
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"user": None, "status": status, "title": title,
                                "detail": detail, "flash": ""}, status_code=status)


def create_app(config: Config, database: Database, *, internal_guard: Any = None) -> FastAPI:
    """The console and API. `internal_guard`: the gateway's account guard in this process
    (mailmoat.internal.guard.InternalGuard), told of suspensions and releases at once."""
    database.create_schema()
    console = config.section("console", ConsoleSettings)
    digest = config.section("digest", DigestSettings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The gateway (app.Gateway.start) logs "antivirus off: ..." at start, with or
        # without the console; the console only shows it on the dashboard.
        tasks = [asyncio.create_task(_purge_loop(config, database, console.purge_interval_hours * 3600,
                                                 console.purge_on_start))]
        if digest.enabled:
            tasks.append(asyncio.create_task(_digest_loop(config, database, digest.hour)))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    app = FastAPI(title="mailmoat", version=__version__, lifespan=lifespan,
                  description="REST API of the mailmoat email security gateway. Authenticate with "
                  "a session cookie (POST /api/v1/auth/login; writes then need the X-CSRF-Token "
                  "header) or `Authorization: Bearer <token>` (`mailmoat token create USER`).",
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.config = config
    app.state.db = database
    app.state.internal_guard = internal_guard
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.metrics = metrics.make_registry(config, database)
    app.add_middleware(SessionMiddleware, secret_key=secret_key(config), session_cookie="mailmoat_session",
                       max_age=12 * 3600, same_site="lax", https_only=cookie_secure(config))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return app.state.templates.TemplateResponse(
            request, "login.html", {"csrf": csrf_token(request), "error": "", "next": request.url.path,
                                    "user": None}, status_code=401)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            headers = {**(exc.headers or {}), "Allow": allowed_methods(app, request.scope)}
            return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)
        if not request.url.path.startswith("/api/"):
            if wants_html(request):
                return error_page(request, exc.status_code, str(exc.detail))
            return await http_exception_handler(request, exc)
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # A body that is not even text (FastAPI: 400) is as invalid as one that is not
            # JSON (FastAPI: 422 json_invalid): one answer for both.
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "the body is not valid UTF-8 JSON",
                                             "type": "json_invalid"}]}, status_code=422)
        if exc.status_code == 422 and isinstance(exc.detail, str):
            # One shape for every 422 of the API: FastAPI's validation errors (errors.py).
            return JSONResponse({"detail": [{"loc": [], "msg": exc.detail, "type": "value_error"}]},
                                status_code=422, headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.get("/healthz", tags=["health"], summary="Liveness: the app and its database answer",
             responses={200: {"description": "`{\"ok\": true, \"version\": ...}`"},
                        503: {"description": "The database does not answer: `{\"ok\": false, \"error\": ...}`"}})
    def healthz(request: Request) -> JSONResponse:
        db = get_db(request)
        try:
            with db.engine.connect() as c:
                c.exec_driver_sql("SELECT 1")
        except Exception as exc:
            return JSONResponse({"ok": False, "error": str(exc)[:200]}, status_code=503)
        return JSONResponse({"ok": True, "version": __version__})

    @app.get("/metrics", tags=["health"], response_class=Response, responses=AUTH,
             summary="Prometheus metrics (admin session or Bearer token)")
    def prometheus(admin: AdminUser) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    from mailmoat.web.routes import (
        auth,
        digest_api,
        internal,
        intel,
        lessons,
        links,
        me,
        messages,
        pages,
        policy,
        quarantine,
        quarantine_pages,
        stats,
        users,
        users_page,
    )
    from mailmoat.web.routes import recall as recall_routes

    for r in (auth.router, users.router, messages.router, quarantine.router, policy.router,
              stats.router, digest_api.router, lessons.router, links.router, me.router,
              intel.router, pages.router, quarantine_pages.router, users_page.router,
              internal.router):
        app.include_router(r)
    app.include_router(recall_routes.router)
    app.include_router(recall_routes.pages)
    app.include_router(intel.pages)
    app.include_router(internal.pages)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app
