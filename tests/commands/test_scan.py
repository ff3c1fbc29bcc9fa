"""`mailmoat scan`: offline verdicts for .eml files, directories and mbox files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from mailmoat.commands.scan import collect, envelope_for, scan_items
from mailmoat.message.model import Direction
from mailmoat.scan.gtube import GTUBE
from tests.conftest import make_config, make_email, mailmoat_cmd, subprocess_env

CLEAN = make_email(subject="Lunch", body="See you at noon.\n")
SPAM = make_email(subject="Win", body="test " + GTUBE.decode() + "\n")


def _mbox(*messages: bytes) -> bytes:
    out = b""
    for m in messages:
        body = b"\n".join((b">" + ln if ln.startswith(b"From ") else ln) for ln in m.split(b"\n"))
        out += b"From sender@sender.test Sat Nov 28 10:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n"
    return out


@pytest.fixture
def mail_tree(tmp_path: Path) -> Path:
    root = tmp_path / "mail"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.eml").write_bytes(CLEAN)
    (root / "sub" / "b.eml").write_bytes(SPAM)
    (root / "sub" / "deeper" / "box.mbox").write_bytes(_mbox(CLEAN, SPAM, CLEAN))
    (root / ".hidden.eml").write_bytes(SPAM)
    return root


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mailmoat_cmd("scan", *args),
        env=subprocess_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_collect_walks_directories_and_mbox_in_stable_order(mail_tree):
    items = collect([mail_tree])
    rel = [i.display.replace(str(mail_tree) + "/", "") for i in items]
    assert rel == [
        "a.eml",
        "sub/b.eml",
        "sub/deeper/box.mbox#1",
        "sub/deeper/box.mbox#2",
        "sub/deeper/box.mbox#3",
    ]


def test_collect_reports_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect([tmp_path / "nope"])


def test_scan_items_in_process(mail_tree):
    results = list(scan_items(collect([mail_tree]), make_config()))
    by_path = {r["path"].rsplit("/", 1)[-1]: r for r in results}
    assert by_path["a.eml"]["action"] == "accept" and by_path["a.eml"]["category"] == "clean"
    assert by_path["b.eml"]["action"] == "reject" and by_path["b.eml"]["category"] == "spam"
    assert [by_path[f"box.mbox#{i}"]["action"] for i in (1, 2, 3)] == ["accept", "reject", "accept"]
    gtube = by_path["box.mbox#2"]["symbols"][0]
    assert gtube["name"] == "GTUBE" and gtube["score"] == 100 and "GTUBE" in gtube["reason"]
    assert all(set(r) == {"path", "action", "score", "category", "symbols"} for r in results)


def test_cli_json_lines(mail_tree):
    proc = _run(str(mail_tree / "a.eml"), str(mail_tree / "sub"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == [
        "a.eml",
        "b.eml",
        "box.mbox#1",
        "box.mbox#2",
        "box.mbox#3",
    ]
    assert [r["category"] for r in rows] == ["clean", "spam", "clean", "spam", "clean"]
    assert rows[1]["symbols"][0]["name"] == "GTUBE"
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal


def test_cli_text_format(mail_tree):
    proc = _run(str(mail_tree / "sub" / "b.eml"), "--format", "text")
    assert proc.returncode == 0, proc.stderr
    line, *reasons = proc.stdout.strip().splitlines()
    # The content models add their own symbols after GTUBE; the verdict comes first.
    assert "b.eml: reject score=" in line and " category=spam GTUBE(100)" in line, line
    # Then every symbol's reason on a line of its own, in the order of the first line.
    assert reasons[0] == "    GTUBE +100: contains the GTUBE test string", reasons
    names = [part.split("(")[0] for part in line.split(" category=spam ")[1].split()]
    assert [r.split()[0] for r in reasons] == names
    assert all(r.startswith("    ") and ": " in r for r in reasons), reasons


def test_workers_keep_output_order(tmp_path):
    for i in range(12):
        (tmp_path / f"m{i:02d}.eml").write_bytes(SPAM if i % 3 == 0 else CLEAN)
    proc = _run(str(tmp_path), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == [f"m{i:02d}.eml" for i in range(12)]
    assert [r["action"] for r in rows] == ["reject" if i % 3 == 0 else "accept" for i in range(12)]


def test_workers_in_process_match_single_process(mail_tree):
    items = collect([mail_tree])
    assert list(scan_items(items, make_config(), workers=2)) == list(
        scan_items(items, make_config())
    )


def test_cli_two_workers_give_the_same_verdicts_as_one(tmp_path):
    # Tiers 1 and 2 on (tier 2 on every message, numpy engine: no graph to build), as the
    # default config runs them: spawned workers must load and use the same models. A forked
    # pool once inherited tier 2's model thread dead, and its messages got DEEP_FAIL.
    cfg = tmp_path / "c.toml"
    cfg.write_text('[deep]\nmode = "all"\nengine = "numpy"\nmin_tokens = 0\n'
                   "timeout_ms = 60000\nload_timeout = 120\n")
    mail = tmp_path / "mail"
    mail.mkdir()
    bodies = [
        ("Lunch", "See you at noon by the fountain.\n", None),
        ("Quarterly report", "Attached are the figures we discussed on Monday.\n", None),
        ("Verify your account", "Your mailbox is full. Log in at http://login.example.test/"
         " within 24 hours or it will be closed.\n",
         '<p>Click <a href="http://198.51.100.7/x">https://bank.example.test</a></p>'),
        ("Cheap meds", "Buy cheap pills online, best prices, no prescription needed!!!\n", None),
        ("Win", "test " + GTUBE.decode() + "\n", None),
        ("Re: invoice", "Please wire the payment to the new account today.\n", None),
    ]
    for i, (subject, body, html) in enumerate(bodies):
        (mail / f"m{i}.eml").write_bytes(make_email(subject=subject, body=body, html=html))
    (mail / "box.mbox").write_bytes(_mbox(CLEAN, SPAM))
    one, two = (_run("--config", str(cfg), "--workers", w, str(mail)) for w in ("1", "2"))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    rows = [json.loads(line) for line in one.stdout.splitlines()]
    assert len(rows) == len(bodies) + 2
    assert not any(s["name"] == "DEEP_FAIL" for r in rows for s in r["symbols"]), rows
    assert sorted(one.stdout.splitlines()) == sorted(two.stdout.splitlines())


@pytest.mark.parametrize(
    "args,message",
    [
        (["/definitely/not/here.eml"], "no such file or directory: /definitely/not/here.eml"),
        (["--config", "/definitely/not/here.toml", "."], "config file not found"),
        (["--format", "xml", "."], "--format must be json or text"),
    ],
)
def test_usage_errors_exit_2(args, message):
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_invalid_config_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[policy]\nreject_threshold = 'high'\n")
    proc = _run("--config", str(cfg), str(tmp_path))
    assert proc.returncode == 2 and "invalid configuration" in proc.stderr
    cfg.write_text("[policy\n")
    proc = _run("--config", str(cfg), str(tmp_path))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_config_refused_by_a_family_exits_2(tmp_path, workers):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[policy]\nblock_ips = ["10.0.0.300"]\n')
    (tmp_path / "m.eml").write_bytes(CLEAN)
    proc = _run("--config", str(cfg), "--workers", workers, str(tmp_path / "m.eml"))
    assert proc.returncode == 2, proc.stderr
    assert "10.0.0.300" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_config_thresholds_apply(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[policy]\nblock_senders = ["@sender.test"]\nblock_action = "quarantine"\n')
    (tmp_path / "m.eml").write_bytes(CLEAN)
    proc = _run("--config", str(cfg), str(tmp_path / "m.eml"))
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["action"] == "quarantine" and row["category"] == "policy"
    assert row["symbols"][0]["name"] == "POLICY_BLOCK_SENDER"


def test_file_vanishing_before_it_is_read_is_reported_and_others_scanned(tmp_path):
    (tmp_path / "a.eml").write_bytes(CLEAN)
    (tmp_path / "b.eml").write_bytes(CLEAN)
    (tmp_path / "c.mbox").write_bytes(_mbox(CLEAN))
    items = collect([tmp_path])
    (tmp_path / "a.eml").unlink()
    (tmp_path / "c.mbox").write_bytes(b"")  # truncated after it was listed
    rows = list(scan_items(items, make_config()))
    assert [Path(r["path"]).name for r in rows] == ["a.eml", "b.eml", "c.mbox#1"]
    assert "FileNotFoundError" in rows[0]["error"] and set(rows[0]) == {"path", "error"}
    assert rows[1]["action"] == "accept"
    assert "error" in rows[2]


def test_progress_bar_on_a_terminal(tmp_path):
    import pty

    (tmp_path / "m.eml").write_bytes(CLEAN)
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            mailmoat_cmd("scan", str(tmp_path)),
            env=subprocess_env(TERM="xterm"),
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
        )
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"scanning" in err
    assert json.loads(proc.stdout)["action"] == "accept"


@pytest.mark.parametrize(
    "headers,mail_from,ip,direction",
    [
        (
            b"Return-Path: <Bounce@Lists.test>\nReceived: from x (x [198.51.100.7]) by mx\nFrom: a@b.test\n",
            "bounce@lists.test",
            "198.51.100.7",
            Direction.INBOUND,
        ),
        (b"From: Boss <boss@example.test>\n", "boss@example.test", None, Direction.OUTBOUND),
        (
            b"Received: from x ([IPv6:2001:db8::1]) by mx\nFrom: a@b.test\n",
            "a@b.test",
            "2001:db8::1",
            Direction.INBOUND,
        ),
        (b"\xff\xfe garbage\n", "", None, Direction.INBOUND),
        # A stored bounce without Return-Path came from the null sender (RFC 5321 4.5.5),
        # not from the reporting MTA's From, even when that mailbox is one of ours.
        (
            b"From: Microsoft Outlook <MicrosoftExchange1@example.test>\n"
            b"Content-Type: multipart/report;\n\tboundary=\"b\";\n\treport-type=delivery-status\n",
            "",
            None,
            Direction.INBOUND,
        ),
        (
            b"From: a@b.test\nContent-Type: multipart/report; report-type=\"disposition-notification\";"
            b" boundary=x\n",
            "",
            None,
            Direction.INBOUND,
        ),
        # Return-Path, where the file kept it, still says who the envelope sender was.
        (
            b"Return-Path: <bounces@b.test>\nFrom: a@b.test\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n",
            "bounces@b.test",
            None,
            Direction.INBOUND,
        ),
        # The null sender as Sendmail and Exchange ("<MAILER-DAEMON>") and qmail ("<#@[]>")
        # record it in Return-Path: no mailbox, whatever From says.
        (b"Return-Path: <MAILER-DAEMON>\nFrom: <postmaster@example.test>\n", "", None,
         Direction.INBOUND),
        (b"Return-Path: <#@[]>\nFrom: MAILER-DAEMON@b.test\n", "", None, Direction.INBOUND),
        (b"Return-Path: <>\nFrom: Mail Delivery System <MAILER-DAEMON@b.test>\n", "", None,
         Direction.INBOUND),
        # A mailbox of that name at a domain is an ordinary sender.
        (b"Return-Path: <mailer-daemon@b.test>\nFrom: x@b.test\n", "mailer-daemon@b.test", None,
         Direction.INBOUND),
        # Another multipart type is no report: From stands in as before.
        (b"From: a@b.test\nContent-Type: multipart/mixed; boundary=x\n", "a@b.test", None,
         Direction.INBOUND),
    ],
)
def test_envelope_from_stored_headers(headers, mail_from, ip, direction):
    env = envelope_for(headers + b"\nbody\n", make_config())
    assert (env.mail_from, env.client_ip, env.direction) == (mail_from, ip, direction)


@pytest.mark.parametrize("network", [False, True])
def test_network_flag_reaches_the_scanner(network):
    # Checked on the built scanner, not by scanning: a look-up must never leave loopback.
    from mailmoat.commands import scan as scan_cmd

    scan_cmd._init_worker(make_config(), network)
    try:
        ctx = scan_cmd._worker["scanner"].ctx
        assert ctx.network is network
        checks = scan_cmd._worker["scanner"].pipeline.checks
        assert network or not any(c.needs_network for c in checks)
    finally:
        scan_cmd._close_worker()
    assert scan_cmd._worker == {}
