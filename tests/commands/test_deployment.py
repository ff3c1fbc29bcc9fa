"""docs/deployment.md and contrib/mailmoat.service say only what works: the unit passes
`systemd-analyze verify` (with ExecStart pointing at this checkout's mailmoat), and every
configuration example of the guide is a valid configuration (the loader refuses unknown
sections and keys)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailmoat.config import config_from_dict, load_config
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "mailmoat.service"
GUIDE = ROOT / "docs" / "deployment.md"


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    mailmoat = Path(sys.executable).parent / "mailmoat"
    assert mailmoat.exists()
    text = UNIT.read_text()
    assert "ExecStart=/opt/mailmoat/.venv/bin/mailmoat serve --config /etc/mailmoat/mailmoat.toml" in text
    unit = tmp_path / "mailmoat.service"
    unit.write_text(text.replace("/opt/mailmoat/.venv/bin/mailmoat", str(mailmoat)))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    mine = [line for line in (r.stdout + r.stderr).splitlines() if "mailmoat.service" in line]
    assert r.returncode == 0 and mine == [], r.stdout + r.stderr


def test_systemd_unit_command_line_is_one_mailmoat_accepts():
    # What ExecStart runs, with the configuration somewhere writable: `serve --help` parses
    # the same options, so a renamed option fails here.
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", UNIT.read_text(), re.M)
    assert exec_start is not None
    args = exec_start.group(2).split()
    assert args[:2] == ["serve", "--config"]
    r = subprocess.run([sys.executable, "-m", "mailmoat", "serve", "--help"], capture_output=True,
                       text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 0 and "--config" in r.stdout


def test_every_configuration_example_loads():
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) >= 5
    for block in blocks:
        config_from_dict(tomllib.loads(block))  # ConfigError on any unknown key or bad value


def test_install_commands_of_the_guide_work(tmp_path):
    # The default configuration, written as the guide says, loads; the hash command runs.
    target = tmp_path / "mailmoat.toml"
    code = ("from pathlib import Path; from mailmoat.config import write_default_config; "
            f"write_default_config(Path({str(target)!r}))")
    guide = GUIDE.read_text()
    assert "from mailmoat.config import write_default_config" in guide
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=subprocess_env())
    assert load_config(target).smtp.trusted_networks == []
    assert 'from mailmoat.smtp.users import hash_password; print(hash_password(\'pw\'))' in guide
    out = subprocess.run([sys.executable, "-c", "from mailmoat.smtp.users import hash_password; "
                          "print(hash_password('pw'))"], capture_output=True, text=True, check=True,
                         timeout=120, env=subprocess_env()).stdout
    assert out.startswith("$argon2id$")
