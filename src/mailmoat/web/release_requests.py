"""Who may release what, and release requests, as Microsoft 365's quarantine policies do:
an end user releases held spam and bulk mail (and clean mail an administrator's thresholds
held) themselves; phishing, malware, BEC and mail held by the administrators' own rules
(policy) they can only *request* to have released. An administrator (or a domain
administrator, for mail of their domains) approves — the message is released — or denies.
Both sides hear of it: the console lists requests and their outcome, and when mail
notifications are on ([digest] enabled) a mail goes to the approvers at the request and to
the requester at the decision."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException
from sqlalchemy import select

from mailmoat import maillog
from mailmoat.config import Config
from mailmoat.errors import StoreError
from mailmoat.store import queries
from mailmoat.store.db import Database
from mailmoat.store.models import MessageRow, ReleaseRequestRow
from mailmoat.store.quarantine import audit, release_message
from mailmoat.store.webmodels import UserRow
from mailmoat.web import services
from mailmoat.web.auth import Principal
from mailmoat.web.deps import scope_of
from mailmoat.web.digest import send_notices
from mailmoat.web.schemas import ReleaseRequestOut, utc

# What an end user may release without asking: not a threat, or only spam. Any category not
# named here (a new one included) needs an administrator's approval.
USER_MAY_RELEASE = frozenset({"clean", "spam", "bulk"})
STATUSES = ("pending", "approved", "denied", "withdrawn")


def is_manager(user: Principal) -> bool:
    return user.role in ("admin", "domain_admin")


def may_release(user: Principal, category: str) -> bool:
    return is_manager(user) or category in USER_MAY_RELEASE


def category_of(db: Database, msg_id: str) -> str:
    with db.session() as s:
        m = s.get(MessageRow, msg_id)
    return m.category if m is not None else ""


def check_release(db: Database, user: Principal, msg_id: str) -> None:
    """403 when `user` must request the release of this message instead of releasing it
    (after the scope check: a message outside it stays a 404)."""
    services.held_entry(db, scope_of(user), msg_id)
    category = category_of(db, msg_id)
    if not may_release(user, category):
        raise HTTPException(status_code=403, detail=(
            f"{category} mail is released only by an administrator: request its release "
            f"(POST /api/v1/quarantine/{msg_id}/request-release, or Request release in the console)"))


def _out(row: ReleaseRequestRow, m: MessageRow | None, viewer: Principal | None) -> ReleaseRequestOut:
    rcpts = list(row.recipients or [])
    if viewer is not None and not scope_of(viewer).all:
        rcpts = scope_of(viewer).filter_recipients(rcpts)
    return ReleaseRequestOut(
        id=row.id, message_id=row.message_id, subject=m.subject if m else "",
        category=m.category if m else "", score=m.score if m else 0.0,
        mail_from=m.mail_from if m else "", requested_by=row.requested_by, recipients=rcpts,
        note=row.note or "", requested_at=utc(row.requested_at) or row.requested_at, status=row.status,
        decided_by=row.decided_by or "", decided_at=utc(row.decided_at), decision_note=row.decision_note or "")


def _approvers(db: Database, recipients: list[str]) -> list[str]:
    """Enabled administrators, and domain administrators of a recipient's domain."""
    doms = {r.rpartition("@")[2].lower() for r in recipients}
    with db.session() as s:
        users = list(s.scalars(select(UserRow).where(UserRow.disabled.is_(False),
                                                      UserRow.role.in_(("admin", "domain_admin")))))
    return sorted(u.email for u in users
                  if u.role == "admin" or doms & {d.lower() for d in u.domains or []})


def request_release(config: Config, db: Database, user: Principal, msg_id: str, note: str = "",
                    recipients: list[str] | None = None, actor: str | None = None) -> ReleaseRequestOut:
    """Record `user`'s request to release `msg_id` to their held recipients (or those of
    them given). 409 when they asked already and no one has decided yet."""
    scope = scope_of(user)
    q, mine = services.held_entry(db, scope, msg_id)
    if not mine:
        raise HTTPException(status_code=409, detail=f"message {msg_id} is no longer held for you")
    wanted = [r.lower() for r in recipients] if recipients else mine
    outside = [r for r in wanted if r not in mine]
    if outside:
        raise HTTPException(status_code=403, detail=f"you may not ask for {', '.join(outside)}")
    with db.session() as s:
        dup = s.scalar(select(ReleaseRequestRow).where(
            ReleaseRequestRow.message_id == msg_id, ReleaseRequestRow.requested_by == user.email,
            ReleaseRequestRow.status == "pending"))
        if dup is not None:
            raise HTTPException(status_code=409, detail=(
                f"you asked for its release already (request {dup.id}); an administrator decides"))
        row = ReleaseRequestRow(message_id=msg_id, requested_by=user.email, recipients=wanted,
                                note=note.strip()[:1000], requested_at=datetime.now(UTC), status="pending",
                                decided_by="", decision_note="")
        s.add(row)
        s.flush()
        m = s.get(MessageRow, msg_id)
        out = _out(row, m, user)
    who = actor or user.email
    audit(db, who, "quarantine.request_release", msg_id, request=out.id, recipients=wanted, note=out.note)
    maillog.quarantine_action(msg_id, "release_requested", who, wanted)
    send_notices(config, _approvers(db, wanted), f"Release requested: {out.subject[:120]}",
                 f"{user.email} asks to release a message held as {out.category} "
                 f"(score {out.score:g}) for {', '.join(wanted)}.\n\n"
                 f"From: {out.mail_from}\nSubject: {out.subject}\n"
                 + (f"Their note: {out.note}\n" if out.note else "")
                 + f"\nApprove or deny it on {config.web.public_url.rstrip('/')}/quarantine "
                 "(Release requests). Look at the message's preview first.\n")
    return out


