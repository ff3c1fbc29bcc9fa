"""Accounts and credentials: argon2 password hashes, API tokens (only their hash is kept),
the signing secret, and login throttling (per account and per client IP)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import secrets
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailmoat.config import Config
from mailmoat.errors import StoreError
from mailmoat.store.db import Database
from mailmoat.store.webmodels import ROLES, ApiTokenRow, LoginAttemptRow, UserRow

_hasher = PasswordHasher()
# Verifying against this when the account does not exist keeps timing the same.
_DUMMY_HASH = _hasher.hash("mailmoat-no-such-user")


def set_hash_cost(time_cost: int, memory_cost_kib: int) -> None:
    """Change the argon2 cost of new hashes (tests use a cheap one; old hashes still verify,
    since each hash records its own parameters)."""
    global _hasher, _DUMMY_HASH
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=1)
    _DUMMY_HASH = _hasher.hash("mailmoat-no-such-user")

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
TOKEN_PREFIX = "mm_"
# A token's last_used_at is rewritten at most this often (not on every request).
TOKEN_TOUCH_EVERY = timedelta(minutes=1)

# The console shares the gateway's process and event loop. Password verification (argon2,
# tens to hundreds of ms of CPU and 64 MiB each) runs on these few threads of its own: never
# on the loop, and a login flood cannot take the threads other console requests need.
ARGON2_THREADS = 2
ARGON2_MAX_WAITING = 32  # logins queued beyond this are answered "busy" (LoginBusy)
ARGON2_NICE = 10  # their CPU priority, below SMTP's (Linux; threads argon2 starts inherit it)
_argon2_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_argon2_waiting = 0
_argon2_lock = threading.Lock()


class LoginBusy(Exception):
    """Too many password checks are queued already: try again shortly."""


def _lower_priority() -> None:
    # Each check keeps `parallelism` cores busy: on a small machine a login flood would
    # otherwise take the CPU from the event loop (and from threads holding the GIL it needs).
    # Linux's nice is per thread, and argon2's own threads inherit it.
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_NICE)
        except OSError:
            pass


def _argon2_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _argon2_pool
    with _argon2_lock:
        # One per process: a forked child (multi-process serve) must not use its parent's.
        if _argon2_pool is None or _argon2_pool[0] != os.getpid():
            _argon2_pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
                ARGON2_THREADS, thread_name_prefix="mailmoat-argon2", initializer=_lower_priority))
        return _argon2_pool[1]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as the routes see it."""

    id: int
    email: str
    role: str
    domains: tuple[str, ...] = field(default_factory=tuple)
    via: str = "session"  # session | token | link

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def label(self) -> str:
        return f"{self.email} ({self.via})"


def principal_of(row: UserRow, via: str) -> Principal:
    return Principal(id=row.id, email=row.email, role=row.role,
                     domains=tuple(d.lower() for d in row.domains or ()), via=via)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and bool(stored)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password_off_loop(stored: str, password: str) -> bool:
    """`verify_password` on the argon2 threads (ARGON2_THREADS at most at once); LoginBusy
    when ARGON2_MAX_WAITING checks are waiting already."""
    global _argon2_waiting
    with _argon2_lock:
        if _argon2_waiting >= ARGON2_MAX_WAITING:
            raise LoginBusy()
        _argon2_waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _argon2_executor(), verify_password, stored, password)
    finally:
        with _argon2_lock:
            _argon2_waiting -= 1


def cookie_secure(config: Config) -> bool:
    """Whether the session cookie carries `Secure`: when asked to, and always when the
    console's public URL is https (a cookie sent in clear text over http could be stolen;
    behind an https URL no browser needs it without TLS)."""
    return config.web.session_cookie_secure or \
        config.web.public_url.strip().lower().startswith("https://")


def secret_key(config: Config) -> str:
    """[web] secret_key, or one generated once into data_dir/web_secret (mode 0600)."""
    if config.web.secret_key:
        return config.web.secret_key
    path = config.data_dir / "web_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    config.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def create_user(db: Database, email: str, role: str, password: str | None,
                domains: list[str] | None = None) -> UserRow:
    email = email.strip().lower()
    if "@" not in email:
        raise StoreError(f"not an email address: {email!r}")
    if role not in ROLES:
        raise StoreError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    doms = sorted({d.strip().lower() for d in (domains or []) if d.strip()})
    if role == "domain_admin" and not doms:
        raise StoreError("a domain admin needs at least one domain (--domains a.test,b.test)")
    with db.session() as s:
        if s.scalar(select(UserRow).where(UserRow.email == email)) is not None:
            raise StoreError(f"user {email} already exists")
        row = UserRow(email=email, role=role, domains=doms,
                      password_hash=hash_password(password) if password else "",
                      created_at=datetime.now(UTC), disabled=False, session_epoch=0)
        s.add(row)
        s.flush()
        return row


