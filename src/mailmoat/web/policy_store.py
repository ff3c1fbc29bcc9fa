"""The editable policy: a validated, versioned JSON document kept in `policy_versions`.

The console and API write new versions (never update one in place), so every change has an
author, a time and a comment, and a rollback is just a new version with an old document.
Running workers pick changes up without a restart:

    doc = current_overrides(db)             # the newest document, {} when none
    live = apply_policy_document(config, doc)  # a new Config with the document merged in

The gateway calls both periodically (or when `latest_version_id(db)` changes) and swaps the
Config its scanner/policy use. Merging rules: thresholds and lists replace the TOML values
(the bulk settings only when the document has them); `domains` entries replace the TOML entry
for that domain; `recipients` entries are merged key by key over the TOML entry for that
address (which may also hold per-recipient lists the document does not carry); `vips` and
`protected_domains` go to the `[bec]` section.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select

from mailmoat.config import Config, check_threshold_order
from mailmoat.errors import ConfigError, PolicyError
from mailmoat.internal.rules import MAX_RULES, InternalRule, check_rules
from mailmoat.store.db import Database
from mailmoat.store.webmodels import PolicyVersionRow


def _check_senders(values: list[str]) -> list[str]:
    out = []
    for v in values:
        v = v.strip().lower()
        if not v:
            continue
        if v.startswith("@"):
            if "." not in v[1:] or "@" in v[1:] or " " in v:
                raise ValueError(f"not a domain entry: {v!r} (use @example.com)")
        elif v.count("@") != 1 or " " in v or not v.split("@")[0] or "." not in v.split("@")[1]:
            raise ValueError(f"not an address or @domain: {v!r}")
        out.append(v)
    return sorted(set(out))


def _check_address(value: str) -> str:
    """One recipient address, lower-cased; an `@domain` entry belongs in `domains`."""
    (addr,) = _check_senders([value]) or [""]
    if not addr or addr.startswith("@"):
        raise ValueError(f"not an address: {value!r}")
    return addr


def _check_domains(values: list[str]) -> list[str]:
    out = []
    for v in values:
        v = v.strip().lower().lstrip("@")
        if not v:
            continue
        if "." not in v or " " in v or "@" in v or "/" in v:
            raise ValueError(f"not a domain: {v!r}")
        out.append(v)
    return sorted(set(out))


BulkAction = Literal["deliver", "quarantine"]
BULK_KEYS = ("bulk_threshold", "bulk_action")
_BULK_THRESHOLD_HELP = "bulk level (0–9) from which mail is marked bulk; 10: never"


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag_threshold: float = Field(5.0, ge=-1000, le=1000)
    quarantine_threshold: float = Field(10.0, ge=-1000, le=1000)
    reject_threshold: float = Field(15.0, ge=-1000, le=1000)
    # None: the TOML's value. Documents saved before bulk existed lack these keys, and a
    # default of 7/deliver would silently override a TOML that says otherwise.
    bulk_threshold: int | None = Field(None, ge=0, le=10, description=_BULK_THRESHOLD_HELP)
    bulk_action: BulkAction | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        # The rule load_config applies to the TOML: one function for both.
        check_threshold_order(self.tag_threshold, self.quarantine_threshold, self.reject_threshold)
        return self


class DomainOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag_threshold: float | None = Field(None, ge=-1000, le=1000)
    quarantine_threshold: float | None = Field(None, ge=-1000, le=1000)
    reject_threshold: float | None = Field(None, ge=-1000, le=1000)
    subject_prefix: str | None = Field(None, max_length=64)
    bulk_threshold: int | None = Field(None, ge=0, le=10, description=_BULK_THRESHOLD_HELP)
    bulk_action: BulkAction | None = None


def _ordered_override(key: str, o: DomainOverride) -> None:
    try:
        check_threshold_order(o.tag_threshold, o.quarantine_threshold, o.reject_threshold)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


class PolicyDocument(BaseModel):
    """What the console edits. Missing keys fall back to the TOML configuration."""

    model_config = ConfigDict(extra="forbid")

    thresholds: Thresholds = Field(default_factory=Thresholds)
    allow_senders: list[str] = Field(default_factory=list, max_length=10000)
    block_senders: list[str] = Field(default_factory=list, max_length=10000)
    allow_ips: list[str] = Field(default_factory=list, max_length=10000)
    block_ips: list[str] = Field(default_factory=list, max_length=10000)
    vips: list[str] = Field(default_factory=list, max_length=10000,
                            description="names or addresses of people impersonation checks protect")
    protected_domains: list[str] = Field(default_factory=list, max_length=10000)
    domains: dict[str, DomainOverride] = Field(default_factory=dict)
    recipients: dict[str, DomainOverride] = Field(
        default_factory=dict, description="recipient address -> overrides, the same keys as per "
        "domain; users set their own bulk_threshold/bulk_action here")
    internal_rules: list[InternalRule] | None = Field(
        None, max_length=MAX_RULES, description="[[internal.rules]] replacing the "
        "configuration file's while this version is in force; null: the file's rules")

    @field_validator("internal_rules")
    @classmethod
    def _rules(cls, v: list[InternalRule] | None) -> list[InternalRule] | None:
        if v is not None:
            check_rules(v, None)  # the groups are the configuration's: rules_for_config()
        return v

    _senders = field_validator("allow_senders", "block_senders")(classmethod(
        lambda cls, v: _check_senders(v)))
    _doms = field_validator("protected_domains")(classmethod(lambda cls, v: _check_domains(v)))

    @field_validator("allow_ips", "block_ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            item = item.strip()
            if not item:
                continue
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError as exc:
                raise ValueError(f"not an IP address or CIDR: {item!r}") from exc
        return sorted(set(out))

    @field_validator("vips")
    @classmethod
    def _vips(cls, v: list[str]) -> list[str]:
        out = [x.strip() for x in v if x.strip()]
        for x in out:
            if len(x) > 255:
                raise ValueError("a VIP entry is at most 255 characters")
        return sorted(set(out))

    @field_validator("domains")
    @classmethod
    def _domain_keys(cls, v: dict[str, DomainOverride]) -> dict[str, DomainOverride]:
        out = {}
        for k, o in v.items():
            (key,) = _check_domains([k]) or [""]
            if not key:
                raise ValueError("empty domain in per-domain overrides")
            _ordered_override(key, o)
            out[key] = o
        return out

    @field_validator("recipients")
    @classmethod
    def _recipient_keys(cls, v: dict[str, DomainOverride]) -> dict[str, DomainOverride]:
        out = {}
        for k, o in v.items():
            key = _check_address(k)
            _ordered_override(key, o)
            out[key] = o
        return out


def _overrides_of(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """TOML override tables as document entries: only the keys a DomainOverride knows."""
    return {name: DomainOverride.model_validate(
        {k: v for k, v in o.items() if k in DomainOverride.model_fields}).model_dump(exclude_none=True)
        for name, o in entries.items()}


def document_from_config(config: Config) -> PolicyDocument:
    """The TOML's policy as a document: the starting point before any version exists."""
    p = config.policy
    bec = (config.model_extra or {}).get("bec", {}) or {}
    return PolicyDocument.model_validate({
        "thresholds": {"tag_threshold": p.tag_threshold,
                       "quarantine_threshold": p.quarantine_threshold,
                       "reject_threshold": p.reject_threshold,
                       "bulk_threshold": p.bulk_threshold, "bulk_action": p.bulk_action},
        "allow_senders": p.allow_senders, "block_senders": p.block_senders,
        "allow_ips": p.allow_ips, "block_ips": p.block_ips,
        "vips": [str(v) for v in bec.get("vips", [])],
        "protected_domains": list(bec.get("protected_domains", [])),
        "domains": _overrides_of(p.domains),
        "recipients": _overrides_of(p.recipients),
    })


