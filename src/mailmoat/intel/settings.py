"""`[intel]` and its `[[intel.feeds]]`: which threat-intelligence feeds the gateway reads.

Secrets (a TAXII password, a MISP API key) are named, never written, in the TOML: a file
(`password_file`, `api_key_file`) or an environment variable (`password_env`,
`api_key_env`). `secret()` reads them when a poll starts; nothing here keeps or logs them.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailmoat.config import Config, Section
from mailmoat.errors import MailmoatError

__all__ = ["FeedKind", "FeedSettings", "IndicatorKindSetting", "IntelError", "IntelSettings",
           "intel_settings", "secret"]

FeedKind = Literal["taxii", "stix", "misp", "misp-feed", "list", "csv"]
IndicatorKindSetting = Literal["auto", "url", "domain", "ip", "email", "sha256", "subject"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IntelError(MailmoatError):
    """A feed could not be read or a secret could not be found (the message says which)."""


class FeedSettings(BaseModel):
    """One `[[intel.feeds]]` table: as strict as a Section (unknown keys are errors), but a
    table inside `[intel]`, not a section of its own."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the feed's name: in symbols, hunts and the console "
                      "(letters, digits, . _ -; unique)")
    kind: FeedKind = Field(description="taxii | stix | misp | misp-feed | list | csv")
    enabled: bool = Field(True, description="poll this feed")
    url: str = Field("", description="taxii: the API root (…/api1/); misp: the MISP server; "
                     "stix, list, csv: an http(s) URL of the file; misp-feed: the feed's base "
                     "URL (manifest.json beside the event files)")
    path: str = Field("", description="stix, list, csv: a local file instead of url; "
                      "misp-feed: a local folder holding manifest.json and the event files")
    collection: str = Field("", description="taxii: the collection id")
    user: str = Field("", description="HTTP basic-auth user, when the server asks for one")
    password_file: str = Field("", description="file holding the basic-auth password")
    password_env: str = Field("", description="environment variable holding the basic-auth "
                              "password (when password_file is empty)")
    api_key_file: str = Field("", description="misp: file holding the MISP API key")
    api_key_env: str = Field("", description="misp: environment variable holding the MISP "
                             "API key (when api_key_file is empty)")
    indicator_kind: IndicatorKindSetting = Field(
        "auto", description="list: what each line is (url, domain, ip, email, sha256, "
        "subject); auto: inferred per line (a URL, an IP, an address, a 64-hex hash, else a "
        "domain)")
    confidence: int = Field(50, ge=0, le=100, description="confidence (0-100) of indicators "
                            "that carry none (lists, CSV, STIX without `confidence`, MISP "
                            "events without a threat level or confidence tag)")
    poll_interval: float = Field(3600.0, gt=0, description="seconds between polls")
    auto_recall_confidence: int = Field(
        90, ge=0, le=101, description="indicators at or above this confidence have the "
        "delivered mail they match recalled without approval; below it the recall waits in "
        "the approval queue; 101: never automatically")
    lookback_days: float = Field(14.0, gt=0, description="days of delivered mail each new "
                                 "indicator is hunted in")
    misp_days: float = Field(30.0, gt=0, description="misp: on the first poll, days of "
                             "attributes asked for (later polls ask from the last one on)")
    verify_tls: bool = Field(True, description="check the server's TLS certificate")

    @model_validator(mode="after")
    def _needs(self) -> FeedSettings:
        if not _NAME.match(self.name):
            raise ValueError(f"feed name {self.name!r}: letters, digits, '.', '_' or '-', "
                             "at most 64")
        where = "url or path"
        if self.kind == "taxii" and not (self.url and self.collection):
            raise ValueError(f"feed {self.name}: kind taxii needs url and collection")
        if self.kind == "misp" and not self.url:
            raise ValueError(f"feed {self.name}: kind misp needs url")
        if self.kind == "misp" and not (self.api_key_file or self.api_key_env):
            raise ValueError(f"feed {self.name}: kind misp needs api_key_file or api_key_env")
        if self.kind in ("stix", "list", "csv", "misp-feed") and bool(self.url) == bool(self.path):
            raise ValueError(f"feed {self.name}: kind {self.kind} needs exactly one of {where}")
        if self.url and not self.url.lower().startswith(("http://", "https://")):
            raise ValueError(f"feed {self.name}: url must be http:// or https://")
        return self


class IntelSettings(Section):
    enabled: bool = Field(True, description="poll the feeds, hunt new indicators and block "
                          "mail carrying live ones (when feeds are configured)")
    feeds: list[FeedSettings] = Field(default_factory=list,
                                      description="the feeds, one [[intel.feeds]] table each")
    fetch_timeout: float = Field(30.0, gt=0, description="seconds one HTTP request to a feed "
                                 "may take before the poll fails with a timeout")
    max_feed_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="a feed document "
                                "larger than this is refused, not half-read")
    refresh_interval: float = Field(30.0, gt=0, description="seconds between the scan "
                                    "check's reloads of the live indicators from the database")
    block: bool = Field(True, description="emit INTEL_* symbols for new mail carrying a live "
                        "indicator (the check of docs/symbols/intel.md)")

    @model_validator(mode="after")
    def _unique(self) -> IntelSettings:
        names = [f.name for f in self.feeds]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feed names must be unique: {', '.join(dupes)}")
        return self


def intel_settings(config: Config) -> IntelSettings:
    return config.section("intel", IntelSettings)


def secret(config: Config, feed: str, file: str, env: str) -> str:
    """The secret in `file` (relative to the config's folder) or environment variable
    `env`; "" when neither is set. A named file or variable that is missing is an error
    naming it, never its content."""
    if file:
        path = config.resolve_path(file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise IntelError(f"feed {feed}: cannot read secret file {path}: "
                             f"{exc.strerror or type(exc).__name__}") from exc
    if env:
        value = os.environ.get(env)
        if value is None:
            raise IntelError(f"feed {feed}: environment variable {env} is not set")
        return value.strip()
    return ""
