"""Configuration: one TOML file, loaded once into a typed `Config` and passed down.

The core sections (`smtp`, `delivery`, `storage`, `policy`, `web`, `redis`, `scan`, `log`) are
typed here. Each check family owns its own section model and reads it through
`Config.section(name, Model)`, so a family can grow its settings without touching this file;
`FAMILY_SECTIONS` names every such model, so that `load_config` validates the whole file at
once: an unknown section or key, a value outside its few allowed words (`Literal`), inverted
thresholds or a score for a symbol no check declares is an error naming the file, the line
and the closest valid name, never a silently ignored setting.
Nothing imports a global config: `mailmoat.app.build(config)` wires the parts.
"""

from __future__ import annotations

import difflib
import importlib
import re
import tomllib
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from mailmoat.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


# Settings whose value is one of a few words: anything else is refused at load.
TlsMode = Literal["none", "opportunistic", "required"]
MalformedAction = Literal["quarantine", "accept", "reject"]
BlockAction = Literal["reject", "quarantine"]
BulkAction = Literal["deliver", "quarantine"]


def check_threshold_order(tag: float | None, quarantine: float | None,
                          reject: float | None) -> None:
    """The one ordering rule of thresholds, for the TOML (globally and in each override) and
    for the console's policy documents: tag <= quarantine <= reject among those given (an
    override may set only some; None: not set). Raises ValueError."""
    given = [(n, x) for n, x in (("tag", tag), ("quarantine", quarantine), ("reject", reject))
             if x is not None]
    if [x for _, x in given] != sorted(x for _, x in given):
        values = ", ".join(f"{n} {x:g}" for n, x in given)
        raise ValueError(f"thresholds must be ordered: tag <= quarantine <= reject ({values})")


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
    max_connections_per_ip: int = Field(20, description="concurrent connections per client IP "
                                        "outside trusted_networks")
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
    tls: TlsMode = Field("opportunistic", description="none | opportunistic | required")
    workers: int = Field(8, description="concurrent delivery workers")
    retry_schedule: list[int] = Field(
        default_factory=lambda: [60, 300, 900, 1800, 3600, 7200, 14400],
        description="seconds between tries; the last value repeats",
    )
    max_age: int = Field(5 * 24 * 3600, description="seconds before a deferred message bounces")
    keep_delivered_hours: float = Field(
        48.0, ge=0, le=24 * 90, description="hours the bytes of delivered mail stay in the "
        "spool's done/ folder, for tracing and for `mailmoat intel rescan` (which reaches "
        "back this far); disk: about a day's mail volume per 24 hours; 0 keeps nothing")
    connect_timeout: float = Field(30.0, description="seconds to connect to the next hop")
    max_bytes_in_memory: int = Field(
        16 * 1024 * 1024, ge=0, description="bytes of waiting mail the intake hands to delivery "
        "in memory (counted with what the workers are sending); past it mail waits on disk "
        "only and is read back when its attempt starts; 0: always read back"
    )
    max_messages_in_memory: int = Field(
        1000, ge=0, description="messages held that way (handed over plus being sent)"
    )
    max_backlog: int = Field(
        50_000, ge=0, description="messages waiting for delivery in one process (queued, "
        "being sent, deferred) at which new mail gets 451 4.3.1 at MAIL FROM; 0: no limit"
    )
    max_backlog_bytes: int = Field(
        0, ge=0, description="the same limit in bytes of those messages; 0: no limit"
    )


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


class DirectionOverride(Section):
    """`[policy.outbound]`, `[policy.internal]`: what policy.decide reads for a direction."""

    # Strict: `tag_threshold = true` or `= "high"` is a mistake, not 1.0 (ints are fine).
    tag_threshold: StrictFloat | None = None
    quarantine_threshold: StrictFloat | None = None
    reject_threshold: StrictFloat | None = None
    subject_prefix: str | None = None
    bulk_threshold: StrictInt | None = Field(None, ge=0, le=10)
    bulk_action: BulkAction | None = None

    @model_validator(mode="after")
    def _ordered(self) -> DirectionOverride:
        check_threshold_order(self.tag_threshold, self.quarantine_threshold,
                              self.reject_threshold)
        return self


