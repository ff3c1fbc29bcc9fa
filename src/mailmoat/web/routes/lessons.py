"""/api/v1/lessons: what the content model was taught (the learning audit), and taking
lessons back — by message, by who taught them, by age (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mailmoat.web import services
from mailmoat.web.deps import AdminUser, ConfigDep, DbDep
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.schemas import LessonRecord, LessonsPage, UnlearnIn, UnlearnOut

router = APIRouter(prefix="/api/v1/lessons", tags=["learning"], responses=AUTH)


@router.get("", response_model=LessonsPage, summary="The learning audit, newest first")
def list_lessons(admin: AdminUser, config: ConfigDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 taught_by: Annotated[str | None, Query(max_length=320)] = None) -> LessonsPage:
    rows = services.lesson_records(config, limit, taught_by)
    return LessonsPage(items=[LessonRecord.model_validate(r) for r in rows])


@router.post("/unlearn", response_model=UnlearnOut, responses=responses(404, 500, 501),
             summary="Take back the lessons matching every criterion given (404: none did)")
def unlearn(body: UnlearnIn, admin: AdminUser, config: ConfigDep, db: DbDep) -> UnlearnOut:
    which = {"sha256": body.sha256, "taught_by": body.taught_by, "taught_before": body.taught_before}
    res = services.unlearn_lessons(config, db, admin.email, which, body.domain)
    return UnlearnOut(messages=res.messages, lessons=res.lessons, changes=res.changes, rows=res.rows)
