"""`[recall]` and its connector tables: which mailbox system serves which recipient domain.

Secrets (the IMAP master password, the Graph client secret, the Google service-account key)
are named here by a file or an environment variable, never written in the TOML, and read
only when a connector is built (`secret()`); they are never logged nor returned by the API.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mailmoat.config import Config, Section
from mailmoat.errors import ConfigError

__all__ = [
    "GmailSettings",
    "GraphSettings",
    "ImapSettings",
    "RecallSettings",
    "own_domains",
    "recall_settings",
    "secret",
]


class _Connector(BaseModel):
    """A sub-table of [recall]: strict like a Section (unknown keys refused), but not a
    section of its own."""

    model_config = ConfigDict(extra="forbid")

    domains: list[str] = Field(
        default_factory=list,
        description="recipient domains this connector serves; empty: every domain no other "
        "connector names")
    max_connections: int = Field(
        4, ge=1, le=64, description="mailboxes worked on at once through this connector")
    timeout: float = Field(30.0, gt=0, description="seconds one server round trip may take")
    retries: int = Field(
        3, ge=0, le=10, description="further tries of a mailbox after a temporary failure "
        "(network error, 429, 5xx), with exponential backoff")
    backoff: float = Field(
        1.0, ge=0, description="seconds before the first retry; doubles each time (a "
        "server's Retry-After wins when it gives one)")
    user_format: str = Field(
        "{address}", description="the mailbox name for a recipient: {address}, {local} "
        "(the part before @) and {domain} are replaced")


class ImapSettings(_Connector):
    host: str = Field("127.0.0.1", description="IMAP server")
    port: int = Field(143, ge=1, le=65535, description="IMAP port (993 with tls = \"ssl\")")
    tls: Literal["none", "starttls", "ssl"] = Field(
        "starttls", description="none | starttls | ssl")
    ca_file: str = Field(
        "", description="PEM CA bundle to verify the server; empty: the system's")
    master_user: str = Field(
        "", description="the administrator or master user that logs in for each recipient")
    master_password_file: str = Field(
        "", description="file holding the master user's password (first line)")
    master_password_env: str = Field(
        "", description="environment variable holding it, when no file is named")
    login_format: str = Field(
        "", description="empty: SASL PLAIN with the recipient as authorization identity "
        "(Dovecot, Cyrus); else a LOGIN user name template, e.g. \"{user}*{master}\" "
        "(Dovecot's master-user separator) or \"{master}\\\\{user}\"; {user} and {master} "
        "are replaced")
    folder: str = Field("Recalled", description="folder recalled mail is moved to; created "
                        "when missing")


class GraphSettings(_Connector):
    tenant_id: str = Field("", description="Entra (Azure AD) tenant id or domain")
    client_id: str = Field("", description="application (client) id of the Entra app")
    client_secret_file: str = Field("", description="file holding the app's client secret")
    client_secret_env: str = Field("", description="environment variable holding it")
    authority_url: str = Field(
        "https://login.microsoftonline.com", description="Entra sign-in endpoint (the "
        "tenant id is appended)")
    graph_url: str = Field("https://graph.microsoft.com", description="Microsoft Graph base URL")
    ca_file: str = Field("", description="PEM CA bundle for both URLs; empty: the system's")
    folder: str = Field(
        "Recalled", description="mail folder recalled mail is moved to (created when "
        "missing), or \"deleteditems\" for Deleted Items")


class GmailSettings(_Connector):
    service_account_file: str = Field(
        "", description="service-account key (JSON) with domain-wide delegation")
    service_account_env: str = Field(
        "", description="environment variable holding that JSON, when no file is named")
    api_url: str = Field("https://gmail.googleapis.com", description="Gmail API base URL")
    ca_file: str = Field("", description="PEM CA bundle; empty: the system's")
    mode: Literal["label", "trash"] = Field(
        "label", description="label: take the message out of every label into the recall "
        "label (restore puts its labels back); trash: move it to Trash (restore: untrash)")
    label: str = Field("Recalled", description="the recall label (mode = \"label\"); "
                       "created when missing")


class RecallSettings(Section):
    imap: ImapSettings | None = Field(None, description="IMAP connector (Dovecot, Coremail, "
                                      "Domino, Exchange IMAP)")
    graph: GraphSettings | None = Field(None, description="Microsoft Graph connector "
                                        "(Exchange Online)")
    gmail: GmailSettings | None = Field(None, description="Gmail API connector (Google "
                                        "Workspace)")
    two_person_approval: bool = Field(
        False, description="recalls asked for in the console or API wait until a second "
        "administrator approves them")
    follow_forwards: bool = Field(
        True, description="also recall later internal mail that carries the same Message-ID "
        "or the same attachments (forwards and redirects inside the company)")
    forward_window_days: float = Field(
        7.0, ge=0, description="how long after a message its internal forwards are followed")
    worker_interval: float = Field(
        2.0, gt=0, description="seconds between `mailmoat serve`'s looks for pending jobs")
    lease_seconds: float = Field(
        60.0, ge=1, description="a mailbox a worker holds is taken over by another after "
        "this long without news (a crashed process)")
    max_items: int = Field(
        20_000, ge=1, description="mailbox copies one job may touch; a search matching more "
        "is refused, so a mistyped search cannot empty every mailbox")


def recall_settings(config: Config) -> RecallSettings:
    return config.section("recall", RecallSettings)


def own_domains(config: Config) -> frozenset[str]:
    """The recipient domains whose mailboxes are ours to recall from: `[smtp] relay_domains`
    and `internal_domains`, and every `domains` a recall connector names. A copy delivered
    anywhere else (an outbound message's external recipient) is in another organisation's
    mailbox: recall leaves it out and says so, and never logs in for it."""
    out = {d.lower().strip(".") for d in (*config.smtp.relay_domains, *config.internal_domains)}
    s = recall_settings(config)
    for conn in (s.imap, s.graph, s.gmail):
        if conn is not None:
            out.update(d.lower().strip(".") for d in conn.domains)
    out.discard("")
    return frozenset(out)


def secret(config: Config, file: str, env: str, what: str) -> str:
    """A secret from the file named in config (its first line; a JSON key file whole when
    `what` ends in "key"), or from the environment variable; ConfigError naming the setting,
    never the value, when neither gives one."""
    if file:
        path = config.resolve_path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
        value = text.strip() if what.endswith("key") else (text.splitlines() or [""])[0].strip()
    elif env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is empty or not set")
    else:
        raise ConfigError(f"{what}: name a file or an environment variable")
    if not value:
        raise ConfigError(f"{what}: the file {file} is empty")
    return value
