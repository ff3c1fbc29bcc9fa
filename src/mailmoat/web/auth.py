"""Accounts and credentials: argon2 password hashes, API tokens (only their hash is kept),
the signing secret, and login throttling (per account and per client IP)."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select

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
        tok.last_used_at = datetime.now(UTC)
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
