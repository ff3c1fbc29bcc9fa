"""/api/v1/internal: accounts the internal guard restricted, and incidents (administrators).

Suspend, release and closing an incident are audited (`internal.*` in the audit log) and
reach running gateways within `[internal] sync_seconds` (at once with Redis).
`GET /incidents/{id}/message-ids` is the stable hand-over to recall: the IDs of what the
flagged account sent in the window that reached a mailbox.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from mailmoat.config import Config
from mailmoat.errors import ConfigError, PolicyError, StoreError
from mailmoat.internal import accounts
from mailmoat.store.db import Database
from mailmoat.store.quarantine import audit
from mailmoat.web import policy_store
from mailmoat.web.auth import Principal
from mailmoat.web.deps import AdminUser, ConfigDep, DbDep, PageAdmin
from mailmoat.web.errors import AUTH, responses

log = logging.getLogger(__name__)
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


class GroupCount(BaseModel):
    group: str
    accounts: int = Field(description="of its accounts, those that sent mail")
    messages: int
    stopped: int


class StatsOut(BaseModel):
    since: str
    days: int
    volume: list[VolumeDay] = Field(description="internal and outbound messages per day (UTC)")
    top_senders: list[SenderCount]
    incidents: list[IncidentDay] = Field(description="incidents opened per day, and the mail "
                                         "their accounts were refused or deferred")
    open_incidents: int
    restricted: dict[str, int] = Field(description="accounts suspended, held, throttled now")
    groups: list[GroupCount] = Field(description="per group of [internal] groups and "
                                     "groups_file, busiest first; empty without groups")


def configured_groups(config: Config) -> dict[str, list[str]]:
    """`[internal] groups` with groups_file's; {} (and a log line) when the file is bad."""
    from mailmoat.internal.check import load_groups
    from mailmoat.internal.settings import InternalSettings

    try:
        return load_groups(config, config.section("internal", InternalSettings))
    except ConfigError as exc:
        log.warning("internal statistics without groups: %s", exc)
        return {}


@router.get("/stats", response_model=StatsOut,
            summary="Our own senders' mail: volume, what was stopped, incidents, top senders")
def stats(admin: AdminUser, config: ConfigDep, db: DbDep,
          days: Annotated[int, Query(ge=1, le=366)] = 30) -> StatsOut:
    from mailmoat.internal.stats import internal_stats

    return StatsOut(**internal_stats(db, days, groups=configured_groups(config)))


class RulesOut(BaseModel):
    version: int | None = Field(description="the policy version holding them; null: none")
    source: str = Field(description="console (a policy version) or config (the TOML file)")
    rules: list[dict[str, Any]] = Field(description="[[internal.rules]] tables as JSON")


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[dict[str, Any]] | None = Field(
        description="the rules, as [[internal.rules]] tables in JSON; null: back to the "
        "configuration file's")
    comment: str = Field("", max_length=2000)


def _rules_out(config: Config, db: Database) -> RulesOut:
    rules, console = policy_store.current_rules(config, db)
    return RulesOut(version=policy_store.latest_version_id(db),
                    source="console" if console else "config",
                    rules=policy_store.rules_as_config(rules))


@router.get("/rules", response_model=RulesOut, summary="The internal policy rules in force")
def get_rules(admin: AdminUser, config: ConfigDep, db: DbDep) -> RulesOut:
    return _rules_out(config, db)


@router.put("/rules", response_model=RulesOut,
            summary="Replace the internal policy rules (validated; a new policy version)")
def put_rules(body: RulesIn, admin: AdminUser, config: ConfigDep, db: DbDep) -> RulesOut:
    try:
        rules = None if body.rules is None else policy_store.rules_for_config(config, body.rules)
    except PolicyError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    row = policy_store.save_rules(config, db, rules, admin.email, body.comment)
    audit(db, admin.email, "internal.rules", f"policy:{row.id}",
          rules=None if rules is None else [r.name for r in rules], comment=body.comment)
    return _rules_out(config, db)


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


