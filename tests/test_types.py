"""The package type-checks: mypy, with the config in pyproject.toml, finds no errors in it."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_reports_no_errors():
    # Paths are absolute so the run does not depend on pytest's working directory; the cache
    # (.mypy_cache, git-ignored) brings a re-run down from about 30 s to a few seconds.
    stdout, stderr, status = api.run([
        "--config-file", str(ROOT / "pyproject.toml"),
        "--cache-dir", str(ROOT / ".mypy_cache"),
        str(ROOT / "src" / "mailmoat"),
    ])
    assert status == 0, f"mypy found errors:\n{stdout}{stderr}"
