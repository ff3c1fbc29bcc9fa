"""/api/v1/internal: accounts the internal guard restricted, and incidents (administrators).

Suspend, release and closing an incident are audited (`internal.*` in the audit log) and
reach running gateways within `[internal] sync_seconds` (at once with Redis).
`GET /incidents/{id}/message-ids` is the stable hand-over to recall: the IDs of what the
flagged account sent in the window that reached a mailbox.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from mailmoat.errors import StoreError
from mailmoat.internal import accounts
from mailmoat.web.deps import AdminUser, ConfigDep, DbDep
from mailmoat.web.errors import AUTH, responses

router = APIRouter(prefix="/api/v1/internal", tags=["internal"], responses=AUTH)
IncidentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the incident's number")]


def _iso(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


class RestrictionOut(BaseModel):
    account: str
    kind: str = Field(description="hold | throttle | suspend")
    state: str = Field(description="in words: `suspended until released`, `released by …`")
    active: bool
    reply: str = Field(description="4xx or 5xx: how a suspended account's mail is answered")
    since: datetime | None
    until: datetime | None = Field(description="null: until released")
    by: str = Field(description="`mailmoat` when the gateway flagged it, else who")
    reason: str
    incident_id: int | None
    released_at: datetime | None
    released_by: str
    grace_until: datetime | None = Field(description="after a release, flags nothing until")


def _restriction(r: accounts.Restriction) -> RestrictionOut:
    now = datetime.now(UTC).timestamp()
    return RestrictionOut(account=r.account, kind=r.kind, state=r.describe(),
                          active=r.active(now), reply=r.reply, since=_iso(r.since),
                          until=_iso(r.until), by=r.by, reason=r.reason,
                          incident_id=r.incident_id, released_at=_iso(r.released_at),
                          released_by=r.released_by, grace_until=_iso(r.grace_until))


class SignalOut(BaseModel):
    name: str
    score: float
    reason: str


class IncidentMessageOut(BaseModel):
    id: str = Field(description="the X-Mailmoat-ID")
    message_id: str = Field(description="the Message-ID header")
    received_at: datetime | None
    subject: str
    action: str = Field(description="the verdict: accept, tag, quarantine, reject")
    status: str = Field(description="delivered | held | rejected | queued | failed | released "
                        "| mixed")
    recipients: dict[str, str] = Field(description="recipient -> delivery status")


class IncidentOut(BaseModel):
    id: int
    account: str
    status: str = Field(description="open | closed")
    opened_at: datetime | None
    window_start: datetime | None = Field(description="its messages are listed from here")
    last_at: datetime | None
    action: str
    score: float
    signals: list[SignalOut]
    flagged_messages: int
    refused: int
    deferred: int
    closed_at: datetime | None
    closed_by: str
    note: str
    messages: list[IncidentMessageOut] | None = None


def _incident(i: accounts.Incident,
              msgs: list[accounts.IncidentMessage] | None = None) -> IncidentOut:
    return IncidentOut(
        id=i.id, account=i.account, status=i.status, opened_at=_iso(i.opened_at),
        window_start=_iso(i.window_start), last_at=_iso(i.last_at), action=i.action,
        score=i.score, signals=[SignalOut(**s) for s in i.signals],
        flagged_messages=i.flagged_messages, refused=i.refused, deferred=i.deferred,
        closed_at=_iso(i.closed_at), closed_by=i.closed_by, note=i.note,
        messages=None if msgs is None else [
            IncidentMessageOut(**{**asdict(m), "received_at": _iso(m.received_at)})
            for m in msgs])


class AccountOut(BaseModel):
    account: str
    restriction: RestrictionOut | None
    baseline: dict[str, Any] | None = Field(description="what was learned: volumes, busiest "
                                            "hours, networks, mail programs")
    incidents: list[IncidentOut]


class SuspendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["suspend", "hold", "throttle"] = "suspend"
    minutes: float = Field(0, ge=0, le=accounts.MAX_MINUTES,
                           description="0: until released; at most ten years")
    reply: Literal["4xx", "5xx"] = "4xx"
    reason: str = Field("", max_length=2000)


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_hours: float | None = Field(None, ge=0, le=accounts.MAX_MINUTES / 60,
                                      description="hours in which its mail flags nothing; "
                                      "default [internal] release_grace_hours")


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=4000)


class MessageIdsOut(BaseModel):
    incident: int
    statuses: list[str]
    message_ids: list[str] = Field(description="X-Mailmoat-IDs, oldest first")


class VolumeDay(BaseModel):
    day: str
    internal: int
    outbound: int
    stopped: int = Field(description="of them quarantined or rejected")


class SenderCount(BaseModel):
    account: str
    messages: int
    stopped: int


class IncidentDay(BaseModel):
    day: str
    opened: int
    refused: int
    deferred: int


class StatsOut(BaseModel):
    since: str
    days: int
    volume: list[VolumeDay] = Field(description="internal and outbound messages per day (UTC)")
    top_senders: list[SenderCount]
    incidents: list[IncidentDay] = Field(description="incidents opened per day, and the mail "
                                         "their accounts were refused or deferred")
    open_incidents: int
    restricted: dict[str, int] = Field(description="accounts suspended, held, throttled now")


@router.get("/stats", response_model=StatsOut,
            summary="Our own senders' mail: volume, what was stopped, incidents, top senders")
def stats(admin: AdminUser, db: DbDep,
          days: Annotated[int, Query(ge=1, le=366)] = 30) -> StatsOut:
    from mailmoat.internal.stats import internal_stats

    return StatsOut(**internal_stats(db, days))


@router.get("/accounts", response_model=list[RestrictionOut],
            summary="Accounts held, throttled or suspended now (all=true: ever)")
def list_accounts(admin: AdminUser, db: DbDep, all: bool = False) -> list[RestrictionOut]:
    return [_restriction(r) for r in accounts.list_restrictions(db, include_released=all)]


@router.get("/accounts/{account}", response_model=AccountOut,
            summary="An account's restriction, learned baseline and incidents")
def show_account(account: str, admin: AdminUser, db: DbDep) -> AccountOut:
    view = accounts.account_view(db, account)
    r = view["restriction"]
    return AccountOut(account=view["account"], restriction=_restriction(r) if r else None,
                      baseline=view["baseline"],
                      incidents=[_incident(i) for i in view["incidents"]])


@router.post("/accounts/{account}/suspend", response_model=RestrictionOut,
             summary="Suspend (or hold, or throttle) an account")
def suspend(account: str, body: SuspendIn, admin: AdminUser, config: ConfigDep,
            db: DbDep, request: Request) -> RestrictionOut:
    try:
        r = accounts.restrict_account(config, db, account, admin.email, kind=body.kind,
                                      minutes=body.minutes, reason=body.reason,
                                      reply=body.reply)
    except StoreError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    tell_gateway(request, r)
    return _restriction(r)


def tell_gateway(request: Request, r: accounts.Restriction) -> None:
    """The gateway in this process applies a suspension or release at once (other nodes
    read it from Redis at once, or from the database within [internal] sync_seconds)."""
    guard = getattr(request.app.state, "internal_guard", None)
    if guard is not None:
        guard.restriction_changed(r)


@router.post("/accounts/{account}/release", response_model=RestrictionOut,
             responses=responses(404, 409),
             summary="Let an account send again (its queued mail then flows)")
def release(account: str, admin: AdminUser, config: ConfigDep, db: DbDep, request: Request,
            body: ReleaseIn | None = None) -> RestrictionOut:
    if accounts.get_restriction(db, account) is None:
        raise HTTPException(status_code=404, detail=f"{account} is not restricted")
    try:
        r = accounts.release_account(config, db, account, admin.email,
                                     grace_hours=body.grace_hours if body else None)
    except StoreError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    tell_gateway(request, r)
    return _restriction(r)


@router.get("/incidents", response_model=list[IncidentOut], summary="Incidents, newest first")
def list_incidents(admin: AdminUser, db: DbDep,
                   status: Literal["open", "closed"] | None = None, account: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   before_id: int | None = None) -> list[IncidentOut]:
    return [_incident(i) for i in accounts.list_incidents(
        db, account=account, status=status, limit=limit, before_id=before_id)]


@router.get("/incidents/{incident_id}", response_model=IncidentOut, responses=responses(404),
            summary="An incident with every message the account sent in its window")
def show_incident(incident_id: IncidentId, admin: AdminUser, db: DbDep) -> IncidentOut:
    try:
        return _incident(accounts.get_incident(db, incident_id),
                         accounts.incident_messages(db, incident_id))
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.get("/incidents/{incident_id}/message-ids", response_model=MessageIdsOut,
            responses=responses(404),
            summary="IDs of the incident's messages in a delivery status (for recall)")
def message_ids(incident_id: IncidentId, admin: AdminUser, db: DbDep,
                status: Annotated[list[str] | None, Query()] = None) -> MessageIdsOut:
    statuses = tuple(status or ["delivered"])
    try:
        ids = accounts.incident_message_ids(db, incident_id, statuses)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return MessageIdsOut(incident=incident_id, statuses=list(statuses), message_ids=ids)


@router.post("/incidents/{incident_id}/close", response_model=IncidentOut,
             responses=responses(404), summary="Close an incident once it is dealt with")
def close(incident_id: IncidentId, admin: AdminUser, db: DbDep,
          body: CloseIn | None = None) -> IncidentOut:
    try:
        return _incident(accounts.close_incident(db, incident_id, admin.email,
                                                 body.note if body else ""))
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