def validate_document(data: dict[str, Any]) -> PolicyDocument:
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"invalid policy document: {exc}") from exc


def save_version(db: Database, doc: PolicyDocument, author: str, comment: str = "") -> PolicyVersionRow:
    with db.session() as s:
        row = PolicyVersionRow(document=doc.model_dump(mode="json"), author=author,
                               created_at=datetime.now(UTC), comment=comment[:2000])
        s.add(row)
        s.flush()
        return row


def list_versions(db: Database, limit: int = 100) -> list[PolicyVersionRow]:
    with db.session() as s:
        return list(s.scalars(select(PolicyVersionRow).order_by(PolicyVersionRow.id.desc()).limit(limit)))


def get_version(db: Database, version_id: int) -> PolicyVersionRow | None:
    with db.session() as s:
        return s.get(PolicyVersionRow, version_id)


def latest_version_id(db: Database) -> int | None:
    with db.session() as s:
        return s.scalar(select(PolicyVersionRow.id).order_by(PolicyVersionRow.id.desc()).limit(1))


def current_overrides(db: Database) -> dict[str, Any]:
    """The newest policy document as a dict, or {} when the console never saved one."""
    with db.session() as s:
        row = s.scalar(select(PolicyVersionRow).order_by(PolicyVersionRow.id.desc()).limit(1))
        return dict(row.document) if row is not None else {}


