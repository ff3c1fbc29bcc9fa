"""The Users page of the console (administrators): list, add, change role and domains,
reset a password, disable or enable, delete after a confirmation page. The changes go
through web.user_admin, the same checks and audit entries as /api/v1/users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from mailmoat.errors import StoreError
from mailmoat.store.quarantine import audit
from mailmoat.store.webmodels import ROLES, UserRow
from mailmoat.web import user_admin
from mailmoat.web.auth import check_password, create_user
from mailmoat.web.deps import DbDep, PageAdmin
from mailmoat.web.forms import sentence
from mailmoat.web.routes.pages import back, render

router = APIRouter(include_in_schema=False)

ROLE_WORDS = {"admin": "administrator: everything", "domain_admin": "domain administrator: "
              "mail of their domains", "user": "user: their own mail"}


def _domains(text: str) -> list[str]:
    return [d.strip() for d in text.replace(",", " ").split() if d.strip()]


def _all_users(db: DbDep) -> list[UserRow]:
    with db.session() as s:
        return list(s.scalars(select(UserRow).order_by(UserRow.email)))


def _one(db: DbDep, user_id: int) -> UserRow:
    with db.session() as s:
        row = s.get(UserRow, user_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such user")
    return row


def _list_page(request: Request, admin: PageAdmin, db: DbDep, status: int = 200,
               errors: dict[str, str] | None = None, form: dict[str, str] | None = None) -> HTMLResponse:
    return render(request, "users.html", status=status, user=admin, users=_all_users(db), roles=ROLES,
                  role_words=ROLE_WORDS, errors=errors or {},
                  form=form or {"email": "", "role": "user", "domains": ""})


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, admin: PageAdmin, db: DbDep) -> HTMLResponse:
    return _list_page(request, admin, db)


@router.post("/users", response_class=HTMLResponse)
def users_add(request: Request, admin: PageAdmin, db: DbDep, email: Annotated[str, Form()] = "",
              role: Annotated[str, Form()] = "user", domains: Annotated[str, Form()] = "",
              password: Annotated[str, Form()] = "", password2: Annotated[str, Form()] = "") -> Response:
    form = {"email": email, "role": role, "domains": domains}
    errors: dict[str, str] = {}
    if "@" not in email.strip():
        errors["email"] = "Give the person's email address, for example alice@example.com."
    if role == "domain_admin" and not _domains(domains):
        errors["domains"] = "A domain administrator needs at least one domain, for example example.com."
    try:
        check_password(password)
    except StoreError as exc:
        errors["password"] = sentence(f"choose another password: {exc}")
    if not errors.get("password") and password != password2:
        errors["password2"] = "The two passwords differ; type the same one twice."
    if not errors:
        try:
            row = create_user(db, email, role, password, _domains(domains))
        except StoreError as exc:
            errors["email" if "exists" in str(exc) or "email" in str(exc) else "role"] = sentence(str(exc))
        else:
            audit(db, admin.email, "user.create", row.email, role=row.role, domains=row.domains)
            return back("/users", f"Added {row.role} {row.email}.")
    return _list_page(request, admin, db, status=422, errors=errors, form=form)


def _edit_page(request: Request, admin: PageAdmin, row: UserRow, status: int = 200,
               errors: dict[str, str] | None = None, form: dict[str, str] | None = None) -> HTMLResponse:
    return render(request, "user_edit.html", status=status, user=admin, u=row, roles=ROLES,
                  role_words=ROLE_WORDS, errors=errors or {},
                  form=form or {"role": row.role, "domains": ", ".join(row.domains or [])})


@router.get("/users/{user_id}", response_class=HTMLResponse)
def user_page(user_id: int, request: Request, admin: PageAdmin, db: DbDep) -> HTMLResponse:
    return _edit_page(request, admin, _one(db, user_id))


@router.post("/users/{user_id}", response_class=HTMLResponse)
def user_save(user_id: int, request: Request, admin: PageAdmin, db: DbDep,
              role: Annotated[str, Form()] = "", domains: Annotated[str, Form()] = "") -> Response:
    row = _one(db, user_id)
    try:
        row = user_admin.change(db, admin, user_id, role=role or None, domains=_domains(domains))
    except HTTPException as exc:
        field = "domains" if "domain" in str(exc.detail) and "administrator" not in str(exc.detail) else "role"
        return _edit_page(request, admin, row, status=exc.status_code, errors={field: sentence(str(exc.detail))},
                          form={"role": role, "domains": domains})
    return back(f"/users/{user_id}", f"Saved {row.email}: {row.role}"
                + (f" for {', '.join(row.domains)}" if row.domains else "") + ".")


@router.post("/users/{user_id}/password", response_class=HTMLResponse)
def user_password(user_id: int, request: Request, admin: PageAdmin, db: DbDep,
                  password: Annotated[str, Form()] = "", password2: Annotated[str, Form()] = "") -> Response:
    row = _one(db, user_id)
    errors = {}
    if password != password2:
        errors["password2"] = "The two passwords differ; type the same one twice."
    else:
        try:
            user_admin.reset_password(db, admin, user_id, password)
        except HTTPException as exc:
            errors["password"] = sentence(f"choose another password: {exc.detail}")
    if errors:
        return _edit_page(request, admin, row, status=422, errors=errors)
    return back(f"/users/{user_id}", f"New password set for {row.email}; its sessions have ended.")


@router.post("/users/{user_id}/state", response_class=HTMLResponse)
def user_state(user_id: int, request: Request, admin: PageAdmin, db: DbDep,
               op: Annotated[str, Form()] = "") -> Response:
    if op not in ("disable", "enable"):
        raise HTTPException(status_code=422, detail="choose disable or enable")
    row = _one(db, user_id)
    try:
        user_admin.change(db, admin, user_id, disabled=op == "disable")
    except HTTPException as exc:
        return _edit_page(request, admin, row, status=exc.status_code, errors={"state": sentence(str(exc.detail))})
    if op == "disable":
        return back(f"/users/{user_id}", f"Disabled {row.email}: it cannot log in, and its sessions "
                                         "and API tokens no longer work.")
    return back(f"/users/{user_id}", f"Enabled {row.email} again.")


@router.get("/users/{user_id}/delete", response_class=HTMLResponse)
def user_delete_confirm(user_id: int, request: Request, admin: PageAdmin, db: DbDep) -> HTMLResponse:
    row = _one(db, user_id)
    return render(request, "confirm.html", user=admin, title=f"Delete {row.email}?",
                  question=f"Delete the {row.role} account {row.email} and its API tokens? "
                           "It cannot be undone; the audit log keeps what the account did.",
                  action=f"/users/{user_id}/delete", fields=[], confirm_label=f"Delete {row.email}",
                  cancel=f"/users/{user_id}")


@router.post("/users/{user_id}/delete", response_class=HTMLResponse)
def user_delete(user_id: int, request: Request, admin: PageAdmin, db: DbDep,
                confirm: Annotated[str, Form()] = "") -> Response:
    if confirm != "yes":
        return RedirectResponse(f"/users/{user_id}/delete", status_code=303)
    row = _one(db, user_id)
    try:
        email = user_admin.remove(db, admin, user_id)
    except HTTPException as exc:
        return _edit_page(request, admin, row, status=exc.status_code, errors={"state": sentence(str(exc.detail))})
    return back("/users", f"Deleted {email}.")
