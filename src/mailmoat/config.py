"""Configuration: one TOML file, loaded once into a typed `Config` and passed down.

The core sections (`smtp`, `delivery`, `storage`, `policy`, `web`, `redis`) are typed here.
Each check family owns its own section and validates it itself through
`Config.section(name, Model)`, so a family can grow its settings without touching this file.
Nothing imports a global config: `mailmoat.app.build(config)` wires the parts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailmoat.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class SmtpSettings(Section):
    listen: str = Field("127.0.0.1:2525", description="host:port the SMTP listener binds")
    hostname: str = Field("mx.example.test", description="name in the banner and EHLO reply")
    relay_domains: list[str] = Field(
        default_factory=lambda: ["example.test"],
        description="domains we accept inbound mail for (their mail is relayed downstream)",
    )
    trusted_networks: list[str] = Field(
        default_factory=list, description="CIDRs allowed to relay out without SMTP AUTH"
    )
    internal_domains: list[str] = Field(
        default_factory=list,
        description="domains whose senders are ours (direction outbound/internal); "
        "defaults to relay_domains when empty",
    )
    max_message_size: int = Field(25 * 1024 * 1024, description="bytes; SIZE limit, 552 above")
    max_recipients: int = Field(100, description="recipients per message; 452 above")
    max_connections_per_ip: int = Field(20, description="concurrent connections per client IP")
    max_connections: int = Field(
        1000, ge=0, description="concurrent SMTP connections per gateway process, all clients "
        "together; 421 4.3.2 above; 0: no cap"
    )
    max_bytes_in_transit: int = Field(
        512 * 1024 * 1024, ge=0, description="bytes of mail per gateway process being received, "
        "scanned or spooled at once (declared SIZE, else max_message_size, reserved at DATA); "
        "451 4.3.1 above, so the sender retries later; 0: no cap"
    )
    command_timeout: float = Field(300.0, description="seconds of silence before we hang up")
    data_timeout: float = Field(600.0, description="seconds allowed for the whole DATA phase")
    max_line_length: int = Field(
        10000, description="bytes per line (RFC 5321 says 1000; real mail is sloppier)"
    )
    tls_cert: str = Field("", description="PEM certificate; empty: self-signed in data_dir")
    tls_key: str = Field("", description="PEM private key for tls_cert")
    require_tls_for_auth: bool = Field(True, description="offer AUTH only after STARTTLS")
    auth_users_file: str = Field(
        "", description="file of `user:argon2-hash` lines allowed to relay with SMTP AUTH"
    )
    recipients_file: str = Field(
        "", description="file of valid local recipients, one per line; empty: accept any"
    )
    verify_recipients_downstream: bool = Field(
        False, description="check unknown recipients with RCPT TO at the downstream"
    )
    processes: int = Field(
        1, ge=0, description="intake+delivery processes sharing the listener and the spool; "
        "0: one per CPU"
    )


class DeliverySettings(Section):
    downstream: str = Field("127.0.0.1:2526", description="default route host:port")
    routes: dict[str, str] = Field(
        default_factory=dict, description="recipient domain -> host:port overriding downstream"
    )
    outbound_relay: str = Field(
        "", description="host:port for mail to foreign domains; empty: use downstream"
    )
    tls: str = Field("opportunistic", description="none | opportunistic | required")
    workers: int = Field(8, description="concurrent delivery workers")
    retry_schedule: list[int] = Field(
        default_factory=lambda: [60, 300, 900, 1800, 3600, 7200, 14400],
        description="seconds between tries; the last value repeats",
    )
    max_age: int = Field(5 * 24 * 3600, description="seconds before a deferred message bounces")
    connect_timeout: float = Field(30.0, description="seconds to connect to the next hop")


class StorageSettings(Section):
    data_dir: str = Field("./var", description="spool, quarantine and SQLite database live here")
    database_url: str = Field(
        "", description="empty: SQLite in data_dir; else e.g. postgresql+psycopg://host/db"
    )
    quarantine_retention_days: int = Field(30, description="days quarantined mail is kept")
    log_retention_days: int = Field(90, description="days message-log rows are kept")
    purge_interval_hours: float = Field(
        24.0, gt=0, description="how often the gateway deletes message-log rows and "
        "quarantined mail past their retention (first run a minute after start)"
    )


class PolicySettings(Section):
    tag_threshold: float = Field(5.0, description="score at or above which mail is tagged")
    quarantine_threshold: float = Field(10.0, description="score for quarantine")
    reject_threshold: float = Field(15.0, description="score for an SMTP 5xx reject")
    subject_prefix: str = Field("[SPAM]", description="prefix added to tagged mail; empty: none")
    bulk_threshold: int = Field(
        7, ge=0, le=10, description="bulk level (0–9) at or above which bulk and automated "
        "mail is marked bulk (category bulk, X-Mailmoat-Bulk) and bulk_action applies; 10: "
        "never. Per domain and per recipient like the thresholds above; users move their own "
        "in the console")
    bulk_action: Literal["deliver", "quarantine"] = Field(
        "deliver", description="what happens to mail marked bulk: deliver (with the headers a "
        "client or Sieve rule files by) or quarantine (only where a user or administrator "
        "asks for it)")
    malformed_action: str = Field(
        "quarantine", description="action for mail we cannot parse: quarantine | accept | reject"
    )
    allow_senders: list[str] = Field(default_factory=list, description="addresses or @domains")
    block_senders: list[str] = Field(default_factory=list, description="addresses or @domains")
    allow_ips: list[str] = Field(default_factory=list, description="client IPs or CIDRs")
    block_ips: list[str] = Field(default_factory=list, description="client IPs or CIDRs")
    block_action: str = Field(
        "reject", description="action forced for block-listed mail: reject | quarantine"
    )
    reload_interval: float = Field(
        5.0, description="seconds between the gateway's checks for a new policy version saved "
        "by the web console; 0: never (the console's policy is then read at start only)"
    )
    scores: dict[str, float] = Field(
        default_factory=dict, description="symbol -> weight, overriding the built-in weight"
    )
    domains: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="recipient domain -> overrides of the thresholds and lists above",
    )
    recipients: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="recipient address -> overrides, as for domains"
    )
    outbound: dict[str, Any] = Field(
        default_factory=dict, description="overrides for mail leaving the company"
    )
    internal: dict[str, Any] = Field(
        default_factory=dict, description="overrides for mail between internal users"
    )


class WebSettings(Section):
    listen: str = Field("127.0.0.1:8025", description="host:port of the console and REST API")
    enabled: bool = Field(True, description="serve the console with `mailmoat serve`")
    public_url: str = Field(
        "http://127.0.0.1:8025", description="base URL used in digest links"
    )
    secret_key: str = Field(
        "", description="signs sessions and release links; empty: generated into data_dir"
    )
    session_cookie_secure: bool = Field(False, description="mark the cookie Secure (HTTPS)")


class RedisSettings(Section):
    url: str = Field("", description="redis://host:port/db for shared counters; empty: in-memory")
    key_prefix: str = Field("mailmoat:", description="prefix of every Redis key mailmoat writes")


class ScanSettings(Section):
    check_timeout: float = Field(10.0, description="default seconds a check may take")
    network: bool = Field(True, description="allow DNS and other network look-ups in checks")
    disabled_checks: list[str] = Field(default_factory=list, description="check names to skip")
    max_parse_depth: int = Field(30, description="MIME nesting followed before giving up")
    max_parts: int = Field(1000, description="MIME parts parsed before giving up")
    max_html_depth: int = Field(
        2000, ge=1, description="HTML nesting (and options of a select) read as a tree; deeper "
        "HTML is read by a linear fallback and quarantined (HTML_TOO_DEEP)")
    max_html_tags: int = Field(
        100_000, ge=1, description="HTML tags read as a tree; more are read by a linear "
        "fallback and quarantined (HTML_TOO_MANY_TAGS)")
    parse_timeout: float = Field(
        30.0, gt=0, description="seconds a message's parse may take (large messages parse in "
        "a worker thread); past it the message is quarantined unparsed (PARSE_TIMEOUT)")


class Config(BaseModel):
    """The whole configuration. Family sections stay raw until a family asks for them."""

    model_config = ConfigDict(extra="allow")

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    scan: ScanSettings = Field(default_factory=ScanSettings)

    # Where the file was read from; relative paths inside it are resolved against its folder.
    source: str = ""

    def section(self, name: str, model: type[M]) -> M:
        """Validate the raw `[name]` table against a family's own settings model."""
        raw = (self.model_extra or {}).get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] must be a table")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"invalid [{name}] section: {exc}") from exc

    def resolve_path(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path)
        if p.is_absolute() or not self.source:
            return p
        return Path(self.source).parent / p

    @property
    def data_dir(self) -> Path:
        return self.resolve_path(self.storage.data_dir)

    @property
    def database_url(self) -> str:
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.data_dir / 'mailmoat.db'}"

    @property
    def internal_domains(self) -> list[str]:
        return [d.lower() for d in (self.smtp.internal_domains or self.smtp.relay_domains)]