def create_token(db: Database, user_id: int, name: str = "") -> str:
    """A new API token; the plain value is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        if s.get(UserRow, user_id) is None:
            raise StoreError(f"no user with id {user_id}")
        s.add(ApiTokenRow(user_id=user_id, token_hash=token_hash(token), name=name,
                          created_at=datetime.now(UTC)))
    return token


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_for_token(db: Database, token: str) -> UserRow | None:
    with db.session() as s:
        tok = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash(token),
                                                 ApiTokenRow.revoked_at.is_(None)))
        if tok is None:
            return None
        user = s.get(UserRow, tok.user_id)
        if user is None or user.disabled:
            return None
        now = datetime.now(UTC)
        last = tok.last_used_at
        if last is not None and last.tzinfo is None:  # SQLite keeps no time zone
            last = last.replace(tzinfo=UTC)
        if last is None or now - last >= TOKEN_TOUCH_EVERY:  # not a write per request
            tok.last_used_at = now
        return user


def throttled(db: Database, email: str, ip: str) -> bool:
    """True when the account or the client IP has too many recent failures."""
    since = datetime.now(UTC) - FAILURE_WINDOW
    with db.session() as s:
        by_user = s.scalar(select(func.count()).select_from(LoginAttemptRow).where(
            LoginAttemptRow.email == email.lower(), LoginAttemptRow.at >= since)) or 0
        by_ip = s.scalar(select(func.count()).select_from(LoginAttemptRow).where(
            LoginAttemptRow.ip == ip, LoginAttemptRow.at >= since)) or 0
    return by_user >= MAX_FAILURES or by_ip >= MAX_FAILURES * 4


def record_failure(db: Database, email: str, ip: str) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(LoginAttemptRow(at=now, email=email.lower()[:512], ip=ip))
        # Keep the table small: old attempts no longer count.
        s.execute(delete(LoginAttemptRow).where(LoginAttemptRow.at < now - FAILURE_WINDOW * 4))


def authenticate(db: Database, email: str, password: str) -> UserRow | None:
    with db.session() as s:
        user = s.scalar(select(UserRow).where(UserRow.email == email.strip().lower()))
    if user is None or user.disabled:
        verify_password("", password)
        return None
    return user if verify_password(user.password_hash, password) else None


def _login_user(db: Database, email: str) -> UserRow | None:
    with db.session() as s:
        return s.scalar(select(UserRow).where(UserRow.email == email.strip().lower()))


async def authenticate_off_loop(db: Database, email: str, password: str) -> UserRow | None:
    """`authenticate` for the console: the lookup on the request threadpool, argon2 on its
    own threads (`verify_password_off_loop`), nothing on the event loop."""
    user = await run_in_threadpool(_login_user, db, email)
    if user is None or user.disabled:
        await verify_password_off_loop("", password)
        return None
    return user if await verify_password_off_loop(user.password_hash, password) else None


MIN_PASSWORD = 8


def check_password(password: str) -> str:
    """The password, or a StoreError saying in words why it is refused (never empty)."""
    if len(password) < MIN_PASSWORD:
        raise StoreError(f"the password must be at least {MIN_PASSWORD} characters")
    if not password.strip():
        raise StoreError("the password cannot be only spaces")
    return password


def find_user(db: Database, email: str) -> UserRow:
    with db.session() as s:
        row = s.scalar(select(UserRow).where(UserRow.email == email.strip().lower()))
    if row is None:
        raise StoreError(f"no user {email.strip().lower()}")
    return row


def _enabled_admins(s: Session, but: int) -> int:
    return s.scalar(select(func.count()).select_from(UserRow).where(
        UserRow.role == "admin", UserRow.disabled.is_(False), UserRow.id != but)) or 0


def set_password(db: Database, user_id: int, password: str) -> UserRow:
    """A new password; every session of the account ends (its tokens stay)."""
    pw_hash = hash_password(check_password(password))
    with db.session() as s:
        row = s.get(UserRow, user_id)
        if row is None:
            raise StoreError(f"no user with id {user_id}")
        row.password_hash = pw_hash
        row.session_epoch += 1
        s.flush()
        return row


def update_user(db: Database, user_id: int, *, role: str | None = None,
                domains: list[str] | None = None, disabled: bool | None = None,
                keep_an_admin: bool = True) -> tuple[UserRow, dict[str, object]]:
    """Change role, domains or the disabled flag; returns the row and what changed
    ({field: [old, new]}). Disabling ends the account's sessions at once, and its tokens
    stop working (user_for_token checks `disabled`). With `keep_an_admin`, the last enabled
    administrator cannot be demoted or disabled: nobody could manage accounts afterwards
    except from the command line."""
    with db.session() as s:
        row = s.get(UserRow, user_id)
        if row is None:
            raise StoreError(f"no user with id {user_id}")
        new_role = role if role is not None else row.role
        if new_role not in ROLES:
            raise StoreError(f"unknown role {new_role!r}; choose one of {', '.join(ROLES)}")
        new_doms = sorted({d.strip().lower() for d in domains if d.strip()}) if domains is not None \
            else list(row.domains or [])
        if new_role == "domain_admin" and not new_doms:
            raise StoreError("a domain admin needs at least one domain")
        new_disabled = row.disabled if disabled is None else disabled
        loses_admin = row.role == "admin" and not row.disabled and (new_role != "admin" or new_disabled)
        if keep_an_admin and loses_admin and _enabled_admins(s, row.id) == 0:
            raise StoreError(f"{row.email} is the last enabled administrator; make another "
                             "administrator first")
        changed: dict[str, object] = {}
        if new_role != row.role:
            changed["role"] = [row.role, new_role]
            row.role = new_role
        if new_doms != list(row.domains or []):
            changed["domains"] = [list(row.domains or []), new_doms]
            row.domains = new_doms
        if new_disabled != row.disabled:
            changed["disabled"] = [row.disabled, new_disabled]
            row.disabled = new_disabled
        if changed.get("disabled") or "role" in changed:
            row.session_epoch += 1  # a changed role starts with a fresh session
        s.flush()
        return row, changed


def delete_user(db: Database, user_id: int, keep_an_admin: bool = True) -> str:
    """Remove the account and its API tokens (the audit log keeps its name)."""
    with db.session() as s:
        row = s.get(UserRow, user_id)
        if row is None:
            raise StoreError(f"no user with id {user_id}")
        if keep_an_admin and row.role == "admin" and not row.disabled and _enabled_admins(s, row.id) == 0:
            raise StoreError(f"{row.email} is the last enabled administrator; make another "
                             "administrator first")
        s.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == row.id))
        email = row.email
        s.delete(row)
        return email
