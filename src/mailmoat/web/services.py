"""What the API, the console and digest links do, in one place: look a message up within
the caller's scope, release, delete, report (feeding learning), count the spool, and read
and set a user's own bulk settings."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib
import inspect
import logging
import os
import threading
from typing import Any, cast

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from mailmoat.config import Config
from mailmoat.errors import MailmoatError, PolicyError, StoreError
from mailmoat.message.model import domain_of
from mailmoat.policy.decide import thresholds_for
from mailmoat.store import queries
from mailmoat.store.db import Database
from mailmoat.store.quarantine import audit, delete_message, load_raw, release_message
from mailmoat.store.queries import Scope
from mailmoat.web import policy_store
from mailmoat.web.auth import Principal
from mailmoat.web.policy_store import BulkAction
from mailmoat.web.schemas import (
    ActionOut,
    BulkSettingsOut,
    DeliveryEventOut,
    MessageDetail,
    QuarantineInfo,
    RecipientOut,
    SettingSource,
    SymbolOut,
)

log = logging.getLogger(__name__)

SPOOL_STATES = ("incoming", "active", "deferred", "shunt")

# Learning is CPU work in Python (it holds the GIL the event loop needs too): reports learn
# one at a time, on one thread of their own, so a burst of reports is one busy thread rather
# than many, and takes none of the threadpool's threads while it waits.
_learn_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_learn_lock = threading.Lock()


def _learn_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _learn_pool
    with _learn_lock:
        if _learn_pool is None or _learn_pool[0] != os.getpid():  # not a forked parent's
            _learn_pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="mailmoat-learn"))
        return _learn_pool[1]


def not_found(msg_id: str) -> HTTPException:
    # The same answer whether the message does not exist or is outside the caller's scope.
    return HTTPException(status_code=404, detail=f"no message {msg_id} visible to you")


def message_detail(db: Database, scope: Scope, msg_id: str) -> MessageDetail:
    with db.session() as s:
        m = queries.message_visible(s, scope, msg_id)
        if m is None:
            raise not_found(msg_id)
        rcpts = queries.recipients_of(s, msg_id)
        events = queries.delivery_events(s, msg_id)
        q = queries.quarantine_entry(s, msg_id)
    if not scope.all:
        rcpts = [r for r in rcpts if scope.allows_recipient(r.address)]
        events = [e for e in events if scope.allows_recipient(e.address)]
    syms = []
    for sym in m.symbols or []:
        if isinstance(sym, dict):
            syms.append(SymbolOut(name=str(sym.get("name", "")), score=float(sym.get("score") or 0),
                                  category=str(sym.get("category", "") or ""),
                                  group=str(sym.get("group", "") or ""),
                                  reason=str(sym.get("reason", "") or "")))
    syms.sort(key=lambda x: -abs(x.score))
    from mailmoat.web.schemas import MessageSummary

    base = MessageSummary.of(m).model_dump()
    return MessageDetail(**base, client_name=m.client_name or "", helo=m.helo or "",
                         auth_user=m.auth_user or "", reason=m.reason or "",
                         headers=dict(m.headers or {}), symbols=syms,
                         urls=[str(u) for u in (m.urls or [])][:200],
                         attachments=[a for a in (m.attachments or []) if isinstance(a, dict)],
                         scan_ms=m.scan_ms or 0.0, recipients=[RecipientOut.of(r) for r in rcpts],
                         events=[DeliveryEventOut.of(e) for e in events],
                         quarantine=QuarantineInfo.of(q, scope) if q is not None else None)


def held_entry(db: Database, scope: Scope, msg_id: str) -> tuple[Any, list[str]]:
    """The quarantine row and the held recipients the caller may act for; 404 otherwise."""
    with db.session() as s:
        m = queries.message_visible(s, scope, msg_id)
        q = queries.quarantine_entry(s, msg_id)
    if m is None or q is None or q.deleted_at is not None:
        raise not_found(msg_id)
    return q, scope.filter_recipients(list(q.held_for or []))


def release(config: Config, db: Database, actor: str, scope: Scope, msg_id: str,
            recipients: list[str] | None) -> list[str]:
    q, mine = held_entry(db, scope, msg_id)
    if not mine:
        if q.released_at is not None or not q.held_for:
            raise HTTPException(status_code=409, detail=f"message {msg_id} was already released")
        raise HTTPException(status_code=403, detail="it is not held for anyone you may act for")
    wanted = [r.lower() for r in recipients] if recipients else mine
    outside = [r for r in wanted if r not in mine]
    if outside:
        raise HTTPException(status_code=403, detail=f"you may not release to {', '.join(outside)}")
    try:
        return release_message(config, db, msg_id, actor, wanted)
    except StoreError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


def delete(config: Config, db: Database, actor: str, scope: Scope, msg_id: str) -> None:
    q, mine = held_entry(db, scope, msg_id)
    if not scope.all:
        others = [r for r in (q.held_for or []) if r.lower() not in mine]
        if others or not mine:
            raise HTTPException(status_code=403,
                                detail="it is also held for people outside your scope; ask an administrator")
    try:
        delete_message(config, db, msg_id, actor)
    except StoreError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


def raw_bytes(config: Config, db: Database, scope: Scope, msg_id: str) -> bytes:
    held_entry(db, scope, msg_id)
    try:
        return load_raw(config, db, msg_id)
    except StoreError as exc:
        raise HTTPException(status_code=410, detail=str(exc)) from exc


def unlearn(config: Config, db: Database, actor: str, scope: Scope, msg_id: str) -> ActionOut:
    """Take back what reports and releases of this held message taught the model (its
    weight changes and lesson-memory entries, `mailmoat.ml.learn.unlearn`); audited."""
    raw = raw_bytes(config, db, scope, msg_id)
    try:
        res = unlearn_lessons(config, db, actor, {"sha256": hashlib.sha256(raw).hexdigest()},
                              target=msg_id, action="quarantine.unlearn")
    except HTTPException as exc:
        if exc.status_code != 404:
            raise
        raise HTTPException(status_code=404, detail="nothing was learned from this message") from exc
    return ActionOut(ok=True, learned=False, message=(
        f"Took back what this message taught: {res.lessons} remembered lesson(s), "
        f"{res.changes} weight change(s)."))


def unlearn_lessons(config: Config, db: Database, actor: str, which: dict[str, str | None],
                    domain: str | None = None, target: str = "",
                    action: str = "lessons.unlearn") -> Any:
    """`mailmoat.ml.learn.unlearn` for the console and the API: the lessons matching
    `which` (sha256, taught_by, taught_before) in one scope; audited as `action`. Returns
    the UnlearnResult; HTTP errors: 404 nothing matched, 422 bad criteria, 501 learning
    unavailable, 500 the learned files could not be changed."""
    mod = _learning()
    if mod is None:
        raise HTTPException(status_code=501, detail="learning is not available on this installation")
    try:
        res = mod.unlearn(config, mod.LessonFilter(**which), actor, domain or None)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except (MailmoatError, OSError) as exc:
        audit(db, actor, action, target, which=which, domain=domain or "", error=str(exc))
        raise HTTPException(status_code=500, detail=f"could not take the lessons back: {exc}") from exc
    audit(db, actor, action, target, which=res.which, domain=res.domain, messages=res.messages,
          changes=res.changes, rows=res.rows, lessons=res.lessons)
    return res


def lesson_records(config: Config, limit: int, taught_by: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` lines of the learning audit (lessons and undo records), newest
    first; with `taught_by`, only that actor's lessons."""
    mod = _learning()
    if mod is None:
        return []
    out: list[dict[str, Any]] = []
    undone: set[tuple[str, str]] = set()  # (sha256, domain) taken back by a newer record
    for r in reversed(mod.read_audit(config)):
        if r.get("undo"):
            undone |= {(m, r.get("domain", "")) for m in r.get("messages") or []}
        else:
            r = {**r, "taken_back": (r.get("sha256"), r.get("domain", "")) in undone}
        if not taught_by or (not r.get("undo") and r.get("actor") == taught_by):
            out.append(r)
    return out[:limit]


