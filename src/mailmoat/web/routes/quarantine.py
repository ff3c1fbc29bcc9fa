"""/api/v1/quarantine: list, preview, download, release, delete, report, unlearn, purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from mailmoat.errors import StoreError
from mailmoat.store import queries
from mailmoat.store.quarantine import audit, purge_expired
from mailmoat.web import services
from mailmoat.web.deps import AdminUser, ConfigDep, CurrentUser, DbDep, scope_of
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.preview import PREVIEW_CSP, build_preview
from mailmoat.web.schemas import (
    ActionOut,
    MessageSummary,
    PreviewOut,
    PurgeOut,
    QuarantineInfo,
    QuarantineItem,
    QuarantinePage,
    ReleaseIn,
    ReportIn,
)

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"], responses=AUTH)


@router.get("", response_model=QuarantinePage, summary="Held messages you may act on, newest first")
def list_held(user: CurrentUser, db: DbDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: Annotated[str | None, Query(max_length=500)] = None,
              include_done: bool = False) -> QuarantinePage:
    try:
        with db.session() as s:
            rows, nxt = queries.list_quarantine(s, scope_of(user), limit, cursor, include_done)
    except StoreError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    # Each caller sees only the held recipients in their scope (the rest may be blind copies).
    scope = scope_of(user)
    return QuarantinePage(items=[QuarantineItem(message=MessageSummary.of(m),
                                                quarantine=QuarantineInfo.of(q, scope))
                                 for q, m in rows], next_cursor=nxt)


@router.get("/{msg_id}/preview", response_model=PreviewOut, responses=responses(404, 410),
            summary="Text and sanitised HTML of a held message (never render the HTML unsandboxed)")
def preview(msg_id: str, user: CurrentUser, config: ConfigDep, db: DbDep, response: Response) -> PreviewOut:
    raw = services.raw_bytes(config, db, scope_of(user), msg_id)
    p = build_preview(raw)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    return PreviewOut(subject=p.subject, **{"from": p.from_}, to=p.to, date=p.date, text=p.text,
                      html_sanitized=p.html_clean, attachments=p.attachments, error=p.error)


@router.get("/{msg_id}/raw", summary="Download the original bytes (.eml) as an attachment",
            response_class=Response, responses={**responses(404, 410), 200: {"content": {"application/octet-stream": {}}}})
def download(msg_id: str, user: CurrentUser, config: ConfigDep, db: DbDep) -> Response:
    scope = scope_of(user)
    if not user.is_admin:
        with db.session() as s:
            m = queries.message_visible(s, scope, msg_id)
        if m is not None and m.category == "malware":
            raise HTTPException(status_code=403, detail="only administrators may download malware")
    raw = services.raw_bytes(config, db, scope, msg_id)
    audit(db, user.email, "quarantine.download", msg_id)
    return Response(raw, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{msg_id}.eml"',
        "X-Content-Type-Options": "nosniff"})


@router.post("/{msg_id}/release", response_model=ActionOut, responses=responses(404, 409, 410),
             summary="Release to (some of) the held recipients; optionally report as not spam")
async def release(msg_id: str, user: CurrentUser, config: ConfigDep, db: DbDep,
                  body: ReleaseIn | None = None) -> ActionOut:
    body = body or ReleaseIn()
    scope = scope_of(user)
    learned = None
    note = ""
    if body.report_not_spam:
        rep = await services.report(config, db, user.email, scope, msg_id, "ham")
        learned, note = rep.learned, " " + rep.message
    # The spool write (fsync) and the database: off the loop that serves SMTP.
    targets = await run_in_threadpool(services.release, config, db, user.email, scope, msg_id,
                                      body.recipients)
    return ActionOut(ok=True, recipients=targets, learned=learned,
                     message=f"Released to {', '.join(targets)}.{note}")


@router.post("/{msg_id}/delete", response_model=ActionOut, summary="Delete a held message",
             responses=responses(404, 409))
def delete(msg_id: str, user: CurrentUser, config: ConfigDep, db: DbDep) -> ActionOut:
    services.delete(config, db, user.email, scope_of(user), msg_id)
    return ActionOut(ok=True, message=f"Deleted {msg_id}.")


@router.post("/{msg_id}/report", response_model=ActionOut, responses=responses(404, 410),
             summary="Report as spam or as not spam (ham): feeds learning, always audited")
async def report(msg_id: str, body: ReportIn, user: CurrentUser, config: ConfigDep, db: DbDep) -> ActionOut:
    return await services.report(config, db, user.email, scope_of(user), msg_id, body.label)


@router.post("/{msg_id}/unlearn", response_model=ActionOut,
             responses=responses(404, 410, 500, 501),
             summary="Take back what reports and releases of this message taught (administrators)")
def unlearn(msg_id: str, admin: AdminUser, config: ConfigDep, db: DbDep) -> ActionOut:
    return services.unlearn(config, db, admin.email, scope_of(admin), msg_id)


@router.post("/purge", response_model=PurgeOut, summary="Purge held mail past its retention now")
def purge(admin: AdminUser, config: ConfigDep, db: DbDep) -> PurgeOut:
    n = purge_expired(config, db)
    audit(db, admin.email, "quarantine.purge_now", "", count=n)
    return PurgeOut(purged=n)
