"""STIX 2.1 indicators → matchable values.

Objects are validated one by one with `stix2` (a bad object is skipped with its reason, the
rest of the bundle is read), and each pattern is read through the STIX pattern grammar
(`stix2-patterns`' parser, via `stix2.pattern_visitor`), never with regular expressions.

A pattern becomes a list of alternatives; each alternative is a set of facts that must all
be present in one message, and each fact is an equality on something the delivery index
holds (recall/index.py):

    url:value                      url        domain-name:value            domain
    ipv4-addr:value, ipv6-addr:value  ip      email-addr:value             email
    file:hashes.'SHA-256'          sha256     email-message:subject        subject
    email-message:from_ref.value, :sender_ref.value   email
    email-message:message_id       message_id

`=` and `IN` give facts; OR (inside or between observations) gives alternatives; AND inside
one observation (terms about the same object, as STIX 2.1 requires) gives facts that must
all hold. What an equality look-up cannot decide exactly is skipped with the reason: `!=`,
`NOT`, LIKE, MATCHES, ISSUBSET and comparisons of order; properties the index does not hold
(`file:name`); AND or FOLLOWEDBY between observations (two observations may be two
messages); and the WITHIN, REPEATS and START/STOP qualifiers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import stix2
from stix2 import patterns as sp
from stix2.exceptions import STIXError
from stix2.pattern_visitor import create_pattern_object

from mailmoat.intel.model import FeedBatch, Indicator, make_indicator, parse_time
from mailmoat.recall.index import ObservableKind

__all__ = ["Fact", "Unsupported", "bundle_objects", "indicators_from_objects", "pattern_facts"]

Fact = tuple[ObservableKind, str]
MAX_ALTERNATIVES = 1000  # (a OR b) AND (c OR d) ... multiplies; past this it is skipped

# (object type, property path) -> observable kind
_PATHS: dict[tuple[str, tuple[str, ...]], ObservableKind] = {
    ("url", ("value",)): "url",
    ("domain-name", ("value",)): "domain",
    ("ipv4-addr", ("value",)): "ip",
    ("ipv6-addr", ("value",)): "ip",
    ("email-addr", ("value",)): "email",
    ("file", ("hashes", "SHA-256")): "sha256",
    ("file", ("hashes", "SHA256")): "sha256",
    ("email-message", ("subject",)): "subject",
    ("email-message", ("from_ref", "value")): "email",
    ("email-message", ("sender_ref", "value")): "email",
    ("email-message", ("message_id",)): "message_id",
}
# Which fact of an AND names the message best: the look-up starts from it.
_SELECTIVITY: dict[str, int] = {"sha256": 0, "url": 1, "message_id": 2, "email": 3, "ip": 4,
                                "domain": 5, "subject": 6}


class Unsupported(ValueError):
    """The pattern (or part of it) is not an exact equality look-up; the text says why."""


@dataclass(frozen=True)
class _Alt:
    facts: frozenset[Fact]


def _path(lhs: sp.ObjectPath) -> tuple[str, tuple[str, ...]]:
    parts: list[str] = []
    for comp in lhs.property_path:
        if isinstance(comp, sp.ListObjectPathComponent):
            raise Unsupported(f"list index in {lhs} is not supported")
        name = str(comp.property_name).strip("'\"")
        parts.append(name)
    return lhs.object_type_name, tuple(parts)


def _comparison(expr: sp._ComparisonExpression) -> list[_Alt]:
    if expr.negated:
        raise Unsupported(f"negated comparison ({expr}) cannot be an equality look-up")
    obj, path = _path(expr.lhs)
    kind = _PATHS.get((obj, path))
    if kind is None:
        raise Unsupported(f"{obj}:{'.'.join(path)} is not held by the delivery index")
    if isinstance(expr, sp.EqualityComparisonExpression):
        values = [expr.rhs.value]
    elif isinstance(expr, sp.InComparisonExpression):
        values = [c.value for c in expr.rhs.value]
    else:
        raise Unsupported(f"operator {expr.operator} ({expr}) cannot be an equality look-up")
    if not all(isinstance(v, str) for v in values):
        raise Unsupported(f"{expr} compares with a non-string constant")
    return [_Alt(frozenset({(kind, v)})) for v in values]


def _and(parts: list[list[_Alt]]) -> list[_Alt]:
    total = 1
    for p in parts:
        total *= max(1, len(p))
    if total > MAX_ALTERNATIVES:
        raise Unsupported(f"expands to {total} alternatives (limit {MAX_ALTERNATIVES})")
    return [_Alt(frozenset().union(*(a.facts for a in combo)))
            for combo in itertools.product(*parts)]


def _expression(expr: Any) -> list[_Alt]:
    """Alternatives of a comparison expression inside one observation ([ ... ])."""
    if isinstance(expr, sp.ParentheticalExpression):
        return _expression(expr.expression)
    if isinstance(expr, sp.OrBooleanExpression):
        return [a for op in expr.operands for a in _expression(op)]
    if isinstance(expr, sp.AndBooleanExpression):
        return _and([_expression(op) for op in expr.operands])
    if isinstance(expr, sp._ComparisonExpression):
        return _comparison(expr)
    raise Unsupported(f"{type(expr).__name__} is not supported")


def _observation(expr: Any) -> list[_Alt]:
    if isinstance(expr, sp.ParentheticalExpression):
        return _observation(expr.expression)
    if isinstance(expr, sp.ObservationExpression):
        return _expression(expr.operand)
    if isinstance(expr, sp.OrObservationExpression):
        return [a for op in expr.operands for a in _observation(op)]
    if isinstance(expr, sp.AndObservationExpression | sp.FollowedByObservationExpression):
        raise Unsupported(f"{expr.operator} between observations may span several messages")
    if isinstance(expr, sp.QualifiedObservationExpression):
        raise Unsupported(f"qualifier {expr.qualifier} is not supported")
    raise Unsupported(f"{type(expr).__name__} is not supported")


def pattern_facts(pattern: str) -> list[frozenset[Fact]]:
    """The alternatives of a STIX 2.1 pattern, each a set of facts one message must all
    have. Raises Unsupported (with the reason) for what is not exactly matchable, and
    ValueError for a pattern the grammar refuses."""
    try:
        tree = create_pattern_object(pattern, version="2.1")
    except Exception as exc:  # the ANTLR parser raises its own error types
        raise ValueError(f"not a valid STIX pattern: {exc}") from exc
    out: list[frozenset[Fact]] = []
    for alt in _observation(tree):
        if alt.facts and alt.facts not in out:
            out.append(alt.facts)
    if not out:
        raise Unsupported("no matchable comparison")
    return out


def bundle_objects(text: str | bytes) -> list[dict[str, Any]]:
    """The objects of a STIX bundle (or of a TAXII envelope, or a bare list of objects).
    Raises ValueError when the document is not JSON or has no objects list."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a STIX bundle: malformed JSON ({exc})") from exc
    if isinstance(doc, list):
        objects = doc
    elif isinstance(doc, dict) and isinstance(doc.get("objects"), list):
        objects = doc["objects"]
    elif isinstance(doc, dict) and doc.get("type") == "indicator":
        objects = [doc]
    else:
        raise ValueError("not a STIX bundle: no \"objects\" list")
    return [o for o in objects if isinstance(o, dict)]


