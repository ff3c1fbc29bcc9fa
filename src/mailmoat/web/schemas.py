"""Request and response models of the REST API (they make /openapi.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mailmoat.scan.base import Category
from mailmoat.store.models import DeliveryEventRow, MessageRow, QuarantineRow, RecipientRow
from mailmoat.store.queries import Scope
from mailmoat.web.policy_store import BulkAction

# The message categories, in the order the console lists them: the scanner's enum is the one
# source, so a new category (bulk was one) reaches filters and schemas by itself.
CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)
# Where a setting in force comes from: the address's own override, its domain's, or [policy].
SettingSource = Literal["recipient", "domain", "global"]


def utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=512)
    password: str = Field(max_length=1024)


class UserPublic(BaseModel):
    id: int
    email: str
    role: str
    domains: list[str]
    disabled: bool = False


class LoginOut(BaseModel):
    user: UserPublic
    csrf_token: str


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=512, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    role: Literal["admin", "domain_admin", "user"]
    domains: list[str] = Field(default_factory=list, max_length=1000)
    password: str | None = Field(None, min_length=8, max_length=1024)


class UserUpdate(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "domain_admin", "user"] | None = None
    domains: list[str] | None = Field(None, max_length=1000)
    disabled: bool | None = Field(None, description="true: cannot log in, sessions and tokens "
                                  "stop working")


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=8, max_length=1024)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=255)


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked: bool = False


class TokenCreated(BaseModel):
    token: str = Field(description="shown once; only its hash is stored")
    name: str


class SymbolOut(BaseModel):
    name: str
    score: float
    category: str = ""
    group: str = ""
    reason: str = ""


class RecipientOut(BaseModel):
    address: str
    domain: str
    action: str
    status: str
    attempts: int
    last_response: str
    delivered_at: datetime | None

    @classmethod
    def of(cls, r: RecipientRow) -> RecipientOut:
        return cls(address=r.address, domain=r.domain, action=r.action, status=r.status,
                   attempts=r.attempts or 0, last_response=r.last_response or "",
                   delivered_at=utc(r.delivered_at))


class DeliveryEventOut(BaseModel):
    address: str
    at: datetime
    status: str
    response: str

    @classmethod
    def of(cls, e: DeliveryEventRow) -> DeliveryEventOut:
        return cls(address=e.address, at=utc(e.at) or e.at, status=e.status, response=e.response or "")


class MessageSummary(BaseModel):
    id: str
    received_at: datetime
    direction: str
    client_ip: str
    mail_from: str
    from_header: str
    subject: str
    message_id: str
    score: float
    action: str
    category: str = Field(description=" | ".join(CATEGORIES))
    bulk_level: int | None = Field(None, description="0–9 for bulk and automated mail, else null")
    size: int

    @classmethod
    def of(cls, m: MessageRow) -> MessageSummary:
        return cls(id=m.id, received_at=utc(m.received_at) or m.received_at, direction=m.direction,
                   client_ip=m.client_ip or "", mail_from=m.mail_from or "",
                   from_header=m.from_header or "", subject=m.subject or "",
                   message_id=m.message_id or "", score=m.score or 0.0, action=m.action,
                   category=m.category, bulk_level=m.bulk_level, size=m.size or 0)


class QuarantineInfo(BaseModel):
    quarantined_at: datetime
    expires_at: datetime
    held_for: list[str]
    released_at: datetime | None
    released_by: str
    deleted_at: datetime | None

    @classmethod
    def of(cls, q: QuarantineRow, scope: Scope) -> QuarantineInfo:
        """The hold as `scope` may see it: only the held recipients it covers (the others
        may be blind copies), and who released it only where that names no one else."""
        return cls(quarantined_at=utc(q.quarantined_at) or q.quarantined_at,
                   expires_at=utc(q.expires_at) or q.expires_at,
                   held_for=scope.filter_recipients(list(q.held_for or [])),
                   released_at=utc(q.released_at),
                   released_by=scope.visible_actor(q.released_by or "", list(q.rcpt_tos or [])),
                   deleted_at=utc(q.deleted_at))


class MessageDetail(MessageSummary):
    client_name: str
    helo: str
    auth_user: str
    reason: str
    headers: dict[str, Any]
    symbols: list[SymbolOut]
    urls: list[str]
    attachments: list[dict[str, Any]]
    scan_ms: float
    recipients: list[RecipientOut]
    events: list[DeliveryEventOut]
    quarantine: QuarantineInfo | None = None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class QuarantineItem(BaseModel):
    message: MessageSummary
    quarantine: QuarantineInfo


class QuarantinePage(BaseModel):
    items: list[QuarantineItem]
    next_cursor: str | None = None


class PreviewOut(BaseModel):
    subject: str
    from_: str = Field(alias="from")
    to: str
    date: str
    text: str
    html_sanitized: str = Field(description="nh3-cleaned HTML; never render it outside a sandbox")
    attachments: list[dict[str, Any]]
    error: str = ""

    model_config = ConfigDict(populate_by_name=True)


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipients: list[str] | None = Field(None, max_length=1000,
                                         description="default: every held recipient you may act for")
    report_not_spam: bool = Field(False, description="also feed the message to learning as ham")


class RequestReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=1000, description="why you trust it, for the administrator")
    recipients: list[str] | None = Field(None, max_length=1000,
                                         description="default: every held recipient you may act for")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=1000, description="told to the requester")


class ReleaseRequestOut(BaseModel):
    id: int
    message_id: str
    subject: str
    category: str
    score: float
    mail_from: str
    requested_by: str
    recipients: list[str]
    note: str
    requested_at: datetime
    status: Literal["pending", "approved", "denied", "withdrawn"]
    decided_by: str
    decided_at: datetime | None
    decision_note: str


class ActionOut(BaseModel):
    ok: bool
    message: str
    recipients: list[str] = Field(default_factory=list)
    learned: bool | None = None


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Literal["spam", "ham"]


class LessonRecord(BaseModel):
    """One line of the learning audit (data_dir/model/learn-audit.jsonl): a lesson, or with
    `undo` lessons taken back."""

    model_config = ConfigDict(extra="allow")
    time: str
    actor: str
    domain: str = ""
    undo: bool = False
    sha256: str | None = None
    label: str | None = None
    steps: int | None = None
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    which: dict[str, str | None] | None = None
    messages: list[str] | None = None
    lessons: int | None = None
    changes: int | None = None
    taken_back: bool = False  # a lesson a newer undo record took back
    taught: list[tuple[str, str, float]] | None = Field(
        None, description="what the lesson taught, strongest first: [kind, words, how far it "
        "moved this message's log-odds towards the label]")


class LessonsPage(BaseModel):
    items: list[LessonRecord]


class UnlearnIn(BaseModel):
    """Which lessons to take back: every criterion given must hold (at least one)."""

    model_config = ConfigDict(extra="forbid")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    taught_by: str | None = Field(None, min_length=1, max_length=320)
    taught_before: str | None = Field(None, min_length=4, max_length=40,
                                      description="UTC date or time, ISO 8601")
    domain: str | None = Field(None, min_length=1, max_length=253,
                               description="the lessons' recipient domain; none: global lessons")


class UnlearnOut(BaseModel):
    messages: list[str]
    lessons: int
    changes: int
    rows: int


class PurgeOut(BaseModel):
    purged: int


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class PolicyOut(BaseModel):
    version: int | None
    document: dict[str, Any]


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document: dict[str, Any]
    comment: str = Field("", max_length=2000)


class PolicyVersionOut(BaseModel):
    id: int
    author: str
    created_at: datetime
    comment: str
    document: dict[str, Any] | None = None


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field("", max_length=2000)


class DigestSendOut(BaseModel):
    users: int
    messages: int
    dry_run: bool


class Count(BaseModel):
    key: str
    count: int


class DashboardOut(BaseModel):
    hours: int
    total: int
    buckets: list[str]
    volume: list[dict[str, Any]]
    volume_by_action: list[dict[str, Any]]
    by_action: list[Count]
    by_category: list[Count]
    threats: int = Field(description="messages of a threat category: not clean and not bulk")
    bulk: int = Field(description="messages marked bulk (not a threat)")
    top_recipients: list[Count]
    top_blocked_senders: list[Count]
    top_blocked_domains: list[Count]
    by_group: list[Count]
    scan_ms_avg: float
    scan_ms_p95: float
    failed_recipients: int
    deferred_recipients: int
    queue: dict[str, int]


class BulkSettingsOut(BaseModel):
    """A recipient's bulk settings in force, and where each comes from."""

    address: str
    bulk_threshold: int = Field(description="bulk level (0–9) from which mail is marked bulk; 10: never")
    threshold_from: SettingSource
    bulk_action: BulkAction
    action_from: SettingSource
    own_threshold: int | None = Field(None, description="the address's own setting, if any")
    own_action: BulkAction | None = None
    version: int | None = Field(None, description="the policy version in force")


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bulk_threshold: int = Field(ge=0, le=10, description="0–10: lower marks more mail bulk; 10: never")
    bulk_action: BulkAction
    address: str | None = Field(None, max_length=512, description="default: your own address; "
                                "nobody may set another's")
