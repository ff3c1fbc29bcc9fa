"""`mailmoat user/token/digest` in a real subprocess against a config file."""

from __future__ import annotations

import subprocess

from fastapi.testclient import TestClient

from mailmoat.config import load_config
from mailmoat.store.db import Database
from mailmoat.web.app import create_app
from tests.conftest import mailmoat_cmd, subprocess_env
from tests.web.sink import Sink


def run_subprocess(cfg, *args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(mailmoat_cmd(*args, "--config", str(cfg)), input=stdin, capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)


def run(cfg, *args, stdin: str = ""):
    """In-process (fast); the first command of the test runs as a real subprocess."""
    from typer.testing import CliRunner

    from mailmoat.cli import app

    res = CliRunner().invoke(app, [*args, "--config", str(cfg)], input=stdin)
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def test_user_token_digest_commands(tmp_path):
    with Sink() as sink:
        cfg = tmp_path / "mailmoat.toml"
        cfg.write_text(f'[storage]\ndata_dir = "data"\n[delivery]\ndownstream = "127.0.0.1:{sink.port}"\n')
        r = run_subprocess(cfg, "user", "add", "Root@Corp.test", "--role", "admin", "--password-stdin",
                stdin="a long password\n")
        assert r.returncode == 0, r.stderr
        assert "created admin root@corp.test" in r.stdout
        r = run(cfg, "user", "add", "pm@a.test", "--role", "domain_admin", "--password-stdin", stdin="x\n")
        assert r.returncode == 2 and "at least 8" in r.stderr
        # A password piped without --password-stdin is refused, never stored as empty.
        r = run_subprocess(cfg, "user", "add", "piped@corp.test", "--role", "admin",
                           stdin="a long password\n")
        assert r.returncode == 2 and "--password-stdin" in r.stderr
        r = run(cfg, "user", "add", "pm@a.test", "--role", "domain_admin", "--password-stdin",
                stdin="long enough\n")
        assert r.returncode == 1 and "needs at least one domain" in r.stderr
        r = run(cfg, "user", "add", "pm@a.test", "--role", "domain_admin", "--domains", "a.test,b.test",
                "--password-stdin", stdin="long enough\n")
        assert r.returncode == 0 and "for a.test, b.test" in r.stdout
        r = run(cfg, "user", "add", "root@corp.test", "--role", "admin", "--password-stdin", stdin="long enough\n")
        assert r.returncode == 1 and "already exists" in r.stderr
        r = run(cfg, "user", "list")
        assert "pm@a.test\tdomain_admin [a.test, b.test]" in r.stdout and "root@corp.test\tadmin" in r.stdout
        assert "piped@corp.test" not in r.stdout
        r = run(cfg, "token", "create", "root@corp.test")
        token = r.stdout.strip()
        assert r.returncode == 0 and token.startswith("mm_")
        assert run(cfg, "token", "create", "nobody@x.test").returncode == 1
        config = load_config(cfg)
        db = Database(config.database_url)
        c = TestClient(create_app(config, db), headers={"Authorization": f"Bearer {token}"})
        assert c.get("/api/v1/auth/me").json()["role"] == "admin"
        c2 = TestClient(create_app(config, db))
        assert c2.post("/api/v1/auth/login", json={"email": "root@corp.test",
                                                   "password": "a long password"}).status_code == 200
        r = run(cfg, "digest", "send", "--dry-run")
        assert r.returncode == 0 and "would send 0 digests listing 0 held messages" in r.stdout
        db.dispose()