class TargetOverride(DirectionOverride):
    """`[policy.domains."x"]`, `[policy.recipients."a@x"]`: also the lists scan.lists reads."""

    allow_senders: list[str] | None = None
    block_senders: list[str] | None = None
    allow_ips: list[str] | None = None
    block_ips: list[str] | None = None
    block_action: BlockAction | None = None


def _each_override(model: type[Section], tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate override tables against `model`, keeping them plain dicts (decide.py and
    scan.lists read them as mappings); errors keep the table's name in their location."""
    out: dict[str, dict[str, Any]] = {}
    errors: list[Any] = []
    for name, table in tables.items():
        try:
            out[name] = model.model_validate(table).model_dump(exclude_unset=True)
        except ValidationError as exc:
            errors += [{**e, "loc": (name, *e["loc"])} for e in exc.errors()]
    if errors:
        raise ValidationError.from_exception_data(model.__name__, errors)
    return out


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
    bulk_action: BulkAction = Field(
        "deliver", description="what happens to mail marked bulk: deliver (with the headers a "
        "client or Sieve rule files by) or quarantine (only where a user or administrator "
        "asks for it)")
    malformed_action: MalformedAction = Field(
        "quarantine", description="action for mail we cannot parse: quarantine | accept | reject"
    )
    allow_senders: list[str] = Field(default_factory=list, description="addresses or @domains")
    block_senders: list[str] = Field(default_factory=list, description="addresses or @domains")
    allow_ips: list[str] = Field(default_factory=list, description="client IPs or CIDRs")
    block_ips: list[str] = Field(default_factory=list, description="client IPs or CIDRs")
    block_action: BlockAction = Field(
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

    @field_validator("domains", "recipients")
    @classmethod
    def _target_overrides(cls, v: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return _each_override(TargetOverride, v)

    @field_validator("outbound", "internal")
    @classmethod
    def _direction_override(cls, v: dict[str, Any]) -> dict[str, Any]:
        return DirectionOverride.model_validate(v).model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _ordered(self) -> PolicySettings:
        check_threshold_order(self.tag_threshold, self.quarantine_threshold,
                              self.reject_threshold)
        return self


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
    check_timeout: float = Field(
        10.0, gt=0, description="seconds a check may take before it yields `<FAMILY>_FAIL`, "
        "for every check whose family section sets no timeout of its own ([auth], "
        "[reputation], [antivirus], [llm] and [deep] do)")
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


class LogSettings(Section):
    format: Literal["text", "json"] = Field(
        "text", description="lines of the mail log (logger `mailmoat.mail`, one per message "
        "and per delivery attempt): `text` (Postfix-style key=value) or `json` (one object "
        "per line); see docs/gateway.md, Logs")


class Config(BaseModel):
    """The whole configuration. Family sections are validated at load (`config_from_dict`)
    and kept raw in `model_extra`; a family reads its typed view with `section()`."""

    model_config = ConfigDict(extra="allow")

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    scan: ScanSettings = Field(default_factory=ScanSettings)
    log: LogSettings = Field(default_factory=LogSettings)

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
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return config_from_dict(data, source=str(p.resolve()), text=text)


# --- the load-time contract ------------------------------------------------------------------

# Sections owned by a family or another part of mailmoat: name -> "module:Model", the model
# its `Config.section(name, Model)` call reads. load_config validates each section the file
# has against its model, importing only that module (Section classes are cheap: no model or
# rule file is loaded); a section named nowhere here or in Config is refused.
# tests/test_config.py checks that every Section subclass and every section() call is here.
FAMILY_SECTIONS: dict[str, str] = {
    "auth": "mailmoat.scan.auth:AuthSettings",
    "reputation": "mailmoat.scan.reputation:ReputationSettings",
    "phishing": "mailmoat.scan.urls:PhishingSettings",
    "bec": "mailmoat.scan.impersonation:BecSettings",
    "attachments": "mailmoat.scan.attachments:AttachmentSettings",
    "bulk": "mailmoat.scan.bulk:BulkSettings",
    "antivirus": "mailmoat.scan.antivirus:AntivirusSettings",
    "content": "mailmoat.ml.scoring:ContentSettings",
    "deep": "mailmoat.scan.deep:DeepSettings",
    "llm": "mailmoat.scan.llm:LlmSettings",
    "evidence": "mailmoat.scan.evidence:EvidenceSettings",
    "dns": "mailmoat.dns:DnsSettings",
    "dkim_signing": "mailmoat.dkimsign:DkimSigningSettings",
    "arc_sealing": "mailmoat.dkimsign:ArcSealingSettings",
    "digest": "mailmoat.web.digest:DigestSettings",
    "console": "mailmoat.web.digest:ConsoleSettings",
    "internal": "mailmoat.internal.settings:InternalSettings",
    "recall": "mailmoat.recall.settings:RecallSettings",
    "intel": "mailmoat.intel.settings:IntelSettings",
}


def family_section_model(name: str) -> type[BaseModel] | None:
    """The settings model of family section `name`, or None when no family owns it."""
    spec = FAMILY_SECTIONS.get(name)
    if spec is None:
        return None
    module, _, cls = spec.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), cls)
    return model


def core_sections() -> dict[str, type[Section]]:
    """The sections typed in this file, by name."""
    return {name: f.annotation for name, f in Config.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}


def known_symbols() -> set[str]:
    """Every symbol a `[policy] scores` entry may name: the `symbols` of every check class
    of every family in the registry, and the `<FAMILY>_FAIL` symbol of each family. Imports
    the family modules (not their models), so it is only asked when `scores` is set."""
    from mailmoat.scan.base import Check
    from mailmoat.scan.pipeline import fail_symbol
    from mailmoat.scan.registry import FAMILY_MODULES

    for module in FAMILY_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    todo: list[type[Check]] = [Check]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        names.update(cls.symbols)
        if cls.family or cls.name:
            names.add(fail_symbol(cls.family or cls.name))
    return names


# Free-form tables of a core section whose entries have a model of their own.
_NESTED: dict[tuple[type[BaseModel], str], Any] = {
    (PolicySettings, "domains"): dict[str, TargetOverride],
    (PolicySettings, "recipients"): dict[str, TargetOverride],
    (PolicySettings, "outbound"): DirectionOverride,
    (PolicySettings, "internal"): DirectionOverride,
}

_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_TABLE_LINE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"^\s*({_DOTTED})\s*=")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in re.findall(_PART, text))