class HoldQueuedOut(BaseModel):
    held: dict[str, list[str]] = Field(description="mailmoat ID -> the recipients it is now "
                                       "held for (quarantine)")
    not_waiting: list[str] = Field(description="queued in the log but not waiting in this "
                                   "node's spool: being delivered, or queued on another node")


@router.post("/incidents/{incident_id}/hold-queued", response_model=HoldQueuedOut,
             responses=responses(404),
             summary="Move the incident's messages still queued here into quarantine")
def hold_queued_api(incident_id: IncidentId, admin: AdminUser, config: ConfigDep,
                    db: DbDep) -> HoldQueuedOut:
    from mailmoat.internal.queued import hold_queued

    try:
        got = hold_queued(config, db, incident_id, admin.email)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return HoldQueuedOut(held=got.held, not_waiting=got.not_waiting)


@router.post("/incidents/{incident_id}/close", response_model=IncidentOut,
             responses=responses(404), summary="Close an incident once it is dealt with")
def close(incident_id: IncidentId, admin: AdminUser, db: DbDep,
          body: CloseIn | None = None) -> IncidentOut:
    try:
        return _incident(accounts.close_incident(db, incident_id, admin.email,
                                                 body.note if body else ""))
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


# -- console pages ---------------------------------------------------------------------------
# Server-rendered like the rest of the console (web/routes/pages.py), on the same service
# functions as the API above: forms post with the CSRF token and redirect back.

pages = APIRouter(include_in_schema=False)


def _day_points(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, object]]:
    return [{"bucket": r["day"], "category": k, "count": int(r[k])}
            for r in rows for k in keys if r.get(k)]


def _days(days: int, now: datetime) -> list[str]:
    """Every day of the window, so a quiet day shows as an empty bar, not a gap closed up."""
    from datetime import timedelta

    return [(now - timedelta(days=i)).date().isoformat() for i in range(days - 1, -1, -1)]


def _page(request: Request, user: Principal, config: Config, db: Database, days: int,
          rules_text: str | None = None, rules_error: str = "", status: int = 200
          ) -> HTMLResponse:
    from mailmoat.internal.stats import internal_stats
    from mailmoat.web import charts
    from mailmoat.web.routes.pages import render

    groups = configured_groups(config)
    now = datetime.now(UTC)
    st = internal_stats(db, days, now=now, groups=groups)
    buckets = _days(days, now)
    stopped = [{"day": r["day"], "stopped": r["stopped"]} for r in st["volume"]]

    def both(points: list[dict[str, object]], title: str, unit: str = "messages") -> str:
        # Wide for a screen, compact for a phone (the stylesheet picks one), as on the dashboard.
        return "".join(charts.stacked_bars(points, title, buckets, compact=c, unit=unit)
                       for c in (False, True))

    svgs = {
        "volume": both(_day_points(st["volume"], ("internal", "outbound")),
                       f"Internal and outbound mail, last {days} days"),
        "stopped": both(_day_points(stopped, ("stopped",)),
                        "Our senders' mail stopped (quarantined or refused)"),
        "incidents": both(_day_points(st["incidents"], ("opened",)),
                          "Incidents opened (accounts flagged)", unit="incidents"),
        "refused": both(_day_points(st["incidents"], ("refused", "deferred")),
                        "Mail of flagged accounts refused or deferred"),
        "senders": charts.hbars([(s["account"], s["messages"]) for s in st["top_senders"]],
                                "Top senders"),
    }
    if groups:
        svgs["groups"] = charts.hbars([(g["group"], g["messages"]) for g in st["groups"]],
                                      "Mail per group")
    if rules_text is None:
        rules, _ = policy_store.current_rules(config, db)
        rules_text = policy_store.rules_toml(rules)
    _, console = policy_store.current_rules(config, db)
    return render(request, "internal.html", status=status, user=user, st=st, svgs=svgs,
                  days=days, groups=groups,
                  restricted=accounts.list_restrictions(db, now=now.timestamp()),
                  incidents=accounts.list_incidents(db, limit=50),
                  rules_text=rules_text, rules_error=rules_error, rules_console=console,
                  when=_when)


def _when(at: float | None) -> str:
    return "" if at is None else f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M} UTC"


