"""[intel] is strict like every section, and every key of it is documented in docs/intel.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat.config import config_from_dict, load_config
from mailmoat.errors import ConfigError
from mailmoat.intel.settings import FeedSettings, IntelError, IntelSettings, intel_settings, secret

DOC = Path(__file__).resolve().parents[2] / "docs" / "intel.md"
TAXII = {"name": "local-taxii", "kind": "taxii", "url": "http://127.0.0.1:5000/api1/",
         "collection": "c1", "user": "reader", "password_file": "taxii.secret",
         "poll_interval": 30, "auto_recall_confidence": 70, "lookback_days": 14}


def test_every_key_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for model in (IntelSettings, FeedSettings):
        for name in model.model_fields:
            assert f"`{name}`" in text, f"{model.__name__}.{name} missing from docs/intel.md"


def test_the_contract_table_loads(tmp_path):
    path = tmp_path / "mailmoat.toml"
    path.write_text("[[intel.feeds]]\n" + "".join(
        f"{k} = {v!r}\n".replace("'", '"') for k, v in TAXII.items()))
    feed = intel_settings(load_config(path)).feeds[0]
    assert (feed.kind, feed.poll_interval, feed.auto_recall_confidence) == ("taxii", 30, 70)


@pytest.mark.parametrize("table,message", [
    ({**TAXII, "colection": "x"}, r"unknown key 'colection'.*did you mean 'collection'"),
    ({**TAXII, "kind": "taxi"}, r"must be taxii, stix, misp, misp-feed, list or csv"),
    ({**TAXII, "collection": ""}, r"kind taxii needs url and collection"),
    ({"name": "l", "kind": "list"}, r"kind list needs exactly one of url or path"),
    ({"name": "m", "kind": "misp", "url": "https://misp.example"}, r"needs api_key_file"),
    ({"name": "bad name", "kind": "list", "path": "x"}, r"feed name 'bad name'"),
    ({"name": "l", "kind": "list", "url": "ftp://x.example/l"}, r"url must be http"),
])
def test_mistakes_are_refused(table, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"intel": {"feeds": [table]}})


def test_duplicate_names_are_refused():
    feed = {"name": "a", "kind": "list", "path": "x"}
    with pytest.raises(ConfigError, match="feed names must be unique: a"):
        config_from_dict({"intel": {"feeds": [feed, feed]}})


def test_secrets_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    cfg = config_from_dict({})
    (tmp_path / "s").write_text("hunter2\n")
    assert secret(cfg, "f", str(tmp_path / "s"), "") == "hunter2"
    monkeypatch.setenv("MM_TEST_SECRET", "from-env")
    assert secret(cfg, "f", "", "MM_TEST_SECRET") == "from-env"
    with pytest.raises(IntelError, match="cannot read secret file") as exc:
        secret(cfg, "f", str(tmp_path / "missing"), "")
    assert "hunter2" not in str(exc.value)
    with pytest.raises(IntelError, match="environment variable MM_NOPE is not set"):
        secret(cfg, "f", "", "MM_NOPE")


def test_credentials_in_a_url_are_never_shown():
    from mailmoat.intel.fetch import redact

    assert redact("https://user:pw@intel.example/feed.csv") == "https://intel.example/feed.csv"
    assert redact("https://intel.example/a@b") == "https://intel.example/a@b"
