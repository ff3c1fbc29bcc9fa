"""The `clamd_server` fixture: one private clamd (mailmoat.evaluation.clamd) per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat.evaluation.clamd import Clamd, clamd_binary, running_clamd


@pytest.fixture(scope="session")
def clamd_server() -> Iterator[Clamd]:
    if clamd_binary() is None:
        pytest.skip("clamd is not installed (Debian package clamav-daemon)")
    with running_clamd() as server:
        yield server