@pages.get("/internal", response_class=HTMLResponse)
def internal_page(request: Request, user: PageAdmin, config: ConfigDep, db: DbDep,
                  days: Annotated[int, Query(ge=1, le=366)] = 30) -> HTMLResponse:
    return _page(request, user, config, db, days)


@pages.post("/internal/rules", response_class=HTMLResponse)
def rules_save(request: Request, user: PageAdmin, config: ConfigDep, db: DbDep,
               rules: Annotated[str, Form(max_length=500_000)] = "",
               comment: Annotated[str, Form(max_length=2000)] = "",
               use_file: Annotated[str, Form(max_length=8)] = "") -> Response:
    from mailmoat.web.routes.pages import back

    if use_file:
        row = policy_store.save_rules(config, db, None, user.email,
                                      comment or "internal rules: the configuration file's")
        audit(db, user.email, "internal.rules", f"policy:{row.id}", rules=None,
              comment=comment)
        return back("/internal", f"The configuration file's rules apply again "
                    f"(policy version {row.id}).")
    try:
        parsed = policy_store.parse_rules_toml(config, rules)
    except PolicyError as exc:
        # What was typed stays in the form, the mistake above it.
        return _page(request, user, config, db, 30, rules_text=rules,
                     rules_error=str(exc), status=422)
    row = policy_store.save_rules(config, db, parsed, user.email, comment)
    audit(db, user.email, "internal.rules", f"policy:{row.id}",
          rules=[r.name for r in parsed], comment=comment)
    return back("/internal", f"Saved {len(parsed)} rule{'s' if len(parsed) != 1 else ''} "
                f"as policy version {row.id}; the gateway applies them within "
                f"{config.policy.reload_interval:g} s.")


@pages.post("/internal/accounts/{account}/release")
def release_page(account: str, user: PageAdmin, config: ConfigDep, db: DbDep, request: Request,
                 next: Annotated[str, Form(max_length=200)] = "/internal") -> Response:
    from mailmoat.web.routes.pages import back

    here = next if next.startswith("/internal") else "/internal"
    try:
        r = accounts.release_account(config, db, account, user.email)
    except StoreError as exc:
        return back(here, str(exc))
    tell_gateway(request, r)
    return back(here, f"Released {account}: its mail flows again.")


@pages.get("/internal/incidents/{incident_id}", response_class=HTMLResponse)
def incident_page(incident_id: IncidentId, request: Request, user: PageAdmin,
                  db: DbDep) -> HTMLResponse:
    from mailmoat.web.routes.pages import render

    try:
        inc = accounts.get_incident(db, incident_id)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    msgs = accounts.incident_messages(db, incident_id, limit=2000)
    counts: dict[str, int] = {}
    for m in msgs:
        counts[m.status] = counts.get(m.status, 0) + 1
    return render(request, "internal_incident.html", user=user, inc=inc, msgs=msgs,
                  counts=counts, restriction=accounts.get_restriction(db, inc.account),
                  when=_when)


@pages.post("/internal/incidents/{incident_id}/hold-queued")
def incident_hold_queued_page(incident_id: IncidentId, user: PageAdmin, config: ConfigDep,
                              db: DbDep) -> Response:
    from mailmoat.internal.queued import hold_queued
    from mailmoat.web.routes.pages import back

    try:
        got = hold_queued(config, db, incident_id, user.email)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    text = f"Held {got.messages} queued message{'s' if got.messages != 1 else ''} in quarantine."
    if got.not_waiting:
        text += (f" {len(got.not_waiting)} not waiting in this gateway's queue (being "
                 "delivered, or queued on another node).")
    return back(f"/internal/incidents/{incident_id}", text)


@pages.post("/internal/incidents/{incident_id}/close")
def incident_close_page(incident_id: IncidentId, user: PageAdmin, db: DbDep,
                        note: Annotated[str, Form(max_length=4000)] = "") -> Response:
    from mailmoat.web.routes.pages import back

    try:
        accounts.close_incident(db, incident_id, user.email, note)
    except StoreError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return back(f"/internal/incidents/{incident_id}", f"Incident {incident_id} closed.")
