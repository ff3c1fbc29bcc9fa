"""The console's quarantine: the searchable list with actions on a selection, release
requests (made by users, decided by administrators), the safe preview, and each message's
actions. Deleting asks for confirmation on a page of its own (no JavaScript needed); what
an end user may release depends on the category (web.release_requests)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailmoat.errors import StoreError
from mailmoat.store import queries
from mailmoat.web import release_requests, services
from mailmoat.web.auth import Principal
from mailmoat.web.deps import ConfigDep, DbDep, PageUser, scope_of
from mailmoat.web.held import HeldFilters, list_held
from mailmoat.web.preview import PREVIEW_CSP, build_preview, defang, iframe_document
from mailmoat.web.routes.pages import _safe_next, back, render
from mailmoat.web.schemas import CATEGORIES, MessageDetail, MessageSummary, QuarantineInfo, SymbolOut

router = APIRouter(include_in_schema=False)


@router.get("/quarantine", response_class=HTMLResponse)
def quarantine_page(request: Request, user: PageUser, db: DbDep, cursor: str | None = None) -> HTMLResponse:
    f = HeldFilters.from_query(request.query_params)
    error = ""
    if f.category and f.category not in CATEGORIES:
        f.category = ""
    try:
        with db.session() as s:
            rows, nxt = list_held(s, scope_of(user), f, 50, cursor)
    except StoreError as exc:
        rows, nxt, error = [], None, str(exc)
    # The page shows "held for" per message: only the recipients this caller may see.
    items = [(MessageSummary.of(m), QuarantineInfo.of(q, scope_of(user)),
              release_requests.may_release(user, m.category)) for q, m in rows]
    kept = {k: v for k, v in f.as_dict().items() if v}
    requests = release_requests.list_requests(db, user, None, 100)
    return render(request, "quarantine.html", user=user, items=items, f=f, error=error,
                  categories=CATEGORIES, filtered=f.any(),
                  pending=[r for r in requests if r.status == "pending"],
                  decided=[r for r in requests if r.status != "pending"][:20],
                  manager=release_requests.is_manager(user),
                  here="/quarantine" + ("?" + urlencode(kept) if kept else ""),
                  next_url="/quarantine?" + urlencode({**kept, "cursor": nxt}) if nxt else None)


def _verdict(db: DbDep, user: Principal, msg_id: str) -> tuple[MessageDetail, list[SymbolOut]]:
    m = services.message_detail(db, scope_of(user), msg_id)
    return m, [s for s in m.symbols if s.score > 0][:8]


@router.get("/quarantine/{msg_id}/preview", response_class=HTMLResponse)
def preview_page(msg_id: str, request: Request, user: PageUser, config: ConfigDep, db: DbDep,
                 view: str = "text") -> HTMLResponse:
    scope = scope_of(user)
    raw = services.raw_bytes(config, db, scope, msg_id)
    p = build_preview(raw)
    m, reasons = _verdict(db, user, msg_id)
    srcdoc = iframe_document(p.html_clean) if view == "html" and p.html_clean else ""
    held = scope.filter_recipients(services.held_entry(db, scope, msg_id)[1])
    resp = render(request, "preview.html", user=user, p=p, m=m, reasons=reasons, msg_id=msg_id,
                  view=view, srcdoc=srcdoc, held=held, defang=defang,
                  can_release=release_requests.may_release(user, m.category))
    resp.headers["Content-Security-Policy"] = PREVIEW_CSP
    return resp


def _confirm_delete(request: Request, user: Principal, db: DbDep, ids: list[str], back_to: str,
                    action: str) -> HTMLResponse:
    scope = scope_of(user)
    items = []
    with db.session() as s:
        for i in ids:
            m = queries.message_visible(s, scope, i)
            if m is not None:
                items.append(f"{m.subject or '(no subject)'} — from {m.mail_from or '<>'} "
                             f"({m.category}, score {m.score:g})")
    n = len(ids)
    what = "this held message" if n == 1 else f"these {n} held messages"
    fields = [("op", "delete"), ("back_to", back_to)] + [("ids", i) for i in ids]
    return render(request, "confirm.html", user=user, title=f"Delete {what}?",
                  question=f"Delete {what}? Nobody can release {'it' if n == 1 else 'them'} "
                           "afterwards; this cannot be undone.", items=items, action=action,
                  fields=fields, confirm_label=f"Delete {n} message{'s' if n != 1 else ''}",
                  cancel=back_to)


@router.post("/quarantine/{msg_id}/act")
async def quarantine_act(msg_id: str, request: Request, user: PageUser, config: ConfigDep, db: DbDep,
                         op: Annotated[str, Form()] = "", back_to: Annotated[str, Form()] = "/quarantine",
                         confirm: Annotated[str, Form()] = "", note: Annotated[str, Form()] = "") -> Response:
    scope = scope_of(user)
    target = _safe_next(back_to)
    try:
        if op in ("release", "release_ham"):
            # Refused before anything is reported: a phish a user may not release teaches nothing.
            await run_in_threadpool(release_requests.check_release, db, user, msg_id)
            extra = ""
            if op == "release_ham":
                extra = " " + (await services.report(config, db, user.email, scope, msg_id, "ham")).message
            # The spool write (fsync) and the database: on the threadpool, not the event loop.
            got = await run_in_threadpool(services.release, config, db, user.email, scope, msg_id, None)
            return back(target, f"Released {msg_id} to {', '.join(got)}.{extra}")
        if op == "request":
            r = await run_in_threadpool(release_requests.request_release, config, db, user, msg_id, note)
            return back(target, f"Asked an administrator to release {msg_id} (request {r.id}); "
                                "you will see the answer on the Quarantine page.")
        if op == "delete":
            if confirm != "yes":
                await run_in_threadpool(services.held_entry, db, scope, msg_id)
                return await run_in_threadpool(_confirm_delete, request, user, db, [msg_id], target,
                                               f"/quarantine/{msg_id}/act")
            await run_in_threadpool(services.delete, config, db, user.email, scope, msg_id)
            return back(target if not target.startswith(f"/messages/{msg_id}") and "/preview" not in target
                        else "/quarantine", f"Deleted {msg_id}.")
        if op == "report_spam":
            return back(target, (await services.report(config, db, user.email, scope, msg_id, "spam")).message)
        if op == "unlearn":
            # Takes back lessons whoever taught them, so administrators only.
            if not user.is_admin:
                raise HTTPException(status_code=403, detail="only administrators may take lessons back")
            res = await run_in_threadpool(services.unlearn, config, db, user.email, scope, msg_id)
            return back(target, res.message)
    except HTTPException as exc:
        return back(target, f"Could not {op.replace('_', ' ')} {msg_id}: {exc.detail}")
    raise HTTPException(status_code=422, detail=f"unknown operation {op!r}")


def _bulk(config: ConfigDep, db: DbDep, user: Principal, op: str, ids: list[str]) -> str:
    """Apply `op` to each selected message; one sentence on what happened to all of them."""
    scope = scope_of(user)
    done: list[str] = []
    need_request: list[str] = []
    failed: list[str] = []
    for i in ids:
        try:
            if op == "release":
                try:
                    release_requests.check_release(db, user, i)
                except HTTPException as exc:
                    if exc.status_code != 403:
                        raise
                    need_request.append(i)
                    continue
                services.release(config, db, user.email, scope, i, None)
            elif op == "request":
                release_requests.request_release(config, db, user, i)
            else:
                services.delete(config, db, user.email, scope, i)
            done.append(i)
        except HTTPException as exc:
            failed.append(f"{i} ({exc.detail})")
    verb = {"release": "Released", "request": "Asked an administrator to release", "delete": "Deleted"}[op]
    parts = [f"{verb} {len(done)} message{'s' if len(done) != 1 else ''}."]
    if need_request:
        parts.append(f"{len(need_request)} may be released only by an administrator "
                     f"({', '.join(need_request)}): select them and choose Request release.")
    if failed:
        parts.append(f"Not done: {'; '.join(failed)}.")
    return " ".join(parts)


@router.post("/quarantine/bulk")
async def quarantine_bulk(request: Request, user: PageUser, config: ConfigDep, db: DbDep) -> Response:
    form = await request.form()
    op = str(form.get("op", ""))
    ids = list(dict.fromkeys(str(v) for v in form.getlist("ids") if str(v).strip()))[:500]
    target = _safe_next(str(form.get("back_to", "/quarantine")))
    if op not in ("release", "request", "delete"):
        raise HTTPException(status_code=422, detail=f"unknown operation {op!r}")
    if not ids:
        return back(target, "Select at least one message first (the boxes on the left).")
    if op == "delete" and form.get("confirm") != "yes":
        return await run_in_threadpool(_confirm_delete, request, user, db, ids, target, "/quarantine/bulk")
    return back(target, await run_in_threadpool(_bulk, config, db, user, op, ids))


@router.post("/quarantine/requests/{request_id}/decide")
def decide_request(request_id: int, request: Request, user: PageUser, config: ConfigDep, db: DbDep,
                   op: Annotated[str, Form()] = "", note: Annotated[str, Form()] = "") -> Response:
    if op not in ("approve", "deny"):
        raise HTTPException(status_code=422, detail="choose approve or deny")
    if not release_requests.is_manager(user):
        raise HTTPException(status_code=403, detail="administrators only")
    try:
        r = release_requests.decide(config, db, user, request_id, op == "approve", note)
    except HTTPException as exc:
        return back("/quarantine", f"Could not {op} request {request_id}: {exc.detail}")
    if op == "approve":
        return back("/quarantine", f"Approved request {r.id}: released {r.message_id} to "
                                   f"{', '.join(r.recipients)}; {r.requested_by} is told.")
    return back("/quarantine", f"Denied request {r.id}: {r.message_id} stays held; {r.requested_by} is told.")
