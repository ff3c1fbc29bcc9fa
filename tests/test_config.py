"""Configuration loading: mistakes are errors, not silently dropped settings."""

from __future__ import annotations

import pytest

from mailmoat.config import ConfigError, config_from_dict, load_config


def test_bare_top_level_key_is_refused_with_its_section():
    with pytest.raises(ConfigError, match=r"unknown top-level key 'data_dir'.*under \[storage\]"):
        config_from_dict({"data_dir": "/srv/mail"})
    with pytest.raises(ConfigError, match="unknown top-level key 'colour'") as exc:
        config_from_dict({"colour": "blue"})
    assert "did you mean" not in str(exc.value)


def test_sections_still_load(tmp_path):
    path = tmp_path / "mailmoat.toml"
    path.write_text('[storage]\ndata_dir = "var"\n[content]\nhigh = 0.97\n', encoding="utf-8")
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "var"
    assert cfg.model_extra == {"content": {"high": 0.97}}
    # a typo inside a core section is an error too
    with pytest.raises(ConfigError, match="data_dri"):
        config_from_dict({"storage": {"data_dri": "x"}})
