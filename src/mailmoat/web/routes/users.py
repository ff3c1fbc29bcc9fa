"""/api/v1/users: accounts (administrators only)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from mailmoat.errors import StoreError
from mailmoat.store.quarantine import audit
from mailmoat.store.webmodels import UserRow
from mailmoat.web.auth import create_user
from mailmoat.web.deps import AdminUser, DbDep
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.routes.auth import public
from mailmoat.web.schemas import UserCreate, UserPublic

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=AUTH)


@router.get("", response_model=list[UserPublic])
def list_users(admin: AdminUser, db: DbDep) -> list[UserPublic]:
    with db.session() as s:
        return [public(u) for u in s.scalars(select(UserRow).order_by(UserRow.email))]


@router.post("", response_model=UserPublic, status_code=201)
def add_user(body: UserCreate, admin: AdminUser, db: DbDep) -> UserPublic:
    try:
        row = create_user(db, body.email, body.role, body.password, body.domains)
    except StoreError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    audit(db, admin.email, "user.create", row.email, role=row.role, domains=row.domains)
    return public(row)


@router.delete("/{user_id}", summary="Disable an account (its sessions and tokens stop working)",
                responses=responses(404, 409))
def disable_user(user_id: int, admin: AdminUser, db: DbDep) -> dict[str, bool]:
    if user_id == admin.id:
        raise HTTPException(status_code=409, detail="you cannot disable yourself")
    with db.session() as s:
        row = s.get(UserRow, user_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such user")
        row.disabled = True
        row.session_epoch += 1
        email = row.email
    audit(db, admin.email, "user.disable", email)
    return {"ok": True}
