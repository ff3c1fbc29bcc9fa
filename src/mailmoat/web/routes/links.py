"""One-click digest links (/d/<token>): view or release a held message without logging in.
Viewing shows the text only; releasing takes a POST (so link scanners that prefetch GETs do
not release mail) and burns the link's nonce. What an end user may not release themselves
(phishing, malware: web.release_requests) the link only asks an administrator to release."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from mailmoat.errors import StoreError
from mailmoat.store import queries
from mailmoat.store.quarantine import load_raw, release_message
from mailmoat.web import release_requests
from mailmoat.web.auth import Principal
from mailmoat.web.deps import ConfigDep, DbDep
from mailmoat.web.digest import (
    LinkClaims,
    LinkError,
    claim_nonce,
    make_token,
    nonce_used,
    read_token,
)
from mailmoat.web.preview import PREVIEW_CSP, build_preview

router = APIRouter(include_in_schema=False)


def _page(request: Request, status: int = 200, **ctx: object) -> HTMLResponse:
    ctx.setdefault("user", None)
    resp = request.app.state.templates.TemplateResponse(request, "link.html", ctx, status_code=status)
    resp.headers["Content-Security-Policy"] = PREVIEW_CSP
    return resp


def _held(db: DbDep, claims: LinkClaims) -> tuple[object, object]:
    with db.session() as s:
        q = queries.quarantine_entry(s, claims.message_id)
        m = s.get(queries.MessageRow, claims.message_id)
    if q is None or m is None or q.deleted_at is not None:
        raise LinkError("this message is no longer in quarantine", 410)
    if claims.recipient not in [h.lower() for h in (q.held_for or [])]:
        raise LinkError("this message is no longer held for you (already released?)", 410)
    return q, m


@router.get("/d/{token}", response_class=HTMLResponse)
def open_link(token: str, request: Request, config: ConfigDep, db: DbDep) -> HTMLResponse:
    try:
        claims = read_token(config, token)
        if claims.action == "release" and nonce_used(db, claims.nonce):
            raise LinkError("this link was already used", 410)
        q, m = _held(db, claims)
    except LinkError as exc:
        return _page(request, status=exc.status, error=str(exc))
    preview = build_preview(load_raw(config, db, claims.message_id)) if claims.action == "view" else None
    release_token = token if claims.action == "release" else make_token(
        config, claims.message_id, claims.recipient, "release")
    return _page(request, error="", m=m, claims=claims, preview=preview, release_token=release_token,
                 can_release=m.category in release_requests.USER_MAY_RELEASE)  # type: ignore[attr-defined]


@router.post("/d/{token}", response_class=HTMLResponse)
def use_link(token: str, request: Request, config: ConfigDep, db: DbDep) -> HTMLResponse:
    try:
        claims = read_token(config, token)
        if claims.action != "release":
            raise LinkError("this link does not release mail", 400)
        if nonce_used(db, claims.nonce):
            raise LinkError("this link was already used", 410)
        _, m = _held(db, claims)
        claim_nonce(db, claims)  # before releasing: a replay or a double click gets 410
        if m.category not in release_requests.USER_MAY_RELEASE:  # type: ignore[attr-defined]
            return _page(request, error="", done=_request(config, db, claims))
        try:
            got = release_message(config, db, claims.message_id, f"digest-link:{claims.recipient}",
                                  [claims.recipient])
        except StoreError as exc:
            raise LinkError(str(exc), 409) from exc
    except LinkError as exc:
        return _page(request, status=exc.status, error=str(exc))
    return _page(request, error="", done=f"Released to {', '.join(got)}. It will arrive shortly.")


def _request(config: ConfigDep, db: DbDep, claims: LinkClaims) -> str:
    """Ask the administrators to release the message to the link's recipient."""
    who = Principal(id=0, email=claims.recipient, role="user", via="link")
    try:
        r = release_requests.request_release(config, db, who, claims.message_id, "via a digest link",
                                             [claims.recipient], actor=f"digest-link:{claims.recipient}")
    except HTTPException as exc:
        raise LinkError(str(exc.detail), exc.status_code) from exc
    return (f"Asked an administrator to release it (request {r.id}). You will hear back by mail "
            "or when you log in to the quarantine.")