class _Source:
    """Where a setting is in the TOML text: a line-by-line search for `[table]`,
    `[[table]]` and `key =` lines (good enough for error messages)."""

    def __init__(self, name: str, text: str | None) -> None:
        self.name = name
        self.text_lines = (text or "").splitlines()
        self.lines: dict[tuple[str | int, ...], int] = {}
        self.tables: set[int] = set()
        table: tuple[str | int, ...] = ()
        arrays: dict[tuple[str | int, ...], int] = {}
        for n, line in enumerate(self.text_lines, 1):
            if m := _TABLE_LINE.match(line):
                path: tuple[str | int, ...] = _dotted(m.group(2))
                self._mark(path, n, 1)
                if m.group(1) == "[[":
                    arrays[path] = arrays.get(path, -1) + 1
                    path = (*path, arrays[path])
                    self.lines.setdefault(path, n)
                table = path
                self.tables.add(n)
            elif m := _KEY_LINE.match(line):
                self._mark((*table, *_dotted(m.group(1))), n, len(table) + 1)

    def _mark(self, path: tuple[str | int, ...], n: int, start: int) -> None:
        for k in range(start, len(path) + 1):
            self.lines.setdefault(path[:k], n)

    def line(self, loc: Sequence[str | int]) -> int | None:
        loc = tuple(loc)
        for k in range(len(loc), 0, -1):
            n = self.lines.get(loc[:k])
            if n is None:
                continue
            last = loc[-1]
            if k < len(loc) and isinstance(last, str):
                # Inside an inline table or array (`scores = { X = 3 }`): the key's own line.
                name = re.escape(last)
                key = re.compile(rf"""(?:^|[\s{{,.])(?:{name}|"{name}"|'{name}')\s*=""")
                for i in range(n, len(self.text_lines) + 1):
                    if i > n and i in self.tables:
                        break
                    if key.search(self.text_lines[i - 1]):
                        return i
            return n
        return None

    def at(self, loc: Sequence[str | int]) -> str:
        """' in FILE line N', as much of it as is known."""
        n = self.line(loc) if self.text_lines else None
        if self.name and n:
            return f" in {self.name} line {n}"
        if self.name:
            return f" in {self.name}"
        return f" (line {n})" if n else ""


