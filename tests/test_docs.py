"""Symbols are API: every symbol a check can emit is documented in docs/symbols/."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from mailmoat.scan.base import Check
from mailmoat.scan.pipeline import fail_symbol
from mailmoat.scan.registry import FAMILY_MODULES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "symbols"


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


def _all_symbols() -> set[str]:
    """Every symbol a check declares, plus the `<FAMILY>_FAIL` the pipeline emits for
    each family when one of its checks raises or runs out of time."""
    names = {name for cls in _all_check_classes() for name in cls.symbols}
    names |= {fail_symbol(cls.family or cls.name) for cls in _all_check_classes()}
    return names


def test_every_symbol_is_documented():
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    missing = sorted(name for name in _all_symbols() if f"`{name}`" not in text)
    assert not missing, f"undocumented symbols (add them to docs/symbols/<family>.md): {missing}"


def test_symbol_names_are_upper_snake():
    for cls in _all_check_classes():
        for name in cls.symbols:
            assert name == name.upper() and " " not in name, name


def test_fail_symbols_have_a_catalogue_row():
    """Each family's `<FAMILY>_FAIL` has a row in docs/symbols/<family>.md, not only a mention."""
    missing = []
    for cls in _all_check_classes():
        family = cls.family or cls.name
        page = DOCS / f"{family}.md"
        row = f"| `{fail_symbol(family)}` |"
        if not page.exists() or row not in page.read_text(encoding="utf-8"):
            missing.append(f"{fail_symbol(family)} in docs/symbols/{family}.md")
    assert not missing, f"missing *_FAIL rows: {sorted(set(missing))}"


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    targets = [a or b for a, b in _LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_point_to_files():
    """README.md's and docs/*.md's relative links name files or folders that exist."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in _relative_links(page):
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, f"broken relative links: {broken}"
