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


# --- the load-time contract (issue 19, item 5) ------------------------------------------------

import asyncio  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import tomllib  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402

from mailmoat import config as config_module  # noqa: E402
from mailmoat.config import (  # noqa: E402
    DEFAULT_CONFIG_TOML,
    FAMILY_SECTIONS,
    Section,
    core_sections,
    family_section_model,
    known_symbols,
)
from mailmoat.errors import PolicyError  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "src" / "mailmoat"


def _load(tmp_path, text: str):
    path = tmp_path / "mailmoat.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_misspelled_section_is_refused_with_line_and_closest_name(tmp_path):
    text = '[storage]\ndata_dir = "var"\n\n[antivirs]\nclamd = "tcp:127.0.0.1:3310"\n'
    with pytest.raises(ConfigError, match=r"unknown section \[antivirs\] in \S*mailmoat\.toml "
                       r"line 4 \(did you mean \[antivirus\]\?\)"):
        _load(tmp_path, text)
    # no suggestion when nothing is close
    with pytest.raises(ConfigError, match=r"unknown section \[colours\]") as exc:
        config_from_dict({"colours": {"red": 1}})
    assert "did you mean" not in str(exc.value)


def test_unknown_keys_name_the_line_and_the_closest_key(tmp_path):
    text = '[content]\nhigh = 0.97\nlwo = 0.5\n\n[delivery]\ntsl = "required"\n'
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    msg = str(exc.value)
    # every mistake at once, each with its line and fix
    assert "unknown key 'lwo' in [content] in" in msg and "line 3 (did you mean 'low'?)" in msg
    assert "unknown key 'tsl' in [delivery] in" in msg and "line 6 (did you mean 'tls'?)" in msg
    # inside arrays of tables and nested models too
    text = '[[reputation.dnsbl]]\nzone = "zen.spamhaus.org"\nnmae = "zen"\n'
    with pytest.raises(ConfigError,
                       match=r"unknown key 'nmae' .* line 3 \(did you mean 'name'\?\)"):
        _load(tmp_path, text)
    with pytest.raises(ConfigError, match=r"unknown key 'selectr'.*did you mean 'selector'"):
        config_from_dict({"dkim_signing": {"keys": {"a.test": {"selectr": "s", "key_file": "k"}}}})


def test_delivery_tls_typo_is_refused_listing_the_valid_values(tmp_path):
    with pytest.raises(ConfigError, match=r"\[delivery\] tls = 'requierd' in \S+ line 2: "
                       r"must be none, opportunistic or required"):
        _load(tmp_path, '[delivery]\ntls = "requierd"\n')
    for mode in ("none", "opportunistic", "required"):
        assert config_from_dict({"delivery": {"tls": mode}}).delivery.tls == mode


def test_malformed_action_typo_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"malformed_action = 'quarantene' .* line 3: "
                       r"must be quarantine, accept or reject"):
        _load(tmp_path, '[policy]\ntag_threshold = 5\nmalformed_action = "quarantene"\n')
    with pytest.raises(ConfigError, match=r"block_action = 'rejct'"):
        config_from_dict({"policy": {"block_action": "rejct"}})
    with pytest.raises(ConfigError,
                       match=r"\[antivirus\] scan = 'all'.*must be message, attachments or both"):
        config_from_dict({"antivirus": {"scan": "all"}})


def test_enum_like_settings_are_literals():
    """A setting documented as `a | b | c` takes exactly those words."""
    models: dict[str, type] = dict(core_sections())
    models |= {name: family_section_model(name) for name in FAMILY_SECTIONS}
    words = re.compile(r"\b[a-z_]+ \| [a-z_]+\b")
    for name, model in models.items():
        for key, field in model.model_fields.items():
            if words.search(field.description or ""):
                assert typing.get_origin(field.annotation) is typing.Literal, f"[{name}] {key}"