def _primary(facts: frozenset[Fact]) -> tuple[Fact, tuple[Fact, ...]]:
    ordered = sorted(facts, key=lambda f: (_SELECTIVITY[f[0]], f[1]))
    return ordered[0], tuple(ordered[1:])


def indicators_from_objects(feed: str, objects: Iterable[dict[str, Any]], batch: FeedBatch,
                            default_confidence: int) -> Iterator[Indicator]:
    """Indicators of the STIX `indicator` objects; other object types are passed over,
    broken or unsupported indicators are recorded in `batch.skipped`."""
    for raw in objects:
        if raw.get("type") != "indicator":
            continue
        what = str(raw.get("id") or "indicator without id")
        try:
            obj = stix2.parse(raw, allow_custom=True)
        except (STIXError, ValueError, TypeError, KeyError) as exc:
            batch.skip(feed, what, f"invalid STIX: {exc}")
            continue
        pattern_type = str(obj.get("pattern_type", "stix"))
        if pattern_type != "stix":
            batch.skip(feed, what, f"pattern_type {pattern_type} is not a STIX pattern")
            continue
        try:
            alternatives = pattern_facts(str(obj.pattern))
        except ValueError as exc:  # Unsupported is a ValueError
            batch.skip(feed, what, f"pattern {str(obj.pattern)[:200]}: {exc}")
            continue
        confidence = obj.get("confidence")
        common: dict[str, Any] = {
            "valid_from": parse_time(obj.get("valid_from")),
            "valid_until": parse_time(obj.get("valid_until")),
            "revoked": bool(obj.get("revoked", False)),
            "label": str(obj.get("name") or obj.get("description") or "")[:500],
            "modified": parse_time(obj.get("modified")),
        }
        seen: set[Fact] = set()
        for facts in alternatives:
            (kind, value), also = _primary(facts)
            if (kind, value) in seen:
                batch.skip(feed, what, f"two alternatives start from {kind} {value}; "
                           "the first is kept")
                continue
            seen.add((kind, value))
            ind = make_indicator(kind, value, str(obj.id),
                                 default_confidence if confidence is None else int(confidence),
                                 also=also, **common)
            if ind is None:
                batch.skip(feed, what, f"{value!r} is not a valid {kind}")
                continue
            yield ind
