"""Symbols are API: every symbol a check can emit is documented in docs/symbols/."""

from __future__ import annotations

import importlib
from pathlib import Path

from mailmoat.scan.base import Check
from mailmoat.scan.registry import FAMILY_MODULES

DOCS = Path(__file__).resolve().parent.parent / "docs" / "symbols"


def _all_check_classes() -> list[type[Check]]:
    for mod in FAMILY_MODULES:
        importlib.import_module(mod)
    seen, todo = [], list(Check.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("mailmoat.") and cls not in seen:
            seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_every_symbol_is_documented():
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    missing = sorted({name for cls in _all_check_classes() for name in cls.symbols
                      if f"`{name}`" not in text})
    assert not missing, f"undocumented symbols (add them to docs/symbols/<family>.md): {missing}"


def test_symbol_names_are_upper_snake():
    for cls in _all_check_classes():
        for name in cls.symbols:
            assert name == name.upper() and " " not in name, name