def _learning() -> Any | None:
    """The learning module (`mailmoat.ml.learn`), or None where this installation lacks it:
    the console then still records reports in the audit log."""
    try:
        return importlib.import_module("mailmoat.ml.learn")
    except ImportError:
        return None


def _learner() -> Any | None:
    fn = getattr(_learning(), "learn", None)
    return fn if callable(fn) else None


async def report(config: Config, db: Database, actor: str, scope: Scope, msg_id: str,
                 label: str) -> ActionOut:
    """Feed the held message to learning as `label` (spam|ham); always audited. Async, but
    nothing runs on the event loop the gateway's SMTP shares: the lookup and the audit row
    on the threadpool, the learning (its first call loads the model) on the learn thread."""
    raw = await run_in_threadpool(raw_bytes, config, db, scope, msg_id)
    fn = await run_in_threadpool(_learner)  # the first call imports mailmoat.ml.learn
    if fn is None:
        await run_in_threadpool(audit, db, actor, "quarantine.report", msg_id, label=label, learned=False,
                                note="learning module mailmoat.ml.learn is not available")
        return ActionOut(ok=True, learned=False, message=(
            f"Reported as {label} and recorded in the audit log; learning is not available on "
            "this installation, so the model was not updated."))
    try:
        res = await asyncio.get_running_loop().run_in_executor(
            _learn_executor(), fn, config, raw, label, actor)
        if inspect.isawaitable(res) or asyncio.iscoroutine(res):  # an async learner
            res = await res
    except (MailmoatError, ValueError, OSError) as exc:
        await run_in_threadpool(audit, db, actor, "quarantine.report", msg_id, label=label,
                                learned=False, error=str(exc))
        return ActionOut(ok=False, learned=False, message=f"Reported as {label}, but learning failed: {exc}")
    await run_in_threadpool(audit, db, actor, "quarantine.report", msg_id, label=label, learned=True)
    what = ("its near-copies and, a little, its sender's other mail will count as legitimate"
            if label == "ham" else f"its near-copies will be treated as {label}")
    return ActionOut(ok=True, learned=True, message=f"Reported as {label}; learned: {what}.")


