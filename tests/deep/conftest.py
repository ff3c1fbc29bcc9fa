from __future__ import annotations

import pytest

import tests.conftest as root


@pytest.fixture(autouse=True)
def _content_models_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the content models: run them as a deployment would."""
    monkeypatch.setattr(root, "DEFAULT_SECTIONS", {"scan": {"network": False}})
