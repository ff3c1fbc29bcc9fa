"""docs/settings.md covers every field of every core settings class (Datasette-style).

A new field in src/mailmoat/config.py fails here until it is documented: run
`PYTHONPATH=src python scripts/gen-settings-doc` and commit docs/settings.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from mailmoat.config import Config

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def _core_sections() -> list[tuple[str, type[BaseModel]]]:
    return [
        (name, f.annotation)
        for name, f in Config.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
    ]


def _documented() -> dict[str, str]:
    """Section name → the text under its `## [name]` heading."""
    text = DOC.read_text(encoding="utf-8")
    chunks = re.split(r"^## \[([a-z_.]+)\]\s*$", text, flags=re.M)
    return {chunks[i]: chunks[i + 1] for i in range(1, len(chunks) - 1, 2)}


FIELDS = [(section, key) for section, model in _core_sections() for key in model.model_fields]


def test_every_core_section_has_a_heading():
    assert {name for name, _ in _core_sections()} <= set(_documented())


@pytest.mark.parametrize("section,key", FIELDS, ids=[f"{s}.{k}" for s, k in FIELDS])
def test_field_is_documented_in_its_section(section, key):
    body = _documented().get(section, "")
    assert f"| `{key}` |" in body, f"[{section}] {key} is missing from docs/settings.md"


@pytest.mark.parametrize("section,key", FIELDS, ids=[f"{s}.{k}" for s, k in FIELDS])
def test_field_has_a_description(section, key):
    model = dict(_core_sections())[section]
    assert (model.model_fields[key].description or "").strip(), (
        f"[{section}] {key} has no description"
    )


def test_no_documented_key_is_stale():
    models = dict(_core_sections())
    for section, body in _documented().items():
        keys = re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.M)
        assert set(keys) <= set(models[section].model_fields), f"[{section}] documents unknown keys"


def test_default_config_is_valid():
    from mailmoat.config import DEFAULT_CONFIG_TOML, config_from_dict
    import tomllib

    cfg = config_from_dict(tomllib.loads(DEFAULT_CONFIG_TOML))
    # What README promises for a first start: SMTP and console on loopback, relay only for
    # the example domain, no network trusted (test mail from this machine is judged as
    # inbound mail is), SQLite under ./var.
    assert cfg.smtp.listen == "127.0.0.1:2525" and cfg.web.listen == "127.0.0.1:8025"
    assert cfg.smtp.relay_domains == ["example.test"]
    assert cfg.smtp.trusted_networks == []
    assert cfg.storage.data_dir == "./var" and cfg.database_url.startswith("sqlite:///")
