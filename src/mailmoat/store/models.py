"""Tables of the message log, delivery index and quarantine store.

One schema for SQLite (default) and PostgreSQL. The message log doubles as the delivery
index that recall searches (Message-ID, sender, recipients, URL domains, attachment hashes),
so those columns are indexed. JSON columns hold what is read as a whole (symbols, URLs).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class MessageRow(Base):
    """One message as received: envelope, client, verdict, and what the checks found."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the X-Mailmoat-ID
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    direction: Mapped[str] = mapped_column(String(16), index=True)
    client_ip: Mapped[str] = mapped_column(String(64), default="", index=True)
    client_name: Mapped[str] = mapped_column(String(255), default="")
    helo: Mapped[str] = mapped_column(String(255), default="")
    auth_user: Mapped[str] = mapped_column(String(255), default="")
    mail_from: Mapped[str] = mapped_column(String(512), default="", index=True)
    from_header: Mapped[str] = mapped_column(String(512), default="", index=True)
    from_domain: Mapped[str] = mapped_column(String(255), default="", index=True)
    subject: Mapped[str] = mapped_column(String(1000), default="")
    message_id: Mapped[str] = mapped_column(String(998), default="", index=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    action: Mapped[str] = mapped_column(String(16), index=True)
    category: Mapped[str] = mapped_column(String(16), index=True)
    # 0–9 for bulk and automated mail the evidence gate found consistent (Verdict.bulk_level),
    # NULL otherwise: the console shows it next to the category.
    bulk_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    symbols: Mapped[list] = mapped_column(JSON, default=list)  # [{name, score, category, reason}]
    urls: Mapped[list] = mapped_column(JSON, default=list)  # [url, …] (capped)
    url_domains: Mapped[list] = mapped_column(JSON, default=list)
    attachments: Mapped[list] = mapped_column(JSON, default=list)  # [{filename, type, size, sha256}]
    headers: Mapped[dict] = mapped_column(JSON, default=dict)  # headers of interest
    scan_ms: Mapped[float] = mapped_column(Float, default=0.0)
    node: Mapped[str] = mapped_column(String(255), default="")
    # The sending account of internal and outbound mail (mailmoat.internal.identity), ""
    # otherwise: what an incident lists an account's mail by.
    sender_account: Mapped[str] = mapped_column(String(255), default="", index=True)

    recipients: Mapped[list[RecipientRow]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="RecipientRow.id")

    __table_args__ = (
        Index("ix_messages_category_received", "category", "received_at"),
        Index("ix_messages_action_received", "action", "received_at"),
    )


class ObservableRow(Base):
    """One searchable fact of a logged message: the delivery index that recall and threat
    intelligence match indicators against. The message row keeps URLs, domains and hashes
    as JSON for display; JSON cannot be indexed on SQLite, and a retro-hunt of 10,000
    indicators over a million messages must be index look-ups, so each fact is a row.

    `kind` is one of OBSERVABLE_KINDS (recall/index.py); `value` is normalised there (lower
    case hosts, addresses and hashes), so matching is equality on (kind, value)."""

    __tablename__ = "message_observables"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(1000))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_observables_kind_value_received", "kind", "value", "received_at"),
    )


class RecipientRow(Base):
    """Per-recipient verdict and delivery state; `status` follows the delivery lifecycle:
    queued → delivered | deferred → … | failed (bounced) | quarantined | rejected | released."""

    __tablename__ = "recipients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(512), index=True)
    domain: Mapped[str] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_response: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    message: Mapped[MessageRow] = relationship(back_populates="recipients")


class DeliveryEventRow(Base):
    """History of every delivery attempt, for the message page and for debugging."""

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(512))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    response: Mapped[str] = mapped_column(Text, default="")


class QuarantineRow(Base):
    """A held message: its bytes live in data_dir/quarantine/<id>.eml (or in `content` for
    shared-storage deployments on PostgreSQL)."""

    __tablename__ = "quarantine"

    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), default="")
    quarantined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_by: Mapped[str] = mapped_column(String(255), default="")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    mail_from: Mapped[str] = mapped_column(String(512), default="")
    rcpt_tos: Mapped[list] = mapped_column(JSON, default=list)
    # Which recipients the quarantine holds it for (a message may be held for some only).
    held_for: Mapped[list] = mapped_column(JSON, default=list)


