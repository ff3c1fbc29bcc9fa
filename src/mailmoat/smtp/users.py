"""SMTP AUTH users: a file of `user:argon2-hash` lines (`mailmoat` never stores passwords).

Verifying an argon2 hash is deliberately slow (tens of milliseconds); a successful check is
remembered for the process lifetime under a keyed digest of the pair, so a busy submission
client does not pay it on every connection, while nothing reusable is kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailmoat.errors import ConfigError

log = logging.getLogger(__name__)


def hash_password(password: str) -> str:
    return PasswordHasher().hash(password)


class UserDB:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self._hasher = PasswordHasher()
        self._key = secrets.token_bytes(32)
        self._ok: set[bytes] = set()

    @classmethod
    def load(cls, path: str | Path) -> UserDB:
        users: dict[str, str] = {}
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"[smtp] auth_users_file {path}: {exc}") from exc
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, digest = line.partition(":")
            if not sep or not digest.startswith("$argon2"):
                raise ConfigError(f"{path}:{n}: expected `user:$argon2...` hash")
            users[user.strip()] = digest.strip()
        return cls(users)

    def check(self, user: str, password: str) -> bool:
        digest = self.users.get(user)
        if digest is None:
            return False
        memo = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if memo in self._ok:
            return True
        try:
            self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return False
        self._ok.add(memo)
        return True
