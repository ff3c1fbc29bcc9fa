"""`mailmoat doctor` names what is missing and how to fix it; `serve` refuses to start
without a part the configuration uses."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tests.conftest import mailmoat_cmd, subprocess_env


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path, extra: str = "", downstream: str = "") -> str:
    path = tmp_path / "mailmoat.toml"
    path.write_text(
        '[storage]\ndata_dir = "var"\n'
        f'[delivery]\ndownstream = "{downstream or f"127.0.0.1:{_closed_port()}"}"\n'
        '[scan]\nnetwork = false\n' + extra)
    return str(path)


def _doctor(config: str) -> tuple[int, dict[str, dict[str, str]]]:
    proc = subprocess.run(mailmoat_cmd("doctor", "--config", config, "--format", "json"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)
    found = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        found[row["component"]] = row
    return proc.returncode, found


def test_a_working_config_passes_and_says_what_is_off(tmp_path):
    code, found = _doctor(_config(tmp_path))
    assert code == 0, found
    assert found["database"]["status"] == "ok"
    assert found["content model (tier 1)"]["status"] == "ok"
    assert found["deep model (tier 2)"]["status"] == "ok"
    assert found["antivirus"]["status"] == "warn" and "clamd" in found["antivirus"]["fix"]
    down = found["downstream"]
    assert down["status"] == "warn" and "cannot be reached" in down["detail"]
    assert "waits in the spool" in down["detail"]


async def test_a_greeting_downstream_is_ok(tmp_path, sink):
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *mailmoat_cmd("doctor", "--config", _config(tmp_path, downstream=f"127.0.0.1:{sink.port}"),
                      "--format", "json"),
        stdout=asyncio.subprocess.PIPE, env=subprocess_env())
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    rows = {r["component"]: r for r in map(json.loads, out.decode().splitlines())}
    assert rows["downstream"]["status"] == "ok", rows["downstream"]


def test_missing_tier2_weights_fail_the_doctor_and_stop_serve(tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    config = _config(tmp_path, f'[deep]\nmodel_dir = "{empty}"\n')
    code, found = _doctor(config)
    assert code == 1
    deep = found["deep model (tier 2)"]
    assert deep["status"] == "fail" and "model.safetensors" in deep["detail"]
    assert 'mode = "off"' in deep["fix"]
    proc = subprocess.run(mailmoat_cmd("serve", "--config", config), capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2
    assert "deep model (tier 2)" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_database_and_a_broken_model_fail(tmp_path):
    broken = tmp_path / "model.npz"
    broken.write_bytes(b"not a model")
    config = _config(tmp_path, f'[content]\nmodel_path = "{broken}"\n'
                     f'[redis]\nurl = "redis://127.0.0.1:{_closed_port()}/0"\n')
    text = (tmp_path / "mailmoat.toml").read_text().replace(
        '[storage]\ndata_dir = "var"\n',
        f'[storage]\ndata_dir = "var"\ndatabase_url = '
        f'"postgresql+psycopg://nobody:secret@127.0.0.1:{_closed_port()}/test"\n')
    (tmp_path / "mailmoat.toml").write_text(text)
    code, found = _doctor(config)
    assert code == 1
    assert found["database"]["status"] == "fail"
    assert "secret" not in json.dumps(found)  # the password is never shown
    assert found["content model (tier 1)"]["status"] == "fail"
    assert found["redis"]["status"] == "fail"


@pytest.mark.redis
def test_a_running_redis_is_ok(tmp_path):
    code, found = _doctor(_config(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6379/0"\n'))
    assert found["redis"]["status"] == "ok", found["redis"]