def stored_document(config: Config, db: Database) -> PolicyDocument:
    """The newest document as saved (bulk settings it leaves to the TOML stay None), or the
    TOML's policy when none was saved: what an edit of one part starts from."""
    doc = current_overrides(db)
    return validate_document(doc) if doc else document_from_config(config)


def current_document(config: Config, db: Database) -> PolicyDocument:
    """The document in force, bulk settings it leaves to the TOML filled in from there, so
    the form and the API show the values that apply."""
    d = stored_document(config, db)
    for key in BULK_KEYS:
        if getattr(d.thresholds, key) is None:
            setattr(d.thresholds, key, getattr(config.policy, key))
    return d


def with_recipient_bulk(doc: PolicyDocument, address: str, threshold: int | None,
                        action: BulkAction | None) -> PolicyDocument:
    """A copy of `doc` with one recipient's own bulk settings set (None: removed, so the
    domain's or global value applies again); the entry's other keys are kept."""
    new = doc.model_copy(deep=True)
    key = _check_address(address)
    entry = new.recipients.get(key, DomainOverride()).model_copy(
        update={"bulk_threshold": threshold, "bulk_action": action})
    if entry.model_dump(exclude_none=True):
        new.recipients[key] = entry
    else:
        new.recipients.pop(key, None)
    return validate_document(new.model_dump(mode="json"))


def apply_policy_document(config: Config, doc: dict[str, Any]) -> Config:
    """A new Config: the TOML config with the policy document merged over it."""
    if not doc:
        return config
    d = validate_document(doc)
    policy = config.policy.model_copy(deep=True)
    policy.tag_threshold = d.thresholds.tag_threshold
    policy.quarantine_threshold = d.thresholds.quarantine_threshold
    policy.reject_threshold = d.thresholds.reject_threshold
    if d.thresholds.bulk_threshold is not None:
        policy.bulk_threshold = d.thresholds.bulk_threshold
    if d.thresholds.bulk_action is not None:
        policy.bulk_action = d.thresholds.bulk_action
    policy.allow_senders = list(d.allow_senders)
    policy.block_senders = list(d.block_senders)
    policy.allow_ips = list(d.allow_ips)
    policy.block_ips = list(d.block_ips)
    domains = {k: dict(v) for k, v in policy.domains.items()}
    for dom, o in d.domains.items():
        domains[dom] = o.model_dump(exclude_none=True)
    policy.domains = domains
    recipients = {k: dict(v) for k, v in policy.recipients.items()}
    for addr, o in d.recipients.items():
        recipients[addr] = recipients.get(addr, {}) | o.model_dump(exclude_none=True)
    policy.recipients = recipients
    new = config.model_copy(deep=True, update={"policy": policy})
    extra = dict(new.model_extra or {})
    bec = dict(extra.get("bec", {}) or {})
    bec["vips"] = list(d.vips)
    bec["protected_domains"] = list(d.protected_domains)
    # model_extra is the live dict of extra fields: update it in place on the copy.
    if new.model_extra is not None:
        new.model_extra["bec"] = bec
        if d.internal_rules is not None:
            internal = dict(new.model_extra.get("internal", {}) or {})
            internal["rules"] = rules_as_config(d.internal_rules)
            new.model_extra["internal"] = internal
    new.source = config.source
    return new


