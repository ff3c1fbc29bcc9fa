"""Account changes an administrator makes, for the API and the Users page alike: each one
checked (not yourself where that would lock you out, not the last administrator), applied,
and audited under the acting administrator's name."""

from __future__ import annotations

from fastapi import HTTPException

from mailmoat.errors import StoreError
from mailmoat.store.db import Database
from mailmoat.store.quarantine import audit
from mailmoat.store.webmodels import UserRow
from mailmoat.web.auth import Principal, delete_user, set_password, update_user


def _status(exc: StoreError) -> int:
    text = str(exc)
    if text.startswith("no user"):
        return 404
    return 409 if "last enabled administrator" in text else 422


def change(db: Database, admin: Principal, user_id: int, *, role: str | None = None,
           domains: list[str] | None = None, disabled: bool | None = None) -> UserRow:
    if user_id == admin.id and (disabled or (role is not None and role != "admin")):
        raise HTTPException(status_code=409, detail="you cannot disable or demote yourself; "
                            "another administrator can")
    try:
        row, changed = update_user(db, user_id, role=role, domains=domains, disabled=disabled)
    except StoreError as exc:
        raise HTTPException(status_code=_status(exc), detail=str(exc)) from exc
    if "disabled" in changed:
        audit(db, admin.email, "user.disable" if row.disabled else "user.enable", row.email)
    rest = {k: v for k, v in changed.items() if k != "disabled"}
    if rest:
        audit(db, admin.email, "user.update", row.email, **rest)
    return row


def reset_password(db: Database, admin: Principal, user_id: int, password: str) -> UserRow:
    try:
        row = set_password(db, user_id, password)
    except StoreError as exc:
        raise HTTPException(status_code=_status(exc), detail=str(exc)) from exc
    audit(db, admin.email, "user.passwd", row.email)
    return row


def remove(db: Database, admin: Principal, user_id: int) -> str:
    if user_id == admin.id:
        raise HTTPException(status_code=409, detail="you cannot delete yourself; another "
                            "administrator can")
    try:
        email = delete_user(db, user_id)
    except StoreError as exc:
        raise HTTPException(status_code=_status(exc), detail=str(exc)) from exc
    audit(db, admin.email, "user.delete", email)
    return email
