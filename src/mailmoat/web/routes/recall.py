"""/api/v1/recall: take delivered mail back out of mailboxes (administrators only; domain
administrators within their domains).

Ask with message ids or with a search (sender, subject, URL, domain, attachment SHA-256,
time window); `POST /preview` answers which mailboxes would be touched before anything is;
`POST /jobs` creates the recall, which `mailmoat serve`'s worker then works; `GET
/jobs/{id}` shows its progress and `GET /jobs/{id}/items` the per-recipient outcome. Undo
restores everything a recall moved. With `[recall] two_person_approval`, a recall waits
until a second administrator approves it. Every action is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from mailmoat.recall import jobs
from mailmoat.recall.index import find_messages
from mailmoat.recall.settings import own_domains, recall_settings
from mailmoat.store.models import MessageRow
from mailmoat.web.auth import Principal
from mailmoat.web.deps import ConfigDep, DbDep, ManagerUser, PageUser
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.routes.pages import back, render

router = APIRouter(prefix="/api/v1/recall", tags=["recall"], responses=AUTH)

MAX_IDS = 1000
Short = Annotated[str, Field(max_length=1000)]


class RecallSearch(BaseModel):
    """Messages matching every given field (at least one besides the time window)."""

    sender: Short | None = Field(None, description="envelope or header sender, or Reply-To")
    subject: Short | None = Field(None, description="the whole subject (case and spacing "
                                  "do not matter)")
    url: Short | None = Field(None, description="a link in the message")
    domain: Short | None = Field(None, description="a domain linked to or sent from (its "
                                 "subdomains match too)")
    sha256: Short | None = Field(None, description="SHA-256 of an attachment")
    since: datetime | None = Field(None, description="received at or after (default: as far "
                                   "back as the message log goes)")
    until: datetime | None = Field(None, description="received before")


class RecallRequest(BaseModel):
    message_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=MAX_IDS, description="X-Mailmoat-IDs")
    search: RecallSearch | None = None
    follow_forwards: bool = Field(True, description="include internal forwards of them")


class CreateRecall(RecallRequest):
    reason: str = Field(..., min_length=1, max_length=2000, description="why (audit log)")


class PlannedOut(BaseModel):
    mailmoat_id: str
    recipient: str
    subject: str
    mail_from: str
    delivered_at: datetime | None
    via: str = Field(description="empty for a message asked for; else how this forward of "
                     "it was found")


class PreviewOut(BaseModel):
    messages: int
    mailboxes: int = Field(description="mailboxes in our domains the recall touches")
    copies: list[PlannedOut] = Field(description="the copies the recall moves")
    outside: list[PlannedOut] = Field(
        default_factory=list, description="copies delivered outside our domains ([smtp] "
        "relay_domains, internal_domains, the recall connectors' domains): left out, never "
        "attempted")


class JobOut(BaseModel):
    id: int
    kind: Literal["recall", "restore"]
    state: str = Field(description="awaiting_approval, pending, running, done or denied")
    reason: str
    requested_by: str
    source: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    decided_by: str
    decided_at: datetime | None
    decision_note: str
    undo_of: int | None
    domains: list[str]
    counts: dict[str, int] = Field(description="items by status: pending, working, moved, "
                                   "restored, not_found, failed, outside")
    total: int

    @classmethod
    def of(cls, v: jobs.JobView) -> JobOut:
        return cls(**{k: getattr(v, k) for k in cls.model_fields if k != "total"},
                   total=v.total)


class ItemOut(BaseModel):
    id: int
    mailmoat_id: str
    recipient: str
    connector: str
    status: str = Field(description="pending, working, moved, restored, not_found, failed, "
                        "or outside (another organisation's mailbox: left out, not attempted)")
    detail: str
    folders: list[str] = Field(description="where each moved copy came from")
    attempts: int
    via: str
    updated_at: datetime | None


class DecisionIn(BaseModel):
    note: str = Field("", max_length=2000)


class UndoIn(BaseModel):
    reason: str = Field("", max_length=2000)


def _domains(user: Principal) -> list[str]:
    """The domains a caller may recall in; [] for administrators (everywhere)."""
    if user.is_admin:
        return []
    doms = [d.lower() for d in user.domains]
    if not doms:
        raise HTTPException(status_code=403, detail="you administer no domain")
    return doms


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _search_ids(db: Any, search: RecallSearch, retention_days: int) -> list[str]:
    floor = datetime.now(UTC) - timedelta(days=retention_days)
    since = _utc(search.since) if search.since else floor
    criteria = [("email", search.sender), ("subject", search.subject), ("url", search.url),
                ("domain", search.domain), ("sha256", search.sha256)]
    given = [(k, v) for k, v in criteria if v and v.strip()]
    if not given:
        raise HTTPException(status_code=422, detail="a search needs a sender, subject, URL, "
                            "domain or attachment hash, not only a time window")
    found: set[str] | None = None
    with db.session() as s:
        for kind, value in given:
            ids = {m for m, _ in find_messages(s, kind, [value], since)}
            found = ids if found is None else found & ids
        if found and search.until is not None:
            until = _utc(search.until)
            found = set(s.scalars(select(MessageRow.id).where(
                MessageRow.id.in_(sorted(found)), MessageRow.received_at < until)))
    return sorted(found or ())


def _ids(config: Any, db: Any, req: RecallRequest) -> list[str]:
    ids = {i.strip() for i in req.message_ids if i.strip()}
    if req.search is not None:
        ids |= set(_search_ids(db, req.search, config.storage.log_retention_days))
    elif not ids:
        raise HTTPException(status_code=422, detail="give message_ids or a search")
    if len(ids) > MAX_IDS * 10:
        raise HTTPException(status_code=422, detail=f"the search matches {len(ids)} messages; "
                            "narrow it down")
    return sorted(ids)


def _job(db: Any, job_id: int, user: Principal) -> jobs.JobView:
    try:
        view = jobs.get_job(db, job_id)
    except jobs.JobError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    mine = _domains(user)
    if mine and not (view.domains and set(view.domains) <= set(mine)):
        raise HTTPException(status_code=404, detail=f"no recall job {job_id}")
    return view


@router.post("/preview", response_model=PreviewOut, responses=responses(403),
             summary="Which mailboxes a recall would touch (nothing is done)")
def preview(body: RecallRequest, user: ManagerUser, config: ConfigDep, db: DbDep) -> PreviewOut:
    settings = recall_settings(config)
    ids = _ids(config, db, body)
    planned = jobs.preview(db, ids, domains=_domains(user), own_domains=own_domains(config),
                           follow_forwards=body.follow_forwards and settings.follow_forwards,
                           forward_window=timedelta(days=settings.forward_window_days))
    copies = [c for c in planned if not c.outside]
    outside = [c for c in planned if c.outside]

    def out(cs: list[jobs.PlannedCopy]) -> list[PlannedOut]:
        return [PlannedOut(mailmoat_id=c.mailmoat_id, recipient=c.recipient,
                           subject=c.subject, mail_from=c.mail_from,
                           delivered_at=c.delivered_at, via=c.via) for c in cs[:5000]]

    return PreviewOut(messages=len({c.mailmoat_id for c in copies}),
                      mailboxes=len({c.recipient.lower() for c in copies}),
                      copies=out(copies), outside=out(outside))


@router.post("/jobs", response_model=JobOut, status_code=201, responses=responses(403),
             summary="Recall: move every delivered copy to the recall folder")
def create(body: CreateRecall, user: ManagerUser, config: ConfigDep, db: DbDep) -> JobOut:
    settings = recall_settings(config)
    ids = _ids(config, db, body)
    try:
        job_id = jobs.create_recall_job(
            db, ids, reason=body.reason, requested_by=user.email, source="api",
            approved=not settings.two_person_approval, domains=_domains(user),
            own_domains=own_domains(config),
            follow_forwards=body.follow_forwards and settings.follow_forwards,
            forward_window=timedelta(days=settings.forward_window_days),
            max_items=settings.max_items)
    except jobs.JobError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return JobOut.of(jobs.get_job(db, job_id))


@router.get("/jobs", response_model=list[JobOut], summary="Recall and restore jobs, newest first")
def list_(user: ManagerUser, db: DbDep,
          state: Annotated[Literal["awaiting_approval", "pending", "running", "done", "denied"]
                           | None, Query()] = None,
          limit: Annotated[int, Query(ge=1, le=500)] = 50,
          before_id: Annotated[int | None, Query(ge=1)] = None) -> list[JobOut]:
    return [JobOut.of(v) for v in jobs.list_jobs(db, state=state, limit=limit,
                                                  before_id=before_id, domains=_domains(user))]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=responses(403, 404),
            summary="One job and its progress")
def get(job_id: int, user: ManagerUser, db: DbDep) -> JobOut:
    return JobOut.of(_job(db, job_id, user))


@router.get("/jobs/{job_id}/items", response_model=list[ItemOut], responses=responses(403, 404),
            summary="Per-recipient outcome of a job")
def items(job_id: int, user: ManagerUser, db: DbDep,
          status: Annotated[Literal["pending", "working", "moved", "restored", "not_found",
                                    "failed", "outside"] | None, Query()] = None
          ) -> list[ItemOut]:
    _job(db, job_id, user)
    return [ItemOut(id=i.id, mailmoat_id=i.mailmoat_id, recipient=i.recipient,
                    connector=i.connector, status=i.status, detail=i.detail,
                    folders=[str(m.get("folder", "")) for m in i.moved], attempts=i.attempts,
                    via=i.via, updated_at=i.updated_at)
            for i in jobs.job_items(db, job_id, status=status)]


def _decide(fn: Any, job_id: int, user: Principal, db: Any, **kw: Any) -> JobOut:
    _job(db, job_id, user)
    try:
        fn(db, job_id, **kw)
    except jobs.JobError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return JobOut.of(jobs.get_job(db, job_id))


@router.post("/jobs/{job_id}/approve", response_model=JobOut,
             responses=responses(403, 404, 409), summary="Approve a recall awaiting approval")
def approve(job_id: int, user: ManagerUser, config: ConfigDep, db: DbDep,
            body: DecisionIn | None = None) -> JobOut:
    return _decide(jobs.approve, job_id, user, db, by=user.email,
                   note=(body or DecisionIn()).note,
                   two_person=recall_settings(config).two_person_approval)


@router.post("/jobs/{job_id}/deny", response_model=JobOut, responses=responses(403, 404, 409),
             summary="Deny a recall awaiting approval (nothing is touched)")
def deny(job_id: int, user: ManagerUser, db: DbDep, body: DecisionIn | None = None) -> JobOut:
    return _decide(jobs.deny, job_id, user, db, by=user.email, note=(body or DecisionIn()).note)


@router.post("/jobs/{job_id}/retry", response_model=JobOut, responses=responses(403, 404, 409),
             summary="Try a finished job's failed mailboxes again")
def retry(job_id: int, user: ManagerUser, db: DbDep) -> JobOut:
    return _decide(jobs.retry_failed, job_id, user, db, by=user.email)


@router.post("/jobs/{job_id}/undo", response_model=JobOut, status_code=201,
             responses=responses(403, 404, 409),
             summary="Undo a recall: a restore job moving back everything it moved")
def undo(job_id: int, user: ManagerUser, db: DbDep, body: UndoIn | None = None) -> JobOut:
    _job(db, job_id, user)
    try:
        new = jobs.undo(db, job_id, requested_by=user.email, reason=(body or UndoIn()).reason,
                        source="api")
    except jobs.JobError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return JobOut.of(jobs.get_job(db, new))


# -- console pages ---------------------------------------------------------------------------
# Server-rendered like the rest of the console (web/routes/pages.py): forms post with the
# CSRF token and redirect; a running job's page refreshes itself (no JavaScript).

pages = APIRouter(include_in_schema=False)


def _page_manager(user: Principal) -> None:
    if user.role not in ("admin", "domain_admin"):
        raise HTTPException(status_code=403, detail="administrators only")


@pages.get("/recall/new", response_class=HTMLResponse)
def new_page(request: Request, user: PageUser, config: ConfigDep, db: DbDep,
             ids: Annotated[str, Query(max_length=20000)] = "") -> HTMLResponse:
    _page_manager(user)
    settings = recall_settings(config)
    wanted = sorted({i.strip() for i in ids.split(",") if i.strip()})[:MAX_IDS]
    planned = jobs.preview(db, wanted, domains=_domains(user), own_domains=own_domains(config),
                           follow_forwards=settings.follow_forwards,
                           forward_window=timedelta(days=settings.forward_window_days))
    copies = [c for c in planned if not c.outside]
    return render(request, "recall_new.html", user=user, ids=",".join(wanted), copies=copies,
                  outside=[c for c in planned if c.outside],
                  mailboxes=len({c.recipient.lower() for c in copies}),
                  two_person=settings.two_person_approval)


@pages.post("/recall/new")
def new_submit(request: Request, user: PageUser, config: ConfigDep, db: DbDep,
               ids: Annotated[str, Form(max_length=20000)] = "",
               reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    _page_manager(user)
    wanted = sorted({i.strip() for i in ids.split(",") if i.strip()})[:MAX_IDS]
    if not reason.strip():
        return back(f"/recall/new?ids={quote(','.join(wanted))}", "Say why (the reason is "
                    "kept in the audit log).")
    settings = recall_settings(config)
    try:
        job_id = jobs.create_recall_job(
            db, wanted, reason=reason.strip(), requested_by=user.email, source="console",
            approved=not settings.two_person_approval, domains=_domains(user),
            own_domains=own_domains(config), follow_forwards=settings.follow_forwards,
            forward_window=timedelta(days=settings.forward_window_days),
            max_items=settings.max_items)
    except jobs.JobError as exc:
        return back(f"/recall/new?ids={quote(','.join(wanted))}", str(exc))
    state = "waits for a second administrator's approval" if settings.two_person_approval \
        else "is queued"
    return back(f"/recall/jobs/{job_id}", f"Recall {job_id} {state}.")


@pages.get("/recall/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, user: PageUser, db: DbDep,
              before_id: Annotated[int | None, Query(ge=1)] = None) -> HTMLResponse:
    _page_manager(user)
    rows = jobs.list_jobs(db, limit=100, before_id=before_id, domains=_domains(user))
    nxt = f"/recall/jobs?before_id={rows[-1].id}" if len(rows) == 100 else None
    return render(request, "recall_jobs.html", user=user, rows=rows, next_url=nxt)


@pages.get("/recall/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: int, request: Request, user: PageUser, db: DbDep) -> HTMLResponse:
    _page_manager(user)
    view = _job(db, job_id, user)
    return render(request, "recall_job.html", user=user, job=view,
                  items=jobs.job_items(db, job_id))


@pages.post("/recall/jobs/{job_id}/act")
def job_act(job_id: int, request: Request, user: PageUser, config: ConfigDep, db: DbDep,
            op: Annotated[str, Form(max_length=16)] = "",
            note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    _page_manager(user)
    _job(db, job_id, user)
    here = f"/recall/jobs/{job_id}"
    try:
        if op == "approve":
            jobs.approve(db, job_id, by=user.email, note=note,
                         two_person=recall_settings(config).two_person_approval)
            return back(here, "Approved: the recall is queued.")
        if op == "deny":
            jobs.deny(db, job_id, by=user.email, note=note)
            return back(here, "Denied: nothing was touched.")
        if op == "retry":
            n = jobs.retry_failed(db, job_id, by=user.email)
            return back(here, f"{n} failed mailbox(es) queued again.")
        if op == "undo":
            new = jobs.undo(db, job_id, requested_by=user.email, reason=note, source="console")
            return back(f"/recall/jobs/{new}", f"Undo of recall {job_id} queued as job {new}.")
    except jobs.JobError as exc:
        return back(here, str(exc))
    raise HTTPException(status_code=422, detail=f"unknown operation {op!r}")