def rules_as_config(rules: list[InternalRule]) -> list[dict[str, Any]]:
    """Rules as `[[internal.rules]]` tables hold them: only what differs from the defaults."""
    return [r.model_dump(mode="json", exclude_defaults=True) | {"name": r.name} for r in rules]


def rules_for_config(config: Config, rules: list[dict[str, Any]]) -> list[InternalRule]:
    """Validate rules as the configuration's `[internal]` section would hold them (their
    groups must exist there or in its groups_file). Raises PolicyError."""
    from mailmoat.internal.check import load_groups
    from mailmoat.internal.settings import InternalSettings

    raw = dict((config.model_extra or {}).get("internal", {}) or {})
    raw["rules"] = rules
    try:
        settings = InternalSettings.model_validate(raw)
        load_groups(config, settings)
    except ValidationError as exc:
        raise PolicyError(_rule_errors(exc)) from exc
    except ConfigError as exc:
        raise PolicyError(str(exc)) from exc
    return settings.rules


def _rule_errors(exc: ValidationError) -> str:
    """A validation error in words: "rule 2 (name 'x'): unknown key 'detectorz' (did you
    mean 'detectors'?)"."""
    import difflib

    out = []
    for e in exc.errors(include_url=False):
        loc = list(e["loc"])
        where = ""
        if loc[:1] == ["rules"] and len(loc) > 1 and isinstance(loc[1], int):
            where = f"rule {loc[1] + 1}: "
            loc = loc[2:]
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and loc:
            near = difflib.get_close_matches(str(loc[-1]), list(InternalRule.model_fields), 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            out.append(f"{where}unknown key {loc[-1]!r}{hint}")
        else:
            key = ".".join(str(x) for x in loc)
            out.append(f"{where}{key + ': ' if key else ''}{msg}")
    return "; ".join(out)


def current_rules(config: Config, db: Database) -> tuple[list[InternalRule], bool]:
    """The rules in force and whether they are the console's (False: the file's)."""
    from mailmoat.internal.settings import InternalSettings

    doc = current_overrides(db)
    if doc.get("internal_rules") is not None:
        return validate_document(doc).internal_rules or [], True
    return config.section("internal", InternalSettings).rules, False


def save_rules(config: Config, db: Database, rules: list[InternalRule] | None, author: str,
               comment: str = "") -> PolicyVersionRow:
    """A new policy version with these rules (None: back to the file's), the rest of the
    document as it is."""
    doc = stored_document(config, db).model_copy(deep=True)
    doc.internal_rules = rules
    return save_version(db, validate_document(doc.model_dump(mode="json")), author, comment)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string is a JSON string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")


def rules_toml(rules: list[InternalRule]) -> str:
    """Rules as the `[[rules]]` tables an administrator edits in the console (the file's
    `[[internal.rules]]` without the section's name)."""
    blocks = []
    for d in rules_as_config(rules):
        lines = ["[[rules]]", f"name = {_toml_value(d.pop('name'))}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items() if v is not None]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def parse_rules_toml(config: Config, text: str) -> list[InternalRule]:
    """The console's rules text, validated as the configuration would be. PolicyError."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}") from exc
    extra = sorted(k for k in data if k != "rules")
    if extra:
        raise PolicyError(f"only [[rules]] tables belong here, not {', '.join(extra)}")
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise PolicyError("write each rule as a [[rules]] table")
    return rules_for_config(config, rules)
