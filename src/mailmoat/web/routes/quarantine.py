"""/api/v1/quarantine: list, preview, download, release, delete, report, unlearn, purge."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from mailmoat.errors import StoreError
from mailmoat.store import queries
from mailmoat.store.quarantine import audit, purge_expired
from mailmoat.web import release_requests, services
from mailmoat.web.deps import AdminUser, ConfigDep, CurrentUser, DbDep, ManagerUser, scope_of
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.preview import PREVIEW_CSP, build_preview
from mailmoat.web.schemas import (
    ActionOut,
    DecisionIn,
    MessageSummary,
    PreviewOut,
    PurgeOut,
    QuarantineInfo,
    QuarantineItem,
    QuarantinePage,
    ReleaseIn,
    ReleaseRequestOut,
    ReportIn,
    RequestReleaseIn,
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
             summary="Release to (some of) the held recipients; optionally report as not spam. "
             "An end user releases spam, bulk and clean mail; phishing, malware, BEC and policy "
             "holds answer 403: request their release instead")
async def release(msg_id: str, user: CurrentUser, config: ConfigDep, db: DbDep,
                  body: ReleaseIn | None = None) -> ActionOut:
    body = body or ReleaseIn()
    scope = scope_of(user)
    learned = None
    note = ""
    # Before anything is reported or learned: a refused release leaves no trace.
    await run_in_threadpool(release_requests.check_release, db, user, msg_id)
    if body.report_not_spam:
        rep = await services.report(config, db, user.email, scope, msg_id, "ham")
        learned, note = rep.learned, " " + rep.message
    # The spool write (fsync) and the database: off the loop that serves SMTP.
    targets = await run_in_threadpool(services.release, config, db, user.email, scope, msg_id,
                                      body.recipients)
    return ActionOut(ok=True, recipients=targets, learned=learned,
                     message=f"Released to {', '.join(targets)}.{note}")


@router.post("/{msg_id}/request-release", response_model=ReleaseRequestOut, status_code=201,
             responses=responses(404, 409),
             summary="Ask an administrator to release a held message you may not release yourself")
def request_release(msg_id: str, user: CurrentUser, config: ConfigDep, db: DbDep,
                    body: RequestReleaseIn | None = None) -> ReleaseRequestOut:
    body = body or RequestReleaseIn()
    return release_requests.request_release(config, db, user, msg_id, body.note, body.recipients)


@router.get("/requests", response_model=list[ReleaseRequestOut],
            summary="Release requests, newest first: administrators see those they decide, users their own")
def list_release_requests(user: CurrentUser, db: DbDep,
                          status: Literal["pending", "approved", "denied", "withdrawn"] | None = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[ReleaseRequestOut]:
    return release_requests.list_requests(db, user, status, limit)


@router.post("/requests/{request_id}/approve", response_model=ReleaseRequestOut,
             responses=responses(404, 409), summary="Approve a release request: the message is released")
def approve_request(request_id: int, manager: ManagerUser, config: ConfigDep, db: DbDep,
                    body: DecisionIn | None = None) -> ReleaseRequestOut:
    return release_requests.decide(config, db, manager, request_id, True, (body or DecisionIn()).note)


@router.post("/requests/{request_id}/deny", response_model=ReleaseRequestOut,
             responses=responses(404, 409), summary="Deny a release request: the message stays held")
def deny_request(request_id: int, manager: ManagerUser, config: ConfigDep, db: DbDep,
                 body: DecisionIn | None = None) -> ReleaseRequestOut:
    return release_requests.decide(config, db, manager, request_id, False, (body or DecisionIn()).note)


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
