"""Plain indicator lists and abuse.ch-style CSV.

A list has one indicator a line; `#` starts a comment (except inside a URL, where it is a
fragment). `indicator_kind` says what the lines are, or `auto` infers it per line: a URL
(has `://`), an IP address, an e-mail address, a 64-hex SHA-256, else a domain name.

CSV follows abuse.ch's exports: `#` comment lines, the last of which (or the first row)
names the columns. Known columns: URLhaus (`id, dateadded, url, threat, ...`),
MalwareBazaar (`first_seen_utc, sha256_hash, ..., signature`) and ThreatFox (`ioc_id,
ioc_value, ioc_type, ..., confidence_level`); `url`, `domain`, `ip`, `email`, `sha256` and
`sha256_hash` columns of other CSVs are read the same way.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re

from mailmoat.intel.model import FeedBatch, Indicator, make_indicator, parse_time
from mailmoat.recall.index import ObservableKind

__all__ = ["infer_kind", "parse_csv", "parse_list"]

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+"
                     r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})\.?$", re.I)


def infer_kind(value: str) -> ObservableKind | None:
    if "://" in value:
        return "url"
    try:
        ipaddress.ip_address(value.strip("[]"))
        return "ip"
    except ValueError:
        pass
    if "@" in value and "/" not in value and " " not in value:
        return "email"
    if _SHA256.match(value):
        return "sha256"
    if _DOMAIN.match(value):
        return "domain"
    return None


def parse_list(feed: str, text: str, kind: str, confidence: int, batch: FeedBatch) -> None:
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "://" not in line:  # a fragment is part of a URL, elsewhere '#' is a comment
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
        k = infer_kind(line) if kind == "auto" else kind
        if k is None:
            batch.skip(feed, f"line {n} {line!r}", "not a URL, IP, address, SHA-256 or domain")
            continue
        ind = make_indicator(k, line, line, confidence)  # type: ignore[arg-type]
        if ind is None:
            batch.skip(feed, f"line {n} {line!r}", f"not a valid {k}")
            continue
        batch.indicators.append(ind)


# ThreatFox ioc_type -> kind
_IOC_TYPES: dict[str, ObservableKind] = {"url": "url", "domain": "domain", "ip:port": "ip",
                                         "ip": "ip", "sha256_hash": "sha256", "email": "email"}
_VALUE_COLUMNS: dict[str, ObservableKind] = {"url": "url", "sha256_hash": "sha256",
                                             "sha256": "sha256", "domain": "domain",
                                             "ip": "ip", "email": "email"}
_ID_COLUMNS = ("ioc_id", "id")
_TIME_COLUMNS = ("first_seen_utc", "dateadded", "first_seen", "date_added")
_LABEL_COLUMNS = ("malware_printable", "signature", "threat", "threat_type", "tags")


def _header(lines: list[str]) -> tuple[list[str], int]:
    """The column names and the index of the first data line."""
    known = set(_VALUE_COLUMNS) | {"ioc_value"}
    last_comment: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("#"):
            cells = next(csv.reader([line.lstrip("#").strip()], skipinitialspace=True), [])
            if known & {c.strip().lower() for c in cells}:
                last_comment = [c.strip().lower() for c in cells]
            continue
        if not line.strip():
            continue
        cells = next(csv.reader([line], skipinitialspace=True), [])
        names = [c.strip().lower() for c in cells]
        if known & set(names):
            return names, i + 1
        return last_comment, i
    return last_comment, len(lines)


def _value_of(row: dict[str, str]) -> tuple[ObservableKind | None, str, str]:
    """(kind, value, why-not) of one CSV row."""
    if "ioc_value" in row:
        ioc_type = row.get("ioc_type", "").strip().lower()
        kind = _IOC_TYPES.get(ioc_type)
        if kind is None:
            return None, "", f"ioc_type {ioc_type or '(none)'} is not matched"
        value = row["ioc_value"].strip()
        if ioc_type == "ip:port":
            value = value.rsplit(":", 1)[0]
        return kind, value, ""
    for col, kind in _VALUE_COLUMNS.items():
        if row.get(col, "").strip():
            return kind, row[col].strip(), ""
    return None, "", "no indicator column has a value"


def parse_csv(feed: str, text: str, confidence: int, batch: FeedBatch) -> None:
    lines = text.splitlines()
    columns, start = _header(lines)
    if not columns:
        raise ValueError("CSV has no header naming a url, sha256_hash, ioc_value, domain, ip "
                         "or email column")
    body = "\n".join(ln for ln in lines[start:] if ln.strip() and not ln.startswith("#"))
    for n, cells in enumerate(csv.reader(io.StringIO(body), skipinitialspace=True), 1):
        row = {c: (cells[i] if i < len(cells) else "") for i, c in enumerate(columns)}
        kind, value, why = _value_of(row)
        if kind is None:
            batch.skip(feed, f"row {n}", why)
            continue
        source = next((row[c] for c in _ID_COLUMNS if row.get(c, "").strip()), value)
        level = row.get("confidence_level", "").strip()
        conf = int(level) if level.isdigit() else confidence
        when = next((parse_time(row[c]) for c in _TIME_COLUMNS if row.get(c, "").strip()),
                    None)
        label = next((row[c] for c in _LABEL_COLUMNS if row.get(c, "").strip()), "")
        ind: Indicator | None = make_indicator(kind, value, source, conf, valid_from=when,
                                               label=label[:500])
        if ind is None:
            batch.skip(feed, f"row {n} {value[:80]!r}", f"not a valid {kind}")
            continue
        batch.indicators.append(ind)
