"""/api/v1/messages: search the message log (keyset paging) and read one message."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from mailmoat.errors import StoreError
from mailmoat.scan.base import Category
from mailmoat.store import queries
from mailmoat.web import services
from mailmoat.web.deps import CurrentUser, DbDep, scope_of
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.schemas import MessageDetail, MessagePage, MessageSummary

router = APIRouter(prefix="/api/v1/messages", tags=["messages"], responses=AUTH)

Direction = Literal["inbound", "outbound", "internal"]
Action = Literal["accept", "tag", "quarantine", "reject"]
Status = Literal["queued", "delivered", "deferred", "failed", "quarantined", "rejected", "released"]


def filters_from(sender: str = "", recipient: str = "", subject: str = "", message_id: str = "",
                 mailmoat_id: str = "", client_ip: str = "", since: datetime | None = None,
                 until: datetime | None = None, direction: str = "", category: str = "",
                 action: str = "", status: str = "", quarantined: bool | None = None) -> queries.SearchFilters:
    return queries.SearchFilters(sender=sender, recipient=recipient, subject=subject,
                                 message_id=message_id, mailmoat_id=mailmoat_id, client_ip=client_ip,
                                 since=since, until=until, direction=direction, category=category,
                                 action=action, status=status, quarantined=quarantined)


def run_search(db: DbDep, user: CurrentUser, f: queries.SearchFilters, limit: int,
               cursor: str | None) -> MessagePage:
    try:
        with db.session() as s:
            rows, nxt = queries.search_messages(s, scope_of(user), f, limit=limit, cursor=cursor)
    except StoreError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return MessagePage(items=[MessageSummary.of(m) for m in rows], next_cursor=nxt)


@router.get("", response_model=MessagePage, summary="Search the message log, newest first")
def search(user: CurrentUser, db: DbDep,
           sender: Annotated[str, Query(max_length=512, description="address, or @domain")] = "",
           recipient: Annotated[str, Query(max_length=512, description="address, or @domain")] = "",
           subject: Annotated[str, Query(max_length=500, description=(
               "substring, case-insensitive; searches the last 7 days unless `since` is given"))] = "",
           message_id: Annotated[str, Query(max_length=998)] = "",
           mailmoat_id: Annotated[str, Query(max_length=64)] = "",
           client_ip: Annotated[str, Query(max_length=64)] = "",
           since: datetime | None = None, until: datetime | None = None,
           direction: Direction | None = None, category: Category | None = None,
           action: Action | None = None, status: Status | None = None,
           quarantined: bool | None = None,
           limit: Annotated[int, Query(ge=1, le=500)] = 50,
           cursor: Annotated[str | None, Query(max_length=500)] = None) -> MessagePage:
    f = filters_from(sender, recipient, subject, message_id, mailmoat_id, client_ip, since, until,
                     direction or "", category.value if category else "", action or "", status or "",
                     quarantined)
    return run_search(db, user, f, limit, cursor)


@router.get("/{msg_id}", response_model=MessageDetail, responses=responses(404),
            summary="One message: envelope, headers, recipients, delivery history, symbols")
def detail(msg_id: str, user: CurrentUser, db: DbDep) -> MessageDetail:
    return services.message_detail(db, scope_of(user), msg_id)
