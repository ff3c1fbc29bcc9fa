"""`mailmoat quarantine …` against a real store: list, show, release, delete, purge."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from typer.testing import CliRunner

from mailmoat.cli import app
from mailmoat.config import load_config
from mailmoat.message.model import Envelope
from mailmoat.spool.queue import Spool, new_message_id
from mailmoat.store.db import Database
from mailmoat.store.log import message_log_data, write_message
from mailmoat.store.models import AuditRow, QuarantineRow
from mailmoat.store.quarantine import quarantine_message
from tests.conftest import mailmoat_cmd, make_email, subprocess_env


def _setup(tmp_path):
    cfg_path = tmp_path / "mailmoat.toml"
    cfg_path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[scan]\nnetwork = false\n')
    cfg = load_config(cfg_path)
    db = Database(cfg.database_url)
    db.create_schema()
    ids = []
    for subject in ("Your invoice", "Password expiry"):
        mid = new_message_id()
        env = Envelope(mail_from="x@bad.test", rcpt_tos=("bob@example.test", "amy@example.test"))
        data = message_log_data(mailmoat_id=mid, envelope=env, outcome=None)
        data.update(subject=subject, action="quarantine", category="phishing", score=12.0,
                    symbols=[{"name": "TEST_PHISH", "score": 12.0, "category": "phishing",
                              "reason": "asks for a password"}])
        with db.session() as s:
            write_message(s, data)
        quarantine_message(cfg, db, mid, make_email(subject=subject), "x@bad.test",
                           ["bob@example.test", "amy@example.test"],
                           ["bob@example.test", "amy@example.test"])
        ids.append(mid)
    return cfg_path, cfg, db, ids


def test_quarantine_cli_lifecycle(tmp_path):
    cfg_path, cfg, db, (m1, m2) = _setup(tmp_path)
    runner = CliRunner()
    c = ["--config", str(cfg_path)]

    out = runner.invoke(app, ["quarantine", "list", *c, "--json"])
    assert out.exit_code == 0, out.output
    items = [json.loads(line) for line in out.output.splitlines()]
    assert {i["id"] for i in items} == {m1, m2} and all(i["state"] == "held" for i in items)

    out = runner.invoke(app, ["quarantine", "show", m1, *c])
    assert out.exit_code == 0 and "TEST_PHISH" in out.output and "asks for a password" in out.output
    assert "Subject: Your invoice" in out.output

    out = runner.invoke(app, ["quarantine", "release", m1, *c, "--to", "bob@example.test",
                              "--actor", "alice-admin"])
    assert out.exit_code == 0, out.output
    spool = Spool(cfg.data_dir / "spool")
    (rid,) = spool.ids("incoming")
    entry, raw = spool.read("incoming", rid)
    assert entry.rcpt_tos == ["bob@example.test"] and entry.scanned
    assert b"Subject: Your invoice" in raw
    with db.session() as s:
        assert s.get(QuarantineRow, m1).held_for == ["amy@example.test"]
        audit = s.scalars(select(AuditRow).where(AuditRow.action == "quarantine.release")).one()
        assert audit.actor == "alice-admin" and audit.target == m1

    out = runner.invoke(app, ["quarantine", "release", m1, *c, "--to", "stranger@example.test"])
    assert out.exit_code == 1 and "not held for" in out.output

    out = runner.invoke(app, ["quarantine", "delete", m2, *c])
    assert out.exit_code == 0
    out = runner.invoke(app, ["quarantine", "show", m2, *c])
    assert out.exit_code == 1 and "not in quarantine" in out.output

    with db.session() as s:  # age the remaining one past its retention
        s.get(QuarantineRow, m1).expires_at = datetime.now(UTC) - timedelta(days=1)
    out = runner.invoke(app, ["quarantine", "purge", *c])
    assert out.exit_code == 0 and "purged 1" in out.output
    out = runner.invoke(app, ["quarantine", "list", *c])
    assert "quarantine is empty" in out.output


def test_quarantine_cli_as_a_real_process(tmp_path):
    cfg_path, _, _, (m1, _m2) = _setup(tmp_path)
    res = subprocess.run(mailmoat_cmd("quarantine", "list", "--config", str(cfg_path)),
                         env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert m1 in res.stdout and "Your invoice" in res.stdout