def load_config(path: str | Path | None) -> Config:
    """Read a TOML file (or defaults when `path` is None) into a validated Config."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return config_from_dict(data, source=str(p.resolve()))


def config_from_dict(data: dict[str, Any], source: str = "") -> Config:
    # Family sections ([content], [deep], …) are validated when their family asks, but a
    # bare key at the top level can never belong to one: reject it instead of ignoring it
    # (`data_dir = "/srv/mail"` above every table would otherwise be silently dropped).
    for key, value in data.items():
        if key not in Config.model_fields and not isinstance(value, dict):
            homes = [name for name, field in Config.model_fields.items()
                     if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
                     and key in field.annotation.model_fields]
            hint = f" (did you mean {key} under [{homes[0]}]?)" if homes else ""
            raise ConfigError(f"unknown top-level key {key!r}: settings belong in a [section]{hint}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    cfg.source = source
    return cfg


DEFAULT_CONFIG_TOML = """\
# mailmoat configuration. Every key is documented in docs/settings.md.
[smtp]
listen = "127.0.0.1:2525"
hostname = "mx.example.test"
relay_domains = ["example.test"]
# Networks whose mail counts as our own (outbound/internal, relayed without SMTP AUTH, no
# SPF/DKIM/DMARC/DNSBL checks). Trust none by default, not even this machine, so what you
# test from here is judged as inbound mail is. Add your mail server's address when it uses
# mailmoat as its smarthost, e.g. ["192.0.2.25/32"].
trusted_networks = []

[delivery]
downstream = "127.0.0.1:2526"

[storage]
data_dir = "./var"
database_url = ""

[policy]
tag_threshold = 5.0
quarantine_threshold = 10.0
reject_threshold = 15.0

[web]
listen = "127.0.0.1:8025"
"""


def write_default_config(path: str | Path) -> Path:
    """Write the default config if the file does not exist yet; return its path."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(DEFAULT_CONFIG_TOML, encoding="utf-8")
    return p
