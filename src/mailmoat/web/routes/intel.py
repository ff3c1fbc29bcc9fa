"""/api/v1/intel: threat-intelligence feeds and their last poll, indicators, retro-hunts
(what each matched and whether it was recalled automatically or queued), the approval
queue, and polling a feed now. Administrators only; no secret is ever returned.

The console's pages (`pages`: /intel/feeds, /intel/indicators, /intel/hunts, /intel/queue)
show the same, from the same service functions (intel/service.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from mailmoat.intel import service
from mailmoat.intel.settings import intel_settings
from mailmoat.recall.index import OBSERVABLE_KINDS
from mailmoat.store.quarantine import audit
from mailmoat.web.deps import AdminUser, ConfigDep, DbDep, PageAdmin
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.routes.pages import back, render

router = APIRouter(prefix="/api/v1/intel", tags=["intel"], responses=AUTH)

Kind = Literal["url", "domain", "ip", "email", "sha256", "subject", "message_id"]
FeedName = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class FeedOut(BaseModel):
    name: str
    kind: str
    configured: bool = Field(description="in [[intel.feeds]] now (else only its indicators "
                             "remain in the database)")
    enabled: bool
    url: str = Field(description="the feed's URL or path (credentials are never shown)")
    collection: str
    poll_interval: float | None
    auto_recall_confidence: int | None
    lookback_days: float | None
    last_status: str = Field(description="ok | error | never")
    last_poll_at: str | None
    last_success_at: str | None
    last_error: str
    last_added: int
    last_changed: int
    last_withdrawn: int
    last_skipped: int
    skipped: list[str] = Field(description="the first items the last poll skipped, with why")
    live_indicators: int


class FeedsOut(BaseModel):
    items: list[FeedOut]


class IndicatorOut(BaseModel):
    id: int
    feed: str
    source_id: str = Field(description="STIX id, MISP attribute uuid, or the list entry")
    kind: str
    value: str
    also: list[list[str]] = Field(description="further (kind, value) facts the same message "
                                  "must have")
    confidence: int
    valid_from: str | None
    valid_until: str | None
    revoked: bool
    live: bool
    label: str
    first_seen: str | None
    updated_at: str | None


class IndicatorsOut(BaseModel):
    items: list[IndicatorOut]


class HuntRecipient(BaseModel):
    id: str = Field(description="the message's X-Mailmoat-ID")
    recipient: str


class HuntOut(BaseModel):
    id: int
    at: str | None
    feed: str
    indicator_id: int | None
    source_id: str
    kind: str
    value: str
    confidence: int
    mode: str = Field(description="auto (recalled without approval) | queued (waits for "
                      "approval) | none (nothing left to hand over)")
    status: str = Field(description="pending | handed | failed | nothing")
    message_ids: list[str]
    recipients: list[HuntRecipient]
    job_id: str = Field(description="recall's job id once handed")
    error: str
    origin: str
    job_state: str = Field("", description="the recall job's state (awaiting_approval, "
                           "pending, running, done, denied); empty before it is handed")
    job_counts: dict[str, int] = Field(default_factory=dict, description="the recall job's "
                                       "mailbox copies by status")


class HuntsOut(BaseModel):
    items: list[HuntOut]


class PollOut(BaseModel):
    feed: str
    ok: bool
    error: str
    added: int
    changed: int
    withdrawn: int
    skipped: int
    hunted: int
    hunts: list[int]
    seconds: float


@router.get("/feeds", response_model=FeedsOut, summary="Feeds and their last poll")
def feeds(admin: AdminUser, config: ConfigDep, db: DbDep) -> FeedsOut:
    return FeedsOut(items=[FeedOut.model_validate(f) for f in service.feed_status(config, db)])


@router.post("/feeds/{name}/poll", response_model=PollOut, responses=responses(404),
             summary="Poll a configured feed now, store and hunt its new indicators")
def poll(name: FeedName, admin: AdminUser, config: ConfigDep, db: DbDep) -> PollOut:
    from mailmoat.intel.poller import poll_feed  # the feed readers load when first used

    feed = next((f for f in intel_settings(config).feeds if f.name == name), None)
    if feed is None:
        raise HTTPException(status_code=404, detail=f"no feed named {name}")
    return PollOut.model_validate(poll_feed(config, db, feed).as_dict())


@router.get("/indicators", response_model=IndicatorsOut,
            summary="Indicators, newest first (live ones unless all=true)")
def indicators(admin: AdminUser, db: DbDep,
               feed: Annotated[str | None, Query(max_length=64)] = None,
               kind: Kind | None = None,
               value: Annotated[str | None, Query(max_length=1000)] = None,
               all: bool = False,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> IndicatorsOut:
    items = service.indicator_page(db, feed=feed, kind=kind, value=value, live_only=not all,
                                   limit=limit)
    return IndicatorsOut(items=[IndicatorOut.model_validate(i) for i in items])


@router.get("/hunts", response_model=HuntsOut,
            summary="Retro-hunts that matched mail, newest first: indicator, feed, messages")
def hunts(admin: AdminUser, db: DbDep,
          mode: Literal["auto", "queued", "none"] | None = None,
          feed: Annotated[str | None, Query(max_length=64)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> HuntsOut:
    items = service.attach_jobs(db, service.hunt_page(db, mode=mode, feed=feed, limit=limit))
    return HuntsOut(items=[HuntOut.model_validate(h) for h in items])


@router.get("/hunts/{hunt_id}", response_model=HuntOut, responses=responses(404),
            summary="One retro-hunt: why its messages were recalled or queued")
def hunt(hunt_id: Annotated[int, Path(ge=1, le=2**62)], admin: AdminUser,
         db: DbDep) -> HuntOut:
    found = service.attach_jobs(db, service.hunt_page(db, limit=1, hunt_id=hunt_id))
    if not found:
        raise HTTPException(status_code=404, detail=f"no hunt {hunt_id}")
    return HuntOut.model_validate(found[0])


@router.get("/queue", response_model=HuntsOut,
            summary="The approval queue: hunts below their feed's auto_recall_confidence")
def queue(admin: AdminUser, db: DbDep,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> HuntsOut:
    items = service.attach_jobs(db, service.hunt_page(db, mode="queued", limit=limit))
    return HuntsOut(items=[HuntOut.model_validate(h) for h in items])


# -- console pages ---------------------------------------------------------------------------
# Server-rendered like the rest of the console (web/routes/pages.py): forms post with the
# session's CSRF token and redirect with a flash line; no JavaScript.

pages = APIRouter(include_in_schema=False)


def _poll_line(name: str, r: dict[str, object]) -> str:
    if not r["ok"]:
        return f"Poll of {name} failed: {r['error']}"
    hunts = r["hunts"] if isinstance(r["hunts"], list) else []
    return (f"Polled {name}: {r['added']} new, {r['changed']} changed, {r['withdrawn']} "
            f"withdrawn, {r['skipped']} skipped; {len(hunts)} hunt(s) matched delivered mail.")


@pages.get("/intel/feeds", response_class=HTMLResponse)
def feeds_page(request: Request, user: PageAdmin, config: ConfigDep,
               db: DbDep) -> HTMLResponse:
    return render(request, "intel_feeds.html", user=user, tab="feeds",
                  feeds=service.feed_status(config, db))


@pages.post("/intel/feeds/{name}/poll")
def poll_page(name: FeedName, user: PageAdmin, config: ConfigDep, db: DbDep) -> Response:
    from mailmoat.intel.poller import poll_feed  # the feed readers load when first used

    feed = next((f for f in intel_settings(config).feeds if f.name == name), None)
    if feed is None:
        raise HTTPException(status_code=404, detail=f"no feed named {name}")
    report = poll_feed(config, db, feed).as_dict()
    audit(db, user.email, "intel.poll", f"intel-feed:{name}", ok=report["ok"],
          added=report["added"], hunts=report["hunts"], error=report["error"])
    return back("/intel/feeds", _poll_line(name, report))


@pages.get("/intel/indicators", response_class=HTMLResponse)
def indicators_page(request: Request, user: PageAdmin, config: ConfigDep, db: DbDep,
                    feed: Annotated[str, Query(max_length=64)] = "",
                    kind: Annotated[str, Query(max_length=16)] = "",
                    q: Annotated[str, Query(max_length=1000)] = "",
                    all: Annotated[str, Query(max_length=8)] = "") -> HTMLResponse:
    error = ""
    rows: list[dict[str, object]] = []
    if kind and kind not in OBSERVABLE_KINDS:
        error = f"kind must be one of {', '.join(OBSERVABLE_KINDS)}"
    else:
        rows = service.indicator_page(db, feed=feed or None, kind=kind or None,
                                      contains=q or None, live_only=not all, limit=500)
    names = [f["name"] for f in service.feed_status(config, db)]
    return render(request, "intel_indicators.html", user=user, tab="indicators", rows=rows,
                  feeds=names, kinds=OBSERVABLE_KINDS, feed=feed, kind=kind, q=q,
                  all=bool(all), error=error)


@pages.get("/intel/hunts", response_class=HTMLResponse)
def hunts_page(request: Request, user: PageAdmin, db: DbDep,
               mode: Annotated[Literal["auto", "queued", "none"] | None, Query()] = None,
               feed: Annotated[str, Query(max_length=64)] = "") -> HTMLResponse:
    rows = service.attach_jobs(db, service.hunt_page(db, mode=mode, feed=feed or None,
                                                     limit=200))
    return render(request, "intel_hunts.html", user=user, tab="hunts", rows=rows,
                  mode=mode or "", feed=feed)


@pages.get("/intel/hunts/{hunt_id}", response_class=HTMLResponse)
def hunt_page(hunt_id: Annotated[int, Path(ge=1, le=2**62)], request: Request,
              user: PageAdmin, db: DbDep) -> HTMLResponse:
    h = service.hunt_detail(db, hunt_id)
    if h is None:
        raise HTTPException(status_code=404, detail=f"no hunt {hunt_id}")
    return render(request, "intel_hunt.html", user=user, tab="hunts", h=h)


@pages.get("/intel/queue", response_class=HTMLResponse)
def queue_page(request: Request, user: PageAdmin, db: DbDep) -> HTMLResponse:
    rows = service.attach_jobs(db, service.hunt_page(db, mode="queued", limit=500))
    waiting = [h for h in rows if h["job_state"] == "awaiting_approval"
               or h["status"] in ("pending", "failed")]
    decided = [h for h in rows if h not in waiting][:50]
    return render(request, "intel_queue.html", user=user, tab="queue", waiting=waiting,
                  decided=decided)


@pages.post("/intel/queue/{hunt_id}/act")
def queue_act(hunt_id: Annotated[int, Path(ge=1, le=2**62)], user: PageAdmin,
              config: ConfigDep, db: DbDep,
              op: Annotated[str, Form(max_length=16)] = "",
              note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    if op not in ("approve", "deny"):
        raise HTTPException(status_code=422, detail=f"unknown operation {op!r}")
    try:
        h = service.decide_queued(config, db, hunt_id, op, by=user.email, note=note.strip())
    except service.QueueError as exc:
        return back("/intel/queue", str(exc))
    what = ("Approved: the recall of hunt {id} is queued (job {job})." if op == "approve"
            else "Denied: hunt {id}'s recall touches nothing (job {job}).")
    return back("/intel/queue", what.format(id=hunt_id, job=h["job_id"]))