def test_inverted_thresholds_are_refused_in_toml_and_in_overrides(tmp_path):
    with pytest.raises(ConfigError, match=r"\[policy\] in \S+ line 1: thresholds must be ordered"):
        _load(tmp_path, "[policy]\ntag_threshold = 12\nquarantine_threshold = 10\n")
    text = ('[policy]\ntag_threshold = 5.0\n\n[policy.domains."example.test"]\n'
            "quarantine_threshold = 12\nreject_threshold = 8\n")
    with pytest.raises(ConfigError, match=r'\[policy\.domains\."example\.test"\] in \S+ line 4: '
                       r"thresholds must be ordered: tag <= quarantine <= reject "
                       r"\(quarantine 12, reject 8\)"):
        _load(tmp_path, text)
    with pytest.raises(ConfigError, match=r"\[policy\.outbound\].*thresholds must be ordered"):
        config_from_dict({"policy": {"outbound": {"tag_threshold": 30, "reject_threshold": 20}}})
    with pytest.raises(ConfigError, match=r"\[policy\.recipients\.\"a@b\.test\"\] bulk_action"):
        config_from_dict({"policy": {"recipients": {"a@b.test": {"bulk_action": "maybe"}}}})
    # an override may set only some thresholds, as in the console
    cfg = config_from_dict({"policy": {"domains": {"example.test": {"reject_threshold": 8}}}})
    assert cfg.policy.domains == {"example.test": {"reject_threshold": 8.0}}


def test_console_and_toml_share_the_threshold_rule():
    from mailmoat.web.policy_store import validate_document

    with pytest.raises(PolicyError) as console:
        validate_document({"domains": {"example.test": {"quarantine_threshold": 12,
                                                        "reject_threshold": 8}}})
    with pytest.raises(ConfigError) as toml:
        config_from_dict({"policy": {"domains": {"example.test": {"quarantine_threshold": 12,
                                                                  "reject_threshold": 8}}}})
    rule = "thresholds must be ordered: tag <= quarantine <= reject (quarantine 12, reject 8)"
    assert rule in str(console.value) and rule in str(toml.value)


def test_override_keys_are_exactly_those_policy_reads():
    from mailmoat.policy.decide import _THRESHOLD_KEYS
    from mailmoat.scan.lists import LIST_KEYS

    target = {"tag_threshold": 4, "quarantine_threshold": 9, "reject_threshold": 20,
              "subject_prefix": "[S]", "bulk_threshold": 5, "bulk_action": "quarantine",
              "allow_senders": ["@a.test"], "block_senders": ["x@b.test"],
              "allow_ips": ["192.0.2.1"], "block_ips": ["198.51.100.0/24"],
              "block_action": "quarantine"}
    assert set(_THRESHOLD_KEYS) | set(LIST_KEYS) | {"block_action"} == set(target)
    direction = {k: target[k] for k in _THRESHOLD_KEYS}
    cfg = config_from_dict({"policy": {"domains": {"a.test": target},
                                       "recipients": {"r@a.test": target},
                                       "outbound": direction, "internal": direction}})
    assert cfg.policy.domains["a.test"]["block_action"] == "quarantine"
    assert cfg.policy.outbound["bulk_threshold"] == 5
    with pytest.raises(ConfigError, match=r"unknown key 'reject_treshold' in "
                       r"\[policy\.domains\.\"a\.test\"\].*did you mean 'reject_threshold'"):
        config_from_dict({"policy": {"domains": {"a.test": {"reject_treshold": 3}}}})
    # lists are read per domain and recipient only: in a direction they would be ignored
    with pytest.raises(ConfigError, match=r"unknown key 'allow_senders' in \[policy\.outbound\]"):
        config_from_dict({"policy": {"outbound": {"allow_senders": ["@a.test"]}}})


def test_unknown_score_symbols_are_refused_with_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown symbol NO_SUCH_SYMBOL in \[policy\] scores "
                       r"in \S+ line 2 \(did you mean [A-Z_]+\?\)"):
        _load(tmp_path, "[policy]\nscores = { NO_SUCH_SYMBOL = 3 }\n")
    with pytest.raises(ConfigError, match=r"unknown symbol DNSBL_LISTD .*line 3 "
                       r"\(did you mean DNSBL_LISTED\?\)"):
        _load(tmp_path, "[policy.scores]\nGTUBE = 1000\nDNSBL_LISTD = 4\n")
    cfg = _load(tmp_path, "[policy.scores]\nDNSBL_LISTED = 4\nAUTH_FAIL = 1\nANTIVIRUS_FAIL = 2\n")
    assert cfg.policy.scores == {"DNSBL_LISTED": 4.0, "AUTH_FAIL": 1.0, "ANTIVIRUS_FAIL": 2.0}


