"""/api/v1/stats and /api/v1/audit: dashboard numbers, spool depth, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from mailmoat.store import queries
from mailmoat.store.models import AuditRow
from mailmoat.web import services
from mailmoat.web.deps import AdminUser, ConfigDep, CurrentUser, DbDep, scope_of
from mailmoat.web.errors import AUTH
from mailmoat.web.schemas import AuditOut, Count, DashboardOut, utc

router = APIRouter(prefix="/api/v1", tags=["stats"], responses=AUTH)


def dashboard_data(config: ConfigDep, db: DbDep, scope: queries.Scope, hours: int) -> DashboardOut:
    with db.session() as s:
        st = queries.dashboard_stats(s, scope, hours=hours)

    def c(items: list[tuple[str, int]]) -> list[Count]:
        return [Count(key=str(k or ""), count=int(n)) for k, n in items]

    return DashboardOut(hours=hours, total=st.total, buckets=queries.time_buckets(hours),
                        volume=[{"bucket": b, "category": cat, "count": n} for b, cat, n in st.volume],
                        volume_by_action=[{"bucket": b, "category": a, "count": n}
                                          for b, a, n in st.volume_action],
                        by_action=c(st.by_action), by_category=c(st.by_category),
                        threats=st.threats, bulk=st.bulk,
                        top_recipients=c(st.top_recipients), top_blocked_senders=c(st.top_blocked_senders),
                        top_blocked_domains=c(st.top_blocked_domains), by_group=c(st.by_group),
                        scan_ms_avg=st.scan_ms_avg, scan_ms_p95=st.scan_ms_p95,
                        failed_recipients=st.failed_recipients, deferred_recipients=st.deferred_recipients,
                        queue=services.queue_depth(config) if scope.all else {})


@router.get("/stats/dashboard", response_model=DashboardOut, tags=["stats"])
def dashboard(user: CurrentUser, config: ConfigDep, db: DbDep,
              hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24) -> DashboardOut:
    return dashboard_data(config, db, scope_of(user), hours)


@router.get("/stats/queue", response_model=dict[str, int], summary="Spool files per state")
def queue(admin: AdminUser, config: ConfigDep) -> dict[str, int]:
    return services.queue_depth(config)


@router.get("/audit", response_model=list[AuditOut], tags=["audit"])
def audit_log(admin: AdminUser, db: DbDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before_id: int | None = None, action: Annotated[str, Query(max_length=64)] = "") -> list[AuditOut]:
    q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(AuditRow.id < before_id)
    if action:
        q = q.where(AuditRow.action == action)
    with db.session() as s:
        return [AuditOut(id=r.id, at=utc(r.at) or r.at, actor=r.actor, action=r.action, target=r.target,
                         details=dict(r.details or {})) for r in s.scalars(q)]
