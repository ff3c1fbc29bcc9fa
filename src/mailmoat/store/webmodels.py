"""Tables of the web console: accounts, API tokens, policy versions, one-click link nonces,
login attempts; and the composite indexes that keep message-log searches fast.

They register on the same `Base` as store/models.py, so `Database.create_schema()` creates
them once this module is imported (mailmoat.web.app imports it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailmoat.store.models import Base, MessageRow, RecipientRow

ROLES = ("admin", "domain_admin", "user")


class UserRow(Base):
    """A console account. `domains` matter for domain admins; `email` for end users."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(512), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    domains: Mapped[list] = mapped_column(JSON, default=list)
    password_hash: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(default=False)
    # Bumped on password change / logout-everywhere: older session cookies stop working.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)


class ApiTokenRow(Base):
    """A Bearer token for scripts; only its SHA-256 is stored."""

    __tablename__ = "web_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PolicyVersionRow(Base):
    """One version of the editable policy document (thresholds, lists, VIPs, per-domain)."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document: Mapped[dict] = mapped_column(JSON)
    author: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    comment: Mapped[str] = mapped_column(Text, default="")


class UsedLinkNonceRow(Base):
    """A one-click digest link that has been used: it cannot be replayed."""

    __tablename__ = "web_used_link_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    message_id: Mapped[str] = mapped_column(String(32), default="")
    action: Mapped[str] = mapped_column(String(16), default="")


class LoginAttemptRow(Base):
    """Failed logins, counted per account and per client IP for throttling."""

    __tablename__ = "web_login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    email: Mapped[str] = mapped_column(String(512), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)


# Composite indexes for keyset paging of the message log (newest first, ties by id) and
# for the common filtered searches; attached to the core tables' metadata.
_m = MessageRow.__table__.c
_r = RecipientRow.__table__.c
Index("ix_messages_received_id", _m.received_at, _m.id)
Index("ix_messages_from_domain_received", _m.from_domain, _m.received_at)
Index("ix_messages_direction_received", _m.direction, _m.received_at)
Index("ix_recipients_address_message", _r.address, _r.message_id)
Index("ix_recipients_domain_message", _r.domain, _r.message_id)
