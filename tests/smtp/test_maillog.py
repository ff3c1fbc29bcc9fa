"""The mail log (logger `mailmoat.mail`): one line per message and per delivery attempt,
escaped so no sender text can break a line, and start-up errors as one line."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess

import aiosmtplib
import pytest

from mailmoat import maillog
from mailmoat.errors import ConfigError
from mailmoat.scan.gtube import GTUBE
from mailmoat.store.quarantine import delete_message, release_message
from tests.conftest import make_email, mailmoat_cmd, subprocess_env
from tests.smtp.helpers import (
    Sink,
    free_port,
    gateway_config,
    running_gateway,
    start_sink,
    wait_until,
)


@pytest.fixture
def mail_log(caplog):
    caplog.set_level(logging.INFO, logger="mailmoat.mail")
    maillog.set_format("text")
    yield caplog
    maillog.set_format("text")


def lines(caplog, *needles: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mailmoat.mail"
            and all(n in r.getMessage() for n in needles)]


def fields(line: str) -> dict[str, str]:
    """Parse a key=value line the way a log shipper would (shlex-like quoting)."""
    import shlex

    return dict(part.split("=", 1) for part in shlex.split(line, posix=True))


async def send(port: int, mail_from: str, rcpts: list[str], raw: bytes) -> str:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await c.connect()
    _, reply = await c.sendmail(mail_from, rcpts, raw)
    await c.quit()
    return reply.rsplit(" ", 1)[1]


# -- the line format ---------------------------------------------------------------------------


def test_escape_keeps_every_value_on_one_line():
    assert maillog.escape("a@b.test") == "a@b.test"
    assert maillog.escape("") == '""'
    assert maillog.escape("two words") == '"two words"'
    evil = 'x\r\nid=forged action=accept "q" \\ \x1b\x00\x85\u2028'
    out = maillog.escape(evil)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\x00" not in out
    assert "\x85" not in out and "\u2028" not in out
    assert out == ('"x\\r\\nid=forged action=accept \\"q\\" \\\\ \\x1b\\x00\\x85\\u2028"')
    line = maillog.format_fields({"id": "M1", "from": evil, "rcpts": 1})
    assert line.splitlines() == [line]
    assert line.startswith("id=M1 from=") and line.endswith(" rcpts=1")
    assert fields(line.replace("\\x", "x").replace("\\u", "u"))["rcpts"] == "1"
    assert maillog.escape("jörg@exämple.test") == "jörg@exämple.test"  # SMTPUTF8 unquoted


def test_json_format_is_one_object_per_line():
    line = maillog.format_fields({"id": "M1", "from": "a\nb", "size": 10, "gone": None},
                                 fmt="json")
    assert "\n" not in line and json.loads(line) == {"id": "M1", "from": "a\nb", "size": 10}


def test_log_section_is_validated():
    from mailmoat.config import config_from_dict

    assert config_from_dict({"log": {"format": "json"}}).log.format == "json"
    with pytest.raises(ConfigError, match="format"):
        config_from_dict({"log": {"format": "xml"}})


# -- intake ------------------------------------------------------------------------------------


async def test_every_accepted_message_has_an_intake_line(tmp_path, sink, mail_log):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        ids = [await send(gw.smtp_port, "alice@sender.test", ["bob@example.test"],
                          make_email(subject=f"n{i}")) for i in range(3)]
        await sink.wait_for(3)
        await wait_until(lambda: all(lines(mail_log, f"id={m}", "status=sent") for m in ids),
                         what="delivery lines")
    for mid in ids:
        (rec,) = lines(mail_log, f"id={mid}", "client=")
        f = fields(rec.getMessage())
        assert f["id"] == mid and f["client"] == "127.0.0.1"
        assert f["from"] == "alice@sender.test" and f["rcpts"] == "1"
        assert int(f["size"]) > 100 and f["action"] in ("accept", "tag")
        assert float(f["score"]) == pytest.approx(float(f["score"]))
        assert int(f["ms"]) >= 0 and "top" in f
        (sent,) = lines(mail_log, f"id={mid}", "status=sent")
        s = fields(sent.getMessage())
        assert s["to"] == "bob@example.test" and s["relay"] == f"127.0.0.1:{sink.port}"
        assert s["dsn"] == "2.0.0" and s["reply"] == "250 2.0.0 sink ok"
        assert float(s["delay"]) >= 0


async def test_rejected_message_has_a_reject_line(tmp_path, sink, mail_log):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                            timeout=10)
        await c.connect()
        with pytest.raises(aiosmtplib.SMTPDataError):
            await c.sendmail("spammer@sender.test", ["bob@example.test"],
                             make_email(body=f"test\n{GTUBE.decode()}\n"))
        await c.quit()
    (rec,) = lines(mail_log, "action=reject")
    f = fields(rec.getMessage())
    assert f["code"] == "550 5.7.1" and f["from"] == "spammer@sender.test"
    assert "GTUBE" in f["top"] and f["id"]


async def test_crlf_in_subject_cannot_break_a_line(tmp_path, sink, mail_log):
    cfg = gateway_config(tmp_path, sink.port, log={"format": "text"})
    raw = make_email(subject="=?utf-8?q?hi=0D=0Aid=3Dforged_action=3Daccept?=")
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "a@sender.test", ["bob@example.test"], raw)
        await sink.wait_for(1)
        # The edge refuses control characters in MAIL FROM (501), so nothing reaches the log.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await reader.readline()
        writer.write(b"HELO client.test\r\n")
        await reader.readline()
        writer.write(b"MAIL FROM:<a\rid=forged@sender.test>\r\n")
        assert (await reader.readline()).startswith(b"501 ")
        writer.close()
    for rec in lines(mail_log):
        assert "\n" not in rec.getMessage() and "\r" not in rec.getMessage()
        assert "forged" not in rec.getMessage()
    assert lines(mail_log, f"id={mid}", "client=")


async def test_json_format_from_config(tmp_path, sink, mail_log):
    cfg = gateway_config(tmp_path, sink.port, log={"format": "json"})
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "alice@sender.test", ["bob@example.test"], make_email())
        await sink.wait_for(1)
        await wait_until(lambda: lines(mail_log, mid, '"status":"sent"'), what="json line")
    intake = [json.loads(r.getMessage()) for r in lines(mail_log, mid, '"client"')]
    assert intake[0]["id"] == mid and intake[0]["rcpts"] == 1


# -- delivery attempts and outages ---------------------------------------------------------------


async def test_closed_port_deferred_one_warning_then_back(tmp_path, mail_log):
    port = free_port()  # nobody listens yet
    cfg = gateway_config(tmp_path, port, delivery={"retry_schedule": [1]})
    sink = Sink()
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "a@sender.test", ["bob@example.test"], make_email())
        await wait_until(lambda: len(lines(mail_log, f"id={mid}", "status=deferred")) >= 2,
                         timeout=15, what="two deferred attempts")
        f = fields(lines(mail_log, f"id={mid}", "status=deferred")[0].getMessage())
        assert f["relay"] == f"127.0.0.1:{port}" and f["dsn"] == "4.4.1"
        assert "Connect call failed" in f["reply"]
        warnings = [r for r in lines(mail_log) if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "event=unreachable" in warnings[0].getMessage()
        assert f"relay=127.0.0.1:{port}" in warnings[0].getMessage()
        server = await start_sink(sink, port)
        try:
            await sink.wait_for(1, timeout=15)
            await wait_until(lambda: lines(mail_log, f"id={mid}", "status=sent"),
                             what="sent line")
            await wait_until(lambda: lines(mail_log, "event=reachable"), what="back line")
        finally:
            server.close()
    assert [r.levelno for r in lines(mail_log, "event=reachable")] == [logging.INFO]
    assert len([r for r in lines(mail_log) if r.levelno == logging.WARNING]) == 1


async def test_quarantine_hold_release_delete_lines(tmp_path, sink, mail_log):
    from mailmoat.store.models import QuarantineRow

    cfg = gateway_config(tmp_path, sink.port,
                         policy={"recipients": {"held@example.test": {"quarantine_threshold": 0.0}}})
    async with running_gateway(cfg) as gw:
        mid = await send(gw.smtp_port, "a@sender.test", ["held@example.test"], make_email())

        def held() -> bool:
            with gw.db.session() as s:
                return s.get(QuarantineRow, mid) is not None

        await wait_until(held, what="quarantine row")
        await asyncio.to_thread(release_message, cfg, gw.db, mid, "alice")
        await sink.wait_for(1)
        await asyncio.to_thread(delete_message, cfg, gw.db, mid, "bob")
    assert lines(mail_log, f"id={mid}", "action=hold", "to=held@example.test")
    assert lines(mail_log, f"id={mid}", "action=release", "by=alice", "to=held@example.test")
    assert lines(mail_log, f"id={mid}", "action=delete", "by=bob")


# -- start-up errors ---------------------------------------------------------------------------


def _serve_config(tmp_path, listen: str, **smtp: str):
    cfg = tmp_path / "mailmoat.toml"
    extra = "".join(f'{k} = "{v}"\n' for k, v in smtp.items())
    cfg.write_text(f'[smtp]\nlisten = "{listen}"\n{extra}[storage]\ndata_dir = "data"\n'
                   '[web]\nenabled = false\n[scan]\nnetwork = false\n')
    return cfg


def _serve(cfg) -> subprocess.CompletedProcess:
    return subprocess.run(mailmoat_cmd("serve", "--config", str(cfg), "--log-level", "WARNING"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)


def test_serve_on_a_port_in_use_exits_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _serve(_serve_config(tmp_path, f"127.0.0.1:{port}"))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: [smtp] listen 127.0.0.1:{port} is in use by another process: stop it or "
        "change [smtp] listen"]


def test_serve_bad_port_and_unreadable_tls_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from mailmoat.cli import app

    bad = _serve_config(tmp_path, "127.0.0.1:99999")
    res = CliRunner().invoke(app, ["serve", "--config", str(bad), "--log-level", "WARNING"])
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit)
    assert "[smtp] listen 127.0.0.1:99999: port 99999 is out of range" in res.stderr
    assert "Traceback" not in res.stderr

    tls = _serve_config(tmp_path, f"127.0.0.1:{free_port()}",
                        tls_cert=str(tmp_path / "missing.pem"))
    res = CliRunner().invoke(app, ["serve", "--config", str(tls), "--log-level", "WARNING"])
    assert res.exit_code == 2
    assert "[smtp] tls_cert" in res.stderr and "cannot be used" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


async def test_web_listen_in_use_is_one_config_error(tmp_path, sink):
    from mailmoat.listen import open_listener

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as exc:
            open_listener("[web] listen", f"127.0.0.1:{port}")
    assert str(exc.value) == (f"[web] listen 127.0.0.1:{port} is in use by another process: "
                              "stop it or change [web] listen")