class AuditRow(Base):
    """Every administrative action: who, what, on which object, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(1024), default="")
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class SenderMemoryRow(Base):
    """How often a sender has written to a recipient, and how it was judged: the basis of
    first-contact and known-correspondent signals (reputation and BEC checks)."""

    __tablename__ = "sender_memory"

    sender: Mapped[str] = mapped_column(String(512), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(512), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    messages: Mapped[int] = mapped_column(Integer, default=0)
    clean: Mapped[int] = mapped_column(Integer, default=0)
    bad: Mapped[int] = mapped_column(Integer, default=0)
    # True when the recipient here is an outside party our user wrote to (we sent to them).
    outbound: Mapped[bool] = mapped_column(Boolean, default=False)


class SentMessageRow(Base):
    """Message-IDs of mail our users sent out, so a reply to it can be recognised
    (In-Reply-To / References) by the reputation memory."""

    __tablename__ = "sent_message_ids"

    message_id: Mapped[str] = mapped_column(String(998), primary_key=True)  # without <>
    sender: Mapped[str] = mapped_column(String(512), default="")
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ReleaseRequestRow(Base):
    """A recipient's request to release a held message they may not release themselves
    (phishing, malware: web.services.RELEASE_NEEDS_APPROVAL); an administrator approves
    (the message is released to `recipients`) or denies it. `status`: pending → approved |
    denied | withdrawn (the message left quarantine otherwise)."""

    __tablename__ = "quarantine_release_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    requested_by: Mapped[str] = mapped_column(String(512), index=True)
    recipients: Mapped[list] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    decided_by: Mapped[str] = mapped_column(String(255), default="")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")


class InternalBaselineRow(Base):
    """One account's learned sending behaviour (mailmoat.internal.baseline), written behind
    the in-memory copy every `[internal] sync_seconds`; `@peers` holds the organisation's."""

    __tablename__ = "internal_baselines"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[dict] = mapped_column(JSON, default=dict)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class InternalRestrictionRow(Base):
    """An account held, throttled or suspended (by the gateway or an administrator), and
    its release; the gateway reads rows changed since its last look."""

    __tablename__ = "internal_restrictions"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # hold | throttle | suspend
    reply: Mapped[str] = mapped_column(String(8), default="4xx")
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    actor: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_by: Mapped[str] = mapped_column(String(255), default="")
    grace_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class InternalIncidentRow(Base):
    """A flagged account: why, when, what was done; the messages are those of the message
    log with this `sender_account` from `window_start` on."""

    __tablename__ = "internal_incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255), index=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | closed
    action: Mapped[str] = mapped_column(String(16), default="")
    score: Mapped[float] = mapped_column(Float, default=0.0)
    signals: Mapped[list] = mapped_column(JSON, default=list)  # [{name, score, reason}]
    flagged_messages: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_by: Mapped[str] = mapped_column(String(255), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    node: Mapped[str] = mapped_column(String(255), default="")


class RecallJobRow(Base):
    """A recall (or the restore that undoes one): a durable job the worker runs item by item
    (recall/jobs.py). `state`: awaiting_approval → pending → running → done, or denied."""

    __tablename__ = "recall_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # recall | restore
    state: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    # console, cli, api, intel:<feed>/<indicator>, undo:<job id>
    source: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str] = mapped_column(String(255), default="")  # approved or denied by
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    undo_of: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # The domains the requester may act on (domain administrators); [] for everyone.
    domains: Mapped[list] = mapped_column(JSON, default=list)


class RecallItemRow(Base):
    """One mailbox copy of one message in a recall job, and what happened to it: `status`
    pending | working | moved | restored | not_found | failed; `moved` lists each copy the
    recall moved ({folder it came from, handle in the recall folder, restored}), which is
    what a restore moves back."""

    __tablename__ = "recall_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("recall_jobs.id", ondelete="CASCADE"),
                                        index=True)
    # Not a foreign key: the message log's retention may delete the message row, and the
    # record of what was recalled stays.
    mailmoat_id: Mapped[str] = mapped_column(String(32), index=True)
    message_id: Mapped[str] = mapped_column(String(998), default="")
    recipient: Mapped[str] = mapped_column(String(512), index=True)
    connector: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    moved: Mapped[list] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str] = mapped_column(String(128), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # For a restore item: the recall item whose copies it moves back.
    source_item: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # Why the copy is in the job: "" for the messages asked for, else how it was found
    # ("forward of <id>: same attachment").
    via: Mapped[str] = mapped_column(String(255), default="")


class IntelFeedRow(Base):
    """One threat-intelligence feed's poll state: where the next poll starts (`cursor`:
    TAXII's last X-TAXII-Date-Added-Last, MISP's newest event timestamp) and how the last
    poll went, for the console and `mailmoat intel feeds`."""

    __tablename__ = "intel_feeds"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="")
    cursor: Mapped[str] = mapped_column(String(255), default="")
    last_poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status: Mapped[str] = mapped_column(String(16), default="never")  # ok | error | never
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_added: Mapped[int] = mapped_column(Integer, default=0)
    last_changed: Mapped[int] = mapped_column(Integer, default=0)
    last_withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    last_skipped: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[list] = mapped_column(JSON, default=list)  # the first reasons, as text


class IntelIndicatorRow(Base):
    """One matchable value of an indicator from a feed: `kind` and `value` as the delivery
    index holds them (recall/index.py normalise), so a retro-hunt is equality look-ups.
    `key` (sha256 of source id, kind and value) makes upserts idempotent per feed without
    a unique index over a 1000-character value."""

    __tablename__ = "intel_indicators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    feed: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(1000))
    # Further (kind, value) facts the same message must have (an AND in a STIX pattern).
    also: Mapped[list] = mapped_column(JSON, default=list)
    confidence: Mapped[int] = mapped_column(Integer, default=50)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str] = mapped_column(String(500), default="")
    group_id: Mapped[str] = mapped_column(String(64), default="")  # MISP event uuid
    source_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    __table_args__ = (
        Index("ux_intel_indicators_feed_key", "feed", "key", unique=True),
        Index("ix_intel_indicators_kind_value", "kind", "value"),
    )


class IntelHuntRow(Base):
    """What one indicator's retro-hunt matched and what was done with it: handed to recall
    automatically (`mode` auto), queued for approval (queued), or nothing delivered to
    recall (none). The console shows it as the "why" of an automatic recall."""

    __tablename__ = "intel_hunts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    feed: Mapped[str] = mapped_column(String(64), index=True)
    indicator_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_id: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(1000))
    confidence: Mapped[int] = mapped_column(Integer, default=0)
    mode: Mapped[str] = mapped_column(String(16), index=True)  # auto | queued | none
    # pending (not handed yet) | handed | failed (recall refused; retried) | nothing
    status: Mapped[str] = mapped_column(String(16), index=True)
    message_ids: Mapped[list] = mapped_column(JSON, default=list)
    recipients: Mapped[list] = mapped_column(JSON, default=list)  # [[mailmoat id, address]]
    job_id: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    origin: Mapped[str] = mapped_column(String(16), default="feed")  # feed | manual | rescan
