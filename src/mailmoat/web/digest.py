"""Quarantine digests: a mail per user listing what is held for them, with signed,
expiring one-click links to view or release each message without logging in.

A link carries {message id, recipient, action, nonce}, signed with [web] secret_key
(itsdangerous URLSafeTimedSerializer), so it cannot be forged or pointed at another message
or person; a release link's nonce is recorded when used, so it cannot be replayed.
"""

from __future__ import annotations

import html
import logging
import secrets
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailmoat.config import Config, Section
from mailmoat.errors import RelayError
from mailmoat.store import queries
from mailmoat.store.db import Database
from mailmoat.store.quarantine import audit
from mailmoat.store.webmodels import UsedLinkNonceRow, UserRow
from mailmoat.web.auth import secret_key

log = logging.getLogger(__name__)
SALT = "mailmoat.digest-link.v1"
LINK_ACTIONS = ("view", "release")


class DigestSettings(Section):
    """`[digest]`: the per-user quarantine digest."""

    enabled: bool = Field(False, description="send digests on schedule from `mailmoat serve`")
    hour: int = Field(8, ge=0, le=23, description="UTC hour of the daily digest")
    from_address: str = Field("", description="From of digest mails; empty: quarantine@<smtp hostname>")
    link_max_age_hours: int = Field(72, ge=1, le=24 * 30, description="how long digest links work")


class ConsoleSettings(Section):
    """`[console]`: background jobs of the web app."""

    purge_interval_hours: float = Field(24.0, gt=0, description="how often expired quarantine is purged")
    purge_on_start: bool = Field(False, description="also purge once when the app starts")


class LinkError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LinkClaims:
    message_id: str
    recipient: str
    action: str
    nonce: str


def _serializer(config: Config) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(config), salt=SALT)


def make_token(config: Config, message_id: str, recipient: str, action: str) -> str:
    if action not in LINK_ACTIONS:
        raise ValueError(f"unknown link action {action!r}")
    return _serializer(config).dumps({"m": message_id, "r": recipient.lower(), "a": action,
                                      "n": secrets.token_urlsafe(16)})


def link_url(config: Config, token: str) -> str:
    return f"{config.web.public_url.rstrip('/')}/d/{token}"


def read_token(config: Config, token: str) -> LinkClaims:
    max_age = config.section("digest", DigestSettings).link_max_age_hours * 3600
    try:
        data: Any = _serializer(config).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise LinkError("this link has expired; use the newest digest or log in", 410) from exc
    except BadSignature as exc:
        raise LinkError("this link is not valid", 400) from exc
    if not isinstance(data, dict) or data.get("a") not in LINK_ACTIONS:
        raise LinkError("this link is not valid", 400)
    return LinkClaims(message_id=str(data.get("m", "")), recipient=str(data.get("r", "")),
                      action=str(data["a"]), nonce=str(data.get("n", "")))


def nonce_used(db: Database, nonce: str) -> bool:
    with db.session() as s:
        return s.get(UsedLinkNonceRow, nonce) is not None


def claim_nonce(db: Database, claims: LinkClaims) -> None:
    """Record the link as used; a second use (or a race) raises LinkError."""
    try:
        with db.session() as s:
            s.add(UsedLinkNonceRow(nonce=claims.nonce, used_at=datetime.now(UTC),
                                   message_id=claims.message_id, action=claims.action))
    except IntegrityError as exc:
        raise LinkError("this link was already used", 410) from exc


def _from_address(config: Config) -> str:
    return config.section("digest", DigestSettings).from_address or f"quarantine@{config.smtp.hostname}"