def _visible(viewer: Principal, row: ReleaseRequestRow) -> bool:
    if viewer.is_admin:
        return True
    if viewer.role == "domain_admin":
        return bool(scope_of(viewer).filter_recipients(list(row.recipients or []))) \
            or row.requested_by == viewer.email
    return row.requested_by == viewer.email


def list_requests(db: Database, viewer: Principal, status: str | None = None,
                  limit: int = 200) -> list[ReleaseRequestOut]:
    """Requests the viewer may see, newest first: an administrator all, a domain
    administrator those for their domains, a user their own."""
    q = select(ReleaseRequestRow).order_by(ReleaseRequestRow.id.desc())
    if status:
        q = q.where(ReleaseRequestRow.status == status)
    if not is_manager(viewer):
        q = q.where(ReleaseRequestRow.requested_by == viewer.email)
    out: list[ReleaseRequestOut] = []
    with db.session() as s:
        # Domain administrators' scope is checked in Python (recipients are a JSON list):
        # read in pages until `limit` are found.
        offset = 0
        while len(out) < limit:
            rows = list(s.scalars(q.offset(offset).limit(limit)))
            if not rows:
                break
            offset += len(rows)
            for row in rows:
                if _visible(viewer, row) and len(out) < limit:
                    out.append(_out(row, s.get(MessageRow, row.message_id), viewer))
    return out


def decide(config: Config, db: Database, manager: Principal, request_id: int, approve: bool,
           note: str = "") -> ReleaseRequestOut:
    """Approve (release the message to the request's recipients still held) or deny a
    pending request. 404 outside the manager's scope, 409 when decided already or the
    message is no longer held (the request is then marked withdrawn)."""
    if not is_manager(manager):
        raise HTTPException(status_code=403, detail="administrators only")
    scope = scope_of(manager)
    with db.session() as s:
        row = s.get(ReleaseRequestRow, request_id)
        if row is None or not scope.all and scope.filter_recipients(list(row.recipients or [])) \
                != list(row.recipients or []):
            raise HTTPException(status_code=404, detail=f"no release request {request_id} visible to you")
        if row.status != "pending":
            raise HTTPException(status_code=409, detail=f"request {request_id} was {row.status} already")
        msg_id, wanted, requester = row.message_id, list(row.recipients or []), row.requested_by
    released: list[str] = []
    if approve:
        with db.session() as s:
            qrow = queries.quarantine_entry(s, msg_id)
        still = [r for r in wanted if qrow is not None and qrow.deleted_at is None
                 and r in [h.lower() for h in qrow.held_for or []]]
        if not still:
            _close(db, request_id, "withdrawn", manager.email, "the message was no longer held")
            raise HTTPException(status_code=409, detail=(
                f"message {msg_id} is no longer held for {', '.join(wanted)}; the request is withdrawn"))
        try:
            released = release_message(config, db, msg_id, f"{manager.email} (request {request_id} of "
                                       f"{requester})", still)
        except StoreError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
    status = "approved" if approve else "denied"
    out = _close(db, request_id, status, manager.email, note.strip()[:1000])
    audit(db, manager.email, f"quarantine.release_{status}", msg_id, request=request_id,
          requested_by=requester, recipients=released or wanted, note=out.decision_note)
    outcome = (f"was approved by {manager.email}: the message is released to {', '.join(released)} "
               "and arrives shortly" if approve else f"was denied by {manager.email}: the message "
               "stays in quarantine until it expires")
    send_notices(config, [requester], f"Release {status}: {out.subject[:120]}",
                 f"Your request to release \"{out.subject}\" (from {out.mail_from}) {outcome}."
                 + (f"\nTheir note: {out.decision_note}" if out.decision_note else "") + "\n")
    return out


def _close(db: Database, request_id: int, status: str, by: str, note: str) -> ReleaseRequestOut:
    with db.session() as s:
        row = s.get(ReleaseRequestRow, request_id)
        assert row is not None
        row.status, row.decided_by, row.decided_at, row.decision_note = status, by, datetime.now(UTC), note
        s.flush()
        return _out(row, s.get(MessageRow, row.message_id), None)


def pending_for(db: Database, viewer: Principal) -> int:
    """How many requests wait for this manager's decision (0 for a user)."""
    if not is_manager(viewer):
        return 0
    return len(list_requests(db, viewer, "pending", 1000))