def _unwrap(ann: Any) -> Any:
    """X from `X | None`."""
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        return args[0] if len(args) == 1 else ann
    return ann


def _model_at(ann: Any, path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that validates the table at `path` below `ann`, if there is one."""
    for step in path:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(str(step))
            if field is None:
                return None
            ann = _NESTED.get((ann, str(step)), field.annotation)
        elif get_origin(ann) is dict:
            ann = get_args(ann)[1]
        elif get_origin(ann) in (list, tuple):
            ann = get_args(ann)[0]
        else:
            return None
    ann = _unwrap(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _table(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for p in path:
        if isinstance(p, int):
            parts[-1] += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", p):
            parts.append(p)
        else:
            parts.append(f'"{p}"')
    return "[" + ".".join(parts) + "]"


def _closest(name: str, valid: Sequence[str], cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=cutoff)
    return found[0] if found else None


def _explain(exc: ValidationError, model: type[BaseModel], prefix: tuple[str, ...],
             src: _Source) -> list[str]:
    """A pydantic error as lines that name the table, the key, the line and a fix."""
    out = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        key = loc[-1]
        if err["type"] == "extra_forbidden" and isinstance(key, str):
            table = loc[:-1]
            owner = _model_at(model, table[len(prefix):])
            near = _closest(key, list(owner.model_fields)) if owner else None
            hint = f" (did you mean {near!r}?)" if near else ""
            out.append(f"unknown key {key!r} in {_table(table)}{src.at(loc)}{hint}")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "literal_error":  # "must be reject or quarantine", as the docs say
            msg = "must be " + re.sub(r"'([^']*)'", r"\1", str((err.get("ctx") or {})["expected"]))
        value = err.get("input")
        if len(loc) > 1 and not isinstance(value, dict | list):
            what = f"{_table(loc[:-1])} {loc[-1]} = {value!r}"
        else:
            what = _table(loc)
        out.append(f"{what}{src.at(loc)}: {msg}")
    return out


def config_from_dict(data: dict[str, Any], source: str = "", text: str | None = None) -> Config:
    """Validate parsed TOML against the whole contract: the core sections, every family
    section the data has, override tables, threshold order and `[policy] scores` symbols.
    Every mistake found is reported at once; `text` (the TOML source) lets them name lines."""
    src = _Source(source, text)
    core = core_sections()
    problems: list[str] = []
    known: dict[str, Any] = {}
    for key, value in data.items():
        if key in core:
            known[key] = value  # validated with Config below
            continue
        model = family_section_model(key)
        if model is not None:
            if not isinstance(value, dict):
                problems.append(f"[{key}]{src.at((key,))} must be a table")
                continue
            known[key] = value  # kept raw: a family reads it with Config.section()
            try:
                model.model_validate(value)
            except ValidationError as exc:
                problems += _explain(exc, model, (key,), src)
        elif not isinstance(value, dict):
            # A bare key at the top level can never belong to a section: `data_dir =
            # "/srv/mail"` above every table would otherwise be silently dropped.
            homes = [name for name, m in core.items() if key in m.model_fields] or [
                name for name in FAMILY_SECTIONS
                if key in (family_section_model(name) or Section).model_fields]
            hint = f" (did you mean {key} under [{homes[0]}]?)" if homes else ""
            problems.append(f"unknown top-level key {key!r}{src.at((key,))}: settings belong "
                            f"in a [section]{hint}")
        else:
            near = _closest(key, [*core, *FAMILY_SECTIONS])
            hint = f" (did you mean [{near}]?)" if near else ""
            problems.append(f"unknown section [{key}]{src.at((key,))}{hint}")
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(known)
    except ValidationError as exc:
        problems += _explain(exc, Config, (), src)
    if cfg is not None and cfg.policy.scores:
        symbols = sorted(known_symbols())
        for name in cfg.policy.scores:
            if name not in set(symbols):
                near = _closest(name, symbols) or _closest(name, symbols, cutoff=0.3)
                hint = f" (did you mean {near}?)" if near else ""
                problems.append(f"unknown symbol {name} in [policy] scores"
                                f"{src.at(('policy', 'scores', name))}{hint}: no check "
                                "declares it, so its weight would never apply")
    if problems or cfg is None:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
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
