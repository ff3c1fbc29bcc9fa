"""/api/v1/users: accounts (administrators only). Every change is audited; the last enabled
administrator cannot be demoted, disabled or deleted here (the command line can)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from mailmoat.errors import StoreError
from mailmoat.store.quarantine import audit
from mailmoat.store.webmodels import UserRow
from mailmoat.web import user_admin
from mailmoat.web.auth import create_user
from mailmoat.web.deps import AdminUser, DbDep
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.routes.auth import public
from mailmoat.web.schemas import PasswordIn, UserCreate, UserPublic, UserUpdate

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


@router.patch("/{user_id}", response_model=UserPublic, responses=responses(404, 409),
              summary="Change role, domains, or disable / enable an account")
def change_user(user_id: int, body: UserUpdate, admin: AdminUser, db: DbDep) -> UserPublic:
    return public(user_admin.change(db, admin, user_id, role=body.role, domains=body.domains,
                                  disabled=body.disabled))


@router.put("/{user_id}/password", responses=responses(404),
            summary="Set a new password (the account's sessions end)")
def reset_password(user_id: int, body: PasswordIn, admin: AdminUser, db: DbDep) -> dict[str, bool]:
    user_admin.reset_password(db, admin, user_id, body.password)
    return {"ok": True}


@router.delete("/{user_id}", summary="Delete an account and its API tokens",
               responses=responses(404, 409))
def remove_user(user_id: int, admin: AdminUser, db: DbDep) -> dict[str, bool]:
    user_admin.remove(db, admin, user_id)
    return {"ok": True}