def build_digest(config: Config, address: str, held: list[tuple[Any, Any]]) -> EmailMessage:
    """The multipart (text + HTML) digest mail for one address."""
    msg = EmailMessage()
    msg["From"] = _from_address(config)
    msg["To"] = address
    msg["Subject"] = f"Quarantine digest: {len(held)} message{'s' if len(held) != 1 else ''} held for you"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=config.smtp.hostname)
    msg["Auto-Submitted"] = "auto-generated"
    lines = [f"These messages to {address} were held in quarantine.",
             "Release one only if you trust it. Links work without logging in, once, for "
             f"{config.section('digest', DigestSettings).link_max_age_hours} hours.", ""]
    from mailmoat.web.release_requests import USER_MAY_RELEASE  # (it imports this module)

    rows = []
    for q, m in held:
        view = link_url(config, make_token(config, m.id, address, "view"))
        rel = link_url(config, make_token(config, m.id, address, "release"))
        # Phishing and malware: the link asks an administrator (web/routes/links.py).
        label = "Release" if m.category in USER_MAY_RELEASE else "Request release"
        when = m.received_at.strftime("%Y-%m-%d %H:%M")
        lines += [f"- {when}  From: {m.from_header or m.mail_from}", f"  Subject: {m.subject}",
                  f"  Why: {m.category}, score {m.score:g}", f"  View:    {view}", f"  {label}: {rel}", ""]
        rows.append(
            f"<tr><td>{html.escape(when)}</td><td>{html.escape(m.from_header or m.mail_from)}</td>"
            f"<td>{html.escape(m.subject or '')}</td><td>{html.escape(m.category)} ({m.score:g})</td>"
            f"<td><a href=\"{html.escape(view)}\">View</a> · <a href=\"{html.escape(rel)}\">{label}</a></td></tr>")
    msg.set_content("\n".join(lines))
    msg.add_alternative(
        "<html><body style=\"font-family:sans-serif\">"
        f"<p>These messages to <b>{html.escape(address)}</b> were held in quarantine. "
        "Release one only if you trust it.</p>"
        "<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\"><tr><th>Received</th><th>From</th>"
        "<th>Subject</th><th>Why</th><th></th></tr>" + "".join(rows) + "</table></body></html>",
        subtype="html")
    return msg


def collect(config: Config, db: Database) -> list[tuple[str, EmailMessage, int]]:
    """One digest per account that has mail held for its address."""
    out = []
    with db.session() as s:
        users = list(s.scalars(select(UserRow).where(UserRow.disabled.is_(False)).order_by(UserRow.email)))
        for u in users:
            held = queries.held_for_user(s, u.email)
            if held:
                out.append((u.email, build_digest(config, u.email, held), len(held)))
    return out


def _downstream(config: Config) -> tuple[str, int]:
    host, _, port = config.delivery.downstream.rpartition(":")
    return host or "127.0.0.1", int(port or 25)


def send_mails(config: Config, mails: list[tuple[str, EmailMessage]], what: str = "mail") -> None:
    """Hand mails to the downstream in one SMTP session (digests and notices)."""
    host, port = _downstream(config)
    try:
        with smtplib.SMTP(host, port, timeout=config.delivery.connect_timeout) as smtp:
            smtp.ehlo(config.smtp.hostname)
            for addr, msg in mails:
                smtp.send_message(msg, from_addr=_from_address(config), to_addrs=[addr])
    except (OSError, smtplib.SMTPException) as exc:
        raise RelayError(f"cannot send {what} to {host}:{port}: {exc}") from exc


def send_digests(config: Config, db: Database, dry_run: bool = False) -> tuple[int, int]:
    """Send every digest via the downstream; returns (users, messages listed)."""
    digests = collect(config, db)
    if dry_run or not digests:
        return len(digests), sum(n for _, _, n in digests)
    send_mails(config, [(addr, msg) for addr, msg, _ in digests], "digests")
    audit(db, "system", "digest.send", "", users=len(digests), messages=sum(n for _, _, n in digests))
    return len(digests), sum(n for _, _, n in digests)


def notice(config: Config, to: str, subject: str, text: str) -> EmailMessage:
    """A short plain-text notification from the quarantine (release requests and their
    outcome)."""
    msg = EmailMessage()
    msg["From"] = _from_address(config)
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=config.smtp.hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    return msg


def send_notices(config: Config, to: list[str], subject: str, text: str) -> bool:
    """Mail a notice to each address when mail notifications are on ([digest] enabled: the
    same sender and downstream as digests). False when off or the downstream refused; the
    console shows the same news either way, so a failure is logged, not raised."""
    if not to or not config.section("digest", DigestSettings).enabled:
        return False
    try:
        send_mails(config, [(addr, notice(config, addr, subject, text)) for addr in to], "notices")
    except RelayError as exc:
        log.warning("quarantine notice %r not sent: %s", subject, exc)
        return False
    return True
