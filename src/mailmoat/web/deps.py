"""FastAPI dependencies: the config and store, the authenticated caller (session cookie or
Bearer token), CSRF checks for cookie-authenticated writes, and role gates."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from mailmoat.config import Config
from mailmoat.store.db import Database
from mailmoat.store.queries import Scope
from mailmoat.store.webmodels import UserRow
from mailmoat.web.auth import Principal, principal_of, user_for_token

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(HTTPException):
    """401 for a console page: answered with the login form (see app.py)."""

    def __init__(self) -> None:
        super().__init__(status_code=401, detail="login required")


def get_config(request: Request) -> Config:
    return request.app.state.config  # type: ignore[no-any-return]


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


ConfigDep = Annotated[Config, Depends(get_config)]
DbDep = Annotated[Database, Depends(get_db)]


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    tok = request.session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(32)
        request.session["csrf"] = tok
    return str(tok)


async def check_csrf(request: Request) -> None:
    expected = request.session.get("csrf", "")
    given = request.headers.get("x-csrf-token", "")
    if not given:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            given = str(form.get("csrf_token", ""))
    if not expected or not given or not hmac.compare_digest(str(expected), given):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong")


def _session_user(request: Request, db: Database) -> UserRow | None:
    uid = request.session.get("uid")
    if not isinstance(uid, int):
        return None
    with db.session() as s:
        user = s.get(UserRow, uid)
    if user is None or user.disabled or request.session.get("epoch") != user.session_epoch:
        return None
    return user


async def _principal(request: Request, db: Database) -> Principal | None:
    # Async (check_csrf awaits the form), so every database call goes to the threadpool:
    # this runs on the event loop the gateway's SMTP shares.
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(status_code=401, detail="use Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        user = await run_in_threadpool(user_for_token, db, token.strip())
        if user is None:
            raise HTTPException(status_code=401, detail="invalid or revoked API token",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal_of(user, "token")
    user = await run_in_threadpool(_session_user, request, db)
    if user is None:
        return None
    if request.method not in SAFE_METHODS:
        await check_csrf(request)
    return principal_of(user, "session")


async def current_user(request: Request, db: DbDep) -> Principal:
    p = await _principal(request, db)
    if p is None:
        raise HTTPException(status_code=401, detail="authentication required",
                            headers={"WWW-Authenticate": "Bearer"})
    return p


async def page_user(request: Request, db: DbDep) -> Principal:
    p = await _principal(request, db)
    if p is None:
        raise LoginRequired()
    return p


def require_admin(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="administrators only")
    return user


def require_page_admin(user: Annotated[Principal, Depends(page_user)]) -> Principal:
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="administrators only")
    return user


def require_manager(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    """Administrators and domain administrators."""
    if user.role not in ("admin", "domain_admin"):
        raise HTTPException(status_code=403, detail="administrators only")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
PageUser = Annotated[Principal, Depends(page_user)]
AdminUser = Annotated[Principal, Depends(require_admin)]
PageAdmin = Annotated[Principal, Depends(require_page_admin)]
ManagerUser = Annotated[Principal, Depends(require_manager)]


def scope_of(user: Principal) -> Scope:
    if user.role == "admin":
        return Scope(all=True)
    if user.role == "domain_admin":
        return Scope(domains=user.domains, addresses=(user.email,))
    return Scope(addresses=(user.email,))


def user_by_email(db: Database, email: str) -> UserRow | None:
    with db.session() as s:
        return s.scalar(select(UserRow).where(UserRow.email == email.lower()))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
