"""/api/v1/policy: the editable policy document, its versions, rollback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from mailmoat.errors import PolicyError
from mailmoat.store.quarantine import audit
from mailmoat.web import policy_store
from mailmoat.web.deps import AdminUser, ConfigDep, DbDep, ManagerUser
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.schemas import PolicyIn, PolicyOut, PolicyVersionOut, RollbackIn, utc

router = APIRouter(prefix="/api/v1/policy", tags=["policy"], responses=AUTH)


@router.get("", response_model=PolicyOut, summary="The policy in force (newest version, or the TOML)")
def current(user: ManagerUser, config: ConfigDep, db: DbDep) -> PolicyOut:
    return PolicyOut(version=policy_store.latest_version_id(db),
                     document=policy_store.current_document(config, db).model_dump(mode="json"))


@router.put("", response_model=PolicyOut, summary="Save a new policy version (validated)")
def save(body: PolicyIn, admin: AdminUser, config: ConfigDep, db: DbDep) -> PolicyOut:
    document = dict(body.document)
    if "internal_rules" not in document:  # a client that leaves them out keeps them
        rules = policy_store.stored_document(config, db).internal_rules
        document["internal_rules"] = None if rules is None else \
            [r.model_dump(mode="json") for r in rules]
    try:
        doc = policy_store.validate_document(document)
        if doc.internal_rules is not None:
            policy_store.rules_for_config(config, policy_store.rules_as_config(doc.internal_rules))
    except PolicyError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    row = policy_store.save_version(db, doc, admin.email, body.comment)
    audit(db, admin.email, "policy.save", f"policy:{row.id}", comment=body.comment)
    return PolicyOut(version=row.id, document=row.document)


@router.get("/versions", response_model=list[PolicyVersionOut])
def versions(user: ManagerUser, db: DbDep,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[PolicyVersionOut]:
    return [PolicyVersionOut(id=r.id, author=r.author, created_at=utc(r.created_at) or r.created_at,
                             comment=r.comment or "") for r in policy_store.list_versions(db, limit)]


@router.get("/versions/{version_id}", response_model=PolicyVersionOut, responses=responses(404))
def version(version_id: int, user: ManagerUser, db: DbDep) -> PolicyVersionOut:
    r = policy_store.get_version(db, version_id)
    if r is None:
        raise HTTPException(status_code=404, detail="no such policy version")
    return PolicyVersionOut(id=r.id, author=r.author, created_at=utc(r.created_at) or r.created_at,
                            comment=r.comment or "", document=r.document)


@router.post("/versions/{version_id}/rollback", response_model=PolicyOut, responses=responses(404),
             summary="Make an old version current again (saved as a new version)")
def rollback(version_id: int, admin: AdminUser, db: DbDep, body: RollbackIn | None = None) -> PolicyOut:
    r = policy_store.get_version(db, version_id)
    if r is None:
        raise HTTPException(status_code=404, detail="no such policy version")
    comment = (body.comment if body else "") or f"rollback to version {version_id}"
    row = policy_store.save_version(db, policy_store.validate_document(r.document), admin.email, comment)
    audit(db, admin.email, "policy.rollback", f"policy:{row.id}", to_version=version_id)
    return PolicyOut(version=row.id, document=row.document)
