"""Formatting and writing the reports of benchmarks and evaluation programs."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any


def pct(v: float | None, digits: int = 2) -> str:
    """A rate as a percentage, "n/a" where there is none (no message of that kind)."""
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def command(program: str, prefix: str = "python -m") -> str:
    """The command line that ran this program, for the report's first line."""
    return f"{prefix} {program} {shlex.join(sys.argv[1:])}".strip()


def write_report(out: str | Path, stem: str, md: str | None = None,
                 data: Any = None) -> Path:
    """Write `stem.md` and `stem.json` (those given) under the folder `out`; return it."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (folder / f"{stem}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    if md is not None:
        (folder / f"{stem}.md").write_text(md, encoding="utf-8")
    return folder
