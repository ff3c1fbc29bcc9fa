"""/api/v1/auth: log in (sets the session cookie), log out, who am I, API tokens."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from mailmoat.store.webmodels import ApiTokenRow, UserRow
from mailmoat.web.auth import LoginBusy, authenticate_off_loop, create_token, record_failure, throttled
from mailmoat.web.deps import CurrentUser, DbDep, client_ip
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.schemas import (
    LoginIn,
    LoginOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserPublic,
    utc,
)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def public(u: UserRow) -> UserPublic:
    return UserPublic(id=u.id, email=u.email, role=u.role, domains=list(u.domains or []),
                      disabled=bool(u.disabled))


async def login_session(request: Request, db: DbDep, email: str, password: str) -> UserRow:
    """Check throttling and the password; on success start a fresh session. Nothing here
    runs on the event loop the gateway's SMTP shares: the database on the threadpool,
    argon2 on its own few threads (web.auth.verify_password_off_loop)."""
    ip = client_ip(request)
    if await run_in_threadpool(throttled, db, email, ip):
        raise HTTPException(status_code=429, detail="too many failed logins; try again in 15 minutes",
                            headers={"Retry-After": "900"})
    try:
        user = await authenticate_off_loop(db, email, password)
    except LoginBusy as exc:
        raise HTTPException(status_code=429, detail="too many logins at once; try again shortly",
                            headers={"Retry-After": "5"}) from exc
    if user is None:
        await run_in_threadpool(record_failure, db, email, ip)
        raise HTTPException(status_code=401, detail="wrong email or password")
    request.session.clear()  # no session fixation: a new CSRF token too
    request.session.update({"uid": user.id, "epoch": user.session_epoch,
                            "csrf": secrets.token_urlsafe(32)})
    return user


@router.post("/login", response_model=LoginOut, summary="Log in; sets the session cookie",
             responses=responses(401, 429))
async def login(body: LoginIn, request: Request, db: DbDep) -> LoginOut:
    user = await login_session(request, db, body.email, body.password)
    return LoginOut(user=public(user), csrf_token=request.session["csrf"])


@router.post("/logout", summary="End the session", responses=AUTH)
def logout(request: Request, user: CurrentUser) -> dict[str, bool]:
    request.session.clear()
    return {"ok": True}


@router.get("/me", response_model=UserPublic, responses=AUTH)
def me(user: CurrentUser, db: DbDep) -> UserPublic:
    with db.session() as s:
        row = s.get(UserRow, user.id)
        assert row is not None
        return public(row)


@router.get("/tokens", response_model=list[TokenOut], summary="Your API tokens", responses=AUTH)
def list_tokens(user: CurrentUser, db: DbDep) -> list[TokenOut]:
    with db.session() as s:
        rows = s.scalars(select(ApiTokenRow).where(ApiTokenRow.user_id == user.id)
                         .order_by(ApiTokenRow.id)).all()
        return [TokenOut(id=r.id, name=r.name, created_at=utc(r.created_at) or r.created_at,
                         last_used_at=utc(r.last_used_at), revoked=r.revoked_at is not None) for r in rows]


@router.post("/tokens", response_model=TokenCreated, status_code=201, responses=AUTH,
             summary="Create an API token for yourself (shown once)")
def new_token(body: TokenCreate, user: CurrentUser, db: DbDep) -> TokenCreated:
    from mailmoat.store.quarantine import audit

    tok = create_token(db, user.id, body.name)
    audit(db, user.email, "token.create", user.email, name=body.name)
    return TokenCreated(token=tok, name=body.name)


@router.delete("/tokens/{token_id}", summary="Revoke one of your API tokens",
               responses=AUTH | responses(404))
def revoke_token(token_id: int, user: CurrentUser, db: DbDep) -> dict[str, bool]:
    from mailmoat.store.quarantine import audit

    with db.session() as s:
        row = s.get(ApiTokenRow, token_id)
        if row is None or (row.user_id != user.id and not user.is_admin):
            raise HTTPException(status_code=404, detail="no such token")
        row.revoked_at = row.revoked_at or datetime.now(UTC)
    audit(db, user.email, "token.revoke", str(token_id))
    return {"ok": True}
