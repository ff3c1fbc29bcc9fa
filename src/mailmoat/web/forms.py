"""Form errors in sentences, next to the field they concern: what the console shows instead
of a validation dump, so an administrator can fix what they typed (which the page keeps)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError


def sentence(text: str) -> str:
    """`text` as a sentence: a capital first letter and a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _plain(err: Mapping[str, Any]) -> str:
    """pydantic's message in words an administrator reads without knowing pydantic."""
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", ""))
    given = err.get("input")
    shown = f" ({str(given)[:40]!r} is not one)" if isinstance(given, (str, int, float)) and given != "" else ""
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        return f"give a number{shown}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return msg.replace("Input should be", "give a number").rstrip(".")
    if kind == "literal_error":
        return msg.replace("Input should be", "choose").rstrip(".")
    if kind == "extra_forbidden":
        return "this key is not a policy setting"
    if kind == "missing":
        return "this is required"
    return msg.removeprefix("Value error, ").rstrip(".")


def field_errors(exc: ValidationError, fields: dict[tuple[str, ...], str],
                 labels: dict[str, str]) -> dict[str, str]:
    """{form field: sentence} for each error. `fields` maps a location prefix in the model
    to the form field that edits it (the longest prefix wins); an error no field claims is
    keyed "" (shown at the top of the form). `labels` names the fields in the sentences."""
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(str(x) for x in err.get("loc", ()))
        field, rest = "", loc
        for n in range(len(loc), 0, -1):
            if loc[:n] in fields:
                field, rest = fields[loc[:n]], loc[n:]
                break
        label = labels.get(field, "")
        where = " ".join(rest)  # inside the field: a domain and its key, say
        text = _plain(err)
        what = ", ".join(x for x in (label, where) if x)
        what = f"{what}: {text}" if what else text
        out[field] = sentence(f"{out[field].rstrip('.')}; {what}" if field in out else what)
    return out
