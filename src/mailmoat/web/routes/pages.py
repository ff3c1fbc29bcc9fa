"""The console: server-rendered pages over the same services as the API. Forms post with a
hidden CSRF token and redirect back (no JavaScript needed)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from mailmoat.config import Config
from mailmoat.errors import PolicyError, StoreError
from mailmoat.store import queries
from mailmoat.store.db import Database
from mailmoat.store.quarantine import audit
from mailmoat.web import charts, health, policy_store, release_requests, services
from mailmoat.web.auth import Principal
from mailmoat.web.deps import (
    ConfigDep,
    DbDep,
    PageAdmin,
    PageUser,
    check_csrf,
    csrf_token,
    scope_of,
)
from mailmoat.web.forms import field_errors, sentence
from mailmoat.web.routes.auth import login_session
from mailmoat.web.routes.stats import dashboard_data
from mailmoat.web.schemas import CATEGORIES, MessageSummary

router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("user", None)
    ctx.setdefault("flash", request.query_params.get("flash", ""))
    ctx["csrf"] = csrf_token(request)
    return request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status)


def back(url: str, flash: str) -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}flash={quote(flash)}", status_code=303)


def _safe_next(nxt: str) -> str:
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", error="", next=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login_form(request: Request, db: DbDep, email: Annotated[str, Form()] = "",
                     password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    await check_csrf(request)
    try:
        await login_session(request, db, email, password)  # argon2 and the database off the loop
    except HTTPException as exc:
        return render(request, "login.html", status=exc.status_code, error=str(exc.detail),
                      next=_safe_next(next))
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
async def logout(request: Request, user: PageUser) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, user: PageUser, config: ConfigDep, db: DbDep, hours: int = 24) -> HTMLResponse:
    hours = max(1, min(hours, 24 * 90))
    d = dashboard_data(config, db, scope_of(user), hours)

    def pairs(items: list[Any]) -> list[tuple[str, int]]:
        return [(c.key, c.count) for c in items]

    svgs = {
        # Each time chart twice: wide for a screen, compact for a phone (the CSS picks one).
        **{key: "".join(charts.stacked_bars(points, f"Mail volume by {what}, last {hours} h", d.buckets,
                                            compact=compact) for compact in (False, True))
           for key, what, points in (("volume", "category", d.volume),
                                     ("volume_action", "action", d.volume_by_action))},
        "action": charts.hbars(pairs(d.by_action), "By action"),
        "category": charts.hbars(pairs(d.by_category), "By category"),
        "recipients": charts.hbars(pairs(d.top_recipients), "Top targeted recipients"),
        "senders": charts.hbars(pairs(d.top_blocked_senders), "Top blocked senders"),
        "domains": charts.hbars(pairs(d.top_blocked_domains), "Top blocked sender domains"),
        "groups": charts.hbars(pairs(d.by_group), "Detections by check family"),
    }
    if d.queue:
        svgs["queue"] = charts.hbars(sorted(d.queue.items()), "Delivery queue (spool files)")
    # The busiest bucket, not an average over the window: an idle day's average says nothing.
    per_bucket: dict[str, int] = {}
    for p in d.volume:
        per_bucket[str(p["bucket"])] = per_bucket.get(str(p["bucket"]), 0) + int(p["count"])
    busiest = max(per_bucket.items(), key=lambda kv: kv[1], default=None)
    # Administrators see whether the gateway's neighbours answer (probed off the loop: this
    # route is a plain def, on the threadpool).
    neighbours = [health.probe(config, "antivirus"), health.probe(config, "downstream")] \
        if user.is_admin else []
    return render(request, "dashboard.html", user=user, d=d, svgs=svgs, hours=hours, busiest=busiest,
                  hourly=hours <= 72, neighbours=neighbours,
                  pending_requests=release_requests.pending_for(db, user))


@router.get("/messages", response_class=HTMLResponse)
def messages(request: Request, user: PageUser, db: DbDep) -> HTMLResponse:
    qp = request.query_params
    keys = ("sender", "recipient", "subject", "message_id", "mailmoat_id", "client_ip",
            "direction", "category", "action", "status", "since", "until")
    form = {k: qp.get(k, "")[:500] for k in keys}
    error = ""
    rows: list[Any] = []
    nxt = None
    try:
        # Every key left names a str field of SearchFilters (mypy cannot tell them from the
        # datetime and bool ones through a dict, hence Any); since and until are parsed below.
        texts: dict[str, Any] = {k: v for k, v in form.items() if k not in ("since", "until")}
        f = queries.SearchFilters(**texts)
        f.since = datetime.fromisoformat(form["since"]) if form["since"] else None
        f.until = datetime.fromisoformat(form["until"]) if form["until"] else None
        with db.session() as s:
            rows, nxt = queries.search_messages(s, scope_of(user), f, limit=50, cursor=qp.get("cursor"))
    except (ValueError, StoreError) as exc:
        error = f"bad search: {exc}"
    next_url = None
    if nxt:
        next_url = "/messages?" + urlencode({**{k: v for k, v in form.items() if v}, "cursor": nxt})
    return render(request, "messages.html", user=user, form=form, error=error, categories=CATEGORIES,
                  rows=[MessageSummary.of(m) for m in rows], next_url=next_url)


@router.get("/messages/{msg_id}", response_class=HTMLResponse)
def message_page(msg_id: str, request: Request, user: PageUser, db: DbDep) -> HTMLResponse:
    m = services.message_detail(db, scope_of(user), msg_id)
    held = []
    if m.quarantine and m.quarantine.deleted_at is None:
        held = scope_of(user).filter_recipients(m.quarantine.held_for)
    return render(request, "message.html", user=user, m=m, held=held,
                  can_release=release_requests.may_release(user, m.category))


def _overrides_json(entries: dict[str, policy_store.DomainOverride]) -> str:
    return json.dumps({k: v.model_dump(exclude_none=True) for k, v in entries.items()}, indent=2)


# The policy form's fields: where in the document each one edits, and its name in words.
POLICY_FIELDS: dict[tuple[str, ...], str] = {
    ("thresholds",): "thresholds", ("thresholds", "tag_threshold"): "tag_threshold",
    ("thresholds", "quarantine_threshold"): "quarantine_threshold",
    ("thresholds", "reject_threshold"): "reject_threshold",
    ("thresholds", "bulk_threshold"): "bulk_threshold", ("thresholds", "bulk_action"): "bulk_action",
    **{(k,): k for k in ("allow_senders", "block_senders", "allow_ips", "block_ips", "vips",
                         "protected_domains", "domains", "recipients")}}
POLICY_LABELS = {
    "thresholds": "Thresholds", "tag_threshold": "Tag threshold",
    "quarantine_threshold": "Quarantine threshold", "reject_threshold": "Reject threshold",
    "bulk_threshold": "Bulk threshold", "bulk_action": "Bulk action",
    "allow_senders": "Allowed senders", "block_senders": "Blocked senders",
    "allow_ips": "Allowed IPs", "block_ips": "Blocked IPs", "vips": "VIPs",
    "protected_domains": "Protected domains", "domains": "Per-domain overrides",
    "recipients": "Per-recipient overrides"}
_LIST_FIELDS = ("allow_senders", "block_senders", "allow_ips", "block_ips", "vips", "protected_domains")


def _policy_form(doc: policy_store.PolicyDocument) -> dict[str, str]:
    """The document as the form shows it (text, as an administrator would type it)."""
    t = doc.thresholds
    return {"tag_threshold": f"{t.tag_threshold:g}", "quarantine_threshold": f"{t.quarantine_threshold:g}",
            "reject_threshold": f"{t.reject_threshold:g}",
            "bulk_threshold": "" if t.bulk_threshold is None else str(t.bulk_threshold),
            "bulk_action": t.bulk_action or "",
            **{k: "\n".join(getattr(doc, k)) for k in _LIST_FIELDS},
            "domains": _overrides_json(doc.domains), "recipients": _overrides_json(doc.recipients),
            "comment": ""}


def _policy_render(request: Request, user: Principal, config: Config, db: Database, form: dict[str, str],
                   errors: dict[str, str], status: int = 200) -> HTMLResponse:
    return render(request, "policy.html", status=status, user=user, form=form, errors=errors,
                  labels=POLICY_LABELS, list_fields=_LIST_FIELDS,
                  version=policy_store.latest_version_id(db), versions=policy_store.list_versions(db, 50))


@router.get("/policy", response_class=HTMLResponse)
def policy_page(request: Request, user: PageAdmin, config: ConfigDep, db: DbDep) -> HTMLResponse:
    return _policy_render(request, user, config, db, _policy_form(policy_store.current_document(config, db)), {})


def _json_field(text: str, what: str) -> Any:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{what} are not valid JSON: {exc.msg} at line {exc.lineno}, "
                          f"column {exc.colno}") from exc


def _lines(v: str) -> list[str]:
    return [x.strip() for x in v.replace(",", "\n").splitlines() if x.strip()]


@router.post("/policy", response_class=HTMLResponse)
async def policy_save(request: Request, user: PageAdmin, config: ConfigDep, db: DbDep) -> Response:
    form = await request.form()
    # The rest reads and writes the database: on the threadpool, off the event loop.
    return await run_in_threadpool(_policy_save, request, user, config, db, form)


def _policy_save(request: Request, user: Principal, config: Config, db: Database,
                 form: FormData) -> Response:
    typed = {k: str(form.get(k, ""))[:200_000] for k in (*_policy_form(policy_store.PolicyDocument()),)}
    g = typed.__getitem__
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for key in ("domains", "recipients"):
        # The users' own bulk settings live in recipients too: a form without them would drop them.
        try:
            parsed[key] = _json_field(g(key), POLICY_LABELS[key].lower())
        except PolicyError as exc:
            errors[key] = sentence(str(exc))
    if not errors:
        data = {"thresholds": {"tag_threshold": g("tag_threshold"),
                               "quarantine_threshold": g("quarantine_threshold"),
                               "reject_threshold": g("reject_threshold"),
                               # blank: as the configuration file says
                               "bulk_threshold": g("bulk_threshold").strip() or None,
                               "bulk_action": g("bulk_action") or None},
                "allow_senders": _lines(g("allow_senders")), "block_senders": _lines(g("block_senders")),
                "allow_ips": _lines(g("allow_ips")), "block_ips": _lines(g("block_ips")),
                "vips": [x.strip() for x in g("vips").splitlines() if x.strip()],
                "protected_domains": _lines(g("protected_domains")), **parsed,
                # The internal rules are edited on the Internal page: kept as they are.
                "internal_rules": policy_store.stored_document(config, db).internal_rules}
        try:
            doc = policy_store.PolicyDocument.model_validate(data)
        except ValidationError as exc:
            errors = field_errors(exc, POLICY_FIELDS, POLICY_LABELS)
    if errors:
        # What was typed stays in the form, each mistake said next to its field.
        return _policy_render(request, user, config, db, typed, errors, status=422)
    row = policy_store.save_version(db, doc, user.email, g("comment"))
    audit(db, user.email, "policy.save", f"policy:{row.id}", comment=g("comment"))
    return back("/policy", f"Saved policy version {row.id}.")


@router.post("/policy/rollback/{version_id}")
def policy_rollback(version_id: int, user: PageAdmin, db: DbDep) -> Response:
    r = policy_store.get_version(db, version_id)
    if r is None:
        raise HTTPException(status_code=404, detail="no such policy version")
    row = policy_store.save_version(db, policy_store.validate_document(r.document), user.email,
                                    f"rollback to version {version_id}")
    audit(db, user.email, "policy.rollback", f"policy:{row.id}", to_version=version_id)
    return back("/policy", f"Rolled back to version {version_id} (saved as version {row.id}).")


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, user: PageUser, config: ConfigDep, db: DbDep) -> HTMLResponse:
    s = services.bulk_settings(config, db, services.own_addresses(user)[0])
    return render(request, "settings.html", user=user, s=s, error="",
                  form={"bulk_threshold": str(s.bulk_threshold), "bulk_action": s.bulk_action})


@router.post("/settings", response_class=HTMLResponse)
def settings_save(request: Request, user: PageUser, config: ConfigDep, db: DbDep,
                  bulk_threshold: Annotated[str, Form()] = "", bulk_action: Annotated[str, Form()] = "",
                  address: Annotated[str, Form()] = "",
                  op: Annotated[str, Form()] = "save") -> Response:
    # A plain def: FastAPI runs it on its threadpool, off the event loop SMTP shares.
    try:
        if op == "reset":
            s = services.save_own_bulk(config, db, user, address or None, None, None)
            return back("/settings", f"Your own bulk settings are gone: threshold {s.bulk_threshold}, "
                                     f"bulk mail {s.bulk_action} apply.")
        level, action = services.parse_bulk(bulk_threshold, bulk_action)
        s = services.save_own_bulk(config, db, user, address or None, level, action)
    except (PolicyError, HTTPException) as exc:
        status, error = (exc.status_code, str(exc.detail)) if isinstance(exc, HTTPException) else (422, str(exc))
        # The form shows what was typed, next to the settings still in force.
        return render(request, "settings.html", status=status, user=user, error=error,
                      s=services.bulk_settings(config, db, services.own_addresses(user)[0]),
                      form={"bulk_threshold": bulk_threshold, "bulk_action": bulk_action})
    return back("/settings", f"Saved: bulk threshold {s.bulk_threshold}, bulk mail {s.bulk_action}.")


@router.get("/lessons", response_class=HTMLResponse)
def lessons_page(request: Request, user: PageAdmin, config: ConfigDep,
                 taught_by: str | None = None) -> HTMLResponse:
    rows = services.lesson_records(config, 200, (taught_by or "").strip() or None)
    return render(request, "lessons.html", user=user, rows=rows, taught_by=taught_by or "")


@router.post("/lessons/unlearn")
def lessons_unlearn(request: Request, user: PageAdmin, config: ConfigDep, db: DbDep,
                    sha256: Annotated[str, Form()] = "", taught_by: Annotated[str, Form()] = "",
                    taught_before: Annotated[str, Form()] = "",
                    domain: Annotated[str, Form()] = "") -> Response:
    # A plain def: unlearning rewrites the model files, on FastAPI's threadpool.
    which = {"sha256": sha256.strip() or None, "taught_by": taught_by.strip() or None,
             "taught_before": taught_before.strip() or None}
    try:
        res = services.unlearn_lessons(config, db, user.email, which, domain.strip() or None)
    except HTTPException as exc:
        return back("/lessons", f"Could not take lessons back: {exc.detail}")
    return back("/lessons", f"Took back the lessons of {len(res.messages)} message(s): "
                            f"{res.lessons} remembered lesson(s), {res.changes} weight change(s).")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: PageAdmin, db: DbDep, before_id: int | None = None) -> HTMLResponse:
    from sqlalchemy import select

    from mailmoat.store.models import AuditRow

    q = select(AuditRow).order_by(AuditRow.id.desc()).limit(100)
    if before_id is not None:
        q = q.where(AuditRow.id < before_id)
    with db.session() as s:
        rows = list(s.scalars(q))
    nxt = f"/audit?before_id={rows[-1].id}" if len(rows) == 100 else None
    return render(request, "audit.html", user=user, rows=rows, next_url=nxt)