def queue_depth(config: Config) -> dict[str, int]:
    root = config.data_dir / "spool"
    out = {}
    for state in SPOOL_STATES:
        d = root / state
        try:
            out[state] = sum(1 for p in d.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            out[state] = 0
    return out


def own_addresses(user: Principal) -> tuple[str, ...]:
    """The addresses whose own settings this account may change: its own, whatever its role
    (a domain's or everyone's bulk settings are policy, edited by administrators)."""
    return (user.email.lower(),)


def bulk_settings(config: Config, db: Database, address: str) -> BulkSettingsOut:
    """The bulk settings the gateway applies to `address` with the newest policy version:
    its own override, else its domain's, else the global one."""
    live = policy_store.apply_policy_document(config, policy_store.current_overrides(db))
    t = thresholds_for(live.policy, address)
    own = live.policy.recipients.get(address, {})
    dom = live.policy.domains.get(domain_of(address), {})

    def source(key: str) -> SettingSource:
        return "recipient" if key in own else "domain" if key in dom else "global"

    return BulkSettingsOut(address=address, bulk_threshold=t.bulk, threshold_from=source("bulk_threshold"),
                           bulk_action=t.bulk_action, action_from=source("bulk_action"),
                           own_threshold=own.get("bulk_threshold"), own_action=own.get("bulk_action"),
                           version=policy_store.latest_version_id(db))


def parse_bulk(threshold: str, action: str) -> tuple[int, BulkAction]:
    """The console form's values, or a PolicyError that says what is wrong in words."""
    try:
        level = int(threshold.strip())
    except ValueError:
        level = -1
    if not 0 <= level <= 10:
        raise PolicyError(f"bulk threshold {threshold[:20]!r}: give a whole number from 0 "
                          "(mark the most mail bulk) to 10 (never mark mail bulk)")
    if action not in ("deliver", "quarantine"):
        raise PolicyError(f"bulk action {action[:20]!r}: choose deliver or quarantine")
    return level, cast(BulkAction, action)


def save_own_bulk(config: Config, db: Database, user: Principal, address: str | None,
                  threshold: int | None, action: BulkAction | None) -> BulkSettingsOut:
    """Set (or with None, None clear) the caller's own bulk settings: a new policy version
    with `recipients[address]` changed, audited as `policy.bulk`; the gateway applies it on
    its next policy reload. 403 for anyone else's address."""
    addr = (address or user.email).strip().lower()
    if addr not in own_addresses(user):
        raise HTTPException(status_code=403, detail="you may change only your own bulk settings")
    doc = policy_store.with_recipient_bulk(policy_store.stored_document(config, db), addr, threshold, action)
    what = (f"bulk threshold {threshold}, bulk action {action}" if threshold is not None
            else "bulk settings back to the default")
    row = policy_store.save_version(db, doc, user.email, f"{addr}: {what} (own setting)")
    audit(db, user.email, "policy.bulk", f"policy:{row.id}", address=addr,
          bulk_threshold=threshold, bulk_action=action)
    return bulk_settings(config, db, addr)