def test_known_symbols_cover_every_built_check():
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.registry import build_pipeline

    from tests.conftest import make_config

    pipeline = build_pipeline(BuildContext(make_config(content={"enabled": True},
                                                       deep={"mode": "band"}), network=False))
    assert set(pipeline.specs) <= known_symbols()


def test_check_timeout_is_the_default_budget_of_every_check():
    from mailmoat.message.parse import parse_message
    from mailmoat.scan.base import BuildContext, Check, ScanResult
    from mailmoat.scan.pipeline import Pipeline
    from mailmoat.scan.registry import build_pipeline

    from tests.conftest import make_config, make_email

    class _Slow(Check):
        name = "slowpoke"
        family = "slowpoke"

        async def run(self, msg, result: ScanResult) -> None:
            await asyncio.sleep(5)

    class _OwnBudget(_Slow):
        name = "patient"
        family = "patient"
        timeout = 0.3

    pipeline = Pipeline([_Slow(), _OwnBudget()], default_timeout=0.05)
    result = asyncio.run(pipeline.scan(parse_message(make_email())))
    reasons = {s.name: s.reason for s in result.symbols}
    assert reasons["SLOWPOKE_FAIL"].endswith("within 0.05s")
    assert reasons["PATIENT_FAIL"].endswith("within 0.3s")  # a family's own timeout wins

    cfg = make_config(scan={"network": False, "check_timeout": 2.5},
                      auth={"trusted_authserv_ids": ["mx.upstream.test"]})
    built = build_pipeline(BuildContext(cfg, network=False))
    assert built.default_timeout == 2.5
    by_name = {c.name: c for c in built.checks}
    assert built.timeout_of(by_name["malformed"]) == 2.5
    assert built.timeout_of(by_name["upstream_auth"]) == 2.0  # sets its own
    with pytest.raises(ConfigError, match="check_timeout"):
        config_from_dict({"scan": {"check_timeout": 0}})


def test_family_sections_are_all_registered():
    """Every Section subclass is a core section, an override table or in FAMILY_SECTIONS,
    and every `Config.section(name, Model)` call reads the model registered for `name`."""
    from mailmoat.scan.registry import FAMILY_MODULES

    for module in (*FAMILY_MODULES, *(s.partition(":")[0] for s in FAMILY_SECTIONS.values())):
        importlib.import_module(module)
    registered = {family_section_model(name) for name in FAMILY_SECTIONS}
    core = set(core_sections().values()) | {config_module.DirectionOverride,
                                            config_module.TargetOverride}
    todo, found = [Section], set()
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not Section and cls.__module__.startswith("mailmoat."):
            found.add(cls)
    assert found - core - registered == set()
    call = re.compile(r"""\.section\(\s*["'](\w+)["']\s*,\s*(\w+)\s*\)""")
    for path in SRC.rglob("*.py"):
        for name, model in call.findall(path.read_text(encoding="utf-8")):
            assert FAMILY_SECTIONS.get(name, "").endswith(":" + model), f"{path}: [{name}] {model}"


def test_family_sections_stay_readable_by_their_family(tmp_path):
    from mailmoat.ml.scoring import ContentSettings

    cfg = _load(tmp_path, "[content]\nhigh = 0.97\n[deep]\nmode = \"off\"\n")
    assert cfg.section("content", ContentSettings).high == 0.97
    assert cfg.model_extra == {"content": {"high": 0.97}, "deep": {"mode": "off"}}
    with pytest.raises(ConfigError, match=r"\[deep\] mode = 'sometimes'"):
        config_from_dict({"deep": {"mode": "sometimes"}})
    with pytest.raises(ConfigError, match=r"\[content\] must be a table"):
        config_from_dict({"content": 3})


def test_the_shipped_default_config_loads(tmp_path):
    cfg = _load(tmp_path, DEFAULT_CONFIG_TOML)
    assert cfg.smtp.listen == "127.0.0.1:2525"
    assert config_from_dict(tomllib.loads(DEFAULT_CONFIG_TOML)).policy.tag_threshold == 5.0
