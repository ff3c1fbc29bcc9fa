"""ClamAV through a real clamd (started by mailmoat.evaluation.clamd) over unix and TCP sockets."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import zipfile
from pathlib import Path

import pytest

from mailmoat.errors import ConfigError
from mailmoat.scan.antivirus import ClamdClient, ClamdError, parse_address
from mailmoat.scan.base import Action, Category
from mailmoat.scan.facts import AntivirusFacts, VirusFound
from mailmoat.evaluation.clamd import EICAR, eicar_corpus_dir, running_clamd
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

pytestmark = pytest.mark.clamd

CORPUS = eicar_corpus_dir()
needs_corpus = pytest.mark.skipif(
    CORPUS is None, reason="EICAR corpus not found at ../shared/corpus/eicar")


def av_config(address: str, **extra: object):
    return make_config(antivirus={"clamd": address, **extra}, attachments={"enabled": False})


@pytest.fixture(params=["unix", "tcp"])
def address(request, clamd_server) -> str:
    return clamd_server.unix_address if request.param == "unix" else clamd_server.tcp_address


async def test_ping_and_instream(address):
    client = ClamdClient(address, timeout=5)
    assert await client.ping()
    assert (await client.version()).startswith("ClamAV")
    assert await client.instream(b"just some harmless bytes\n") is None
    assert await client.instream(b"prefix " + EICAR + b" suffix") is not None


async def test_instream_chunks_large_stream(clamd_server):
    # 3 MB in 4 KiB chunks, EICAR at the very end: all chunks must arrive in order.
    client = ClamdClient(clamd_server.unix_address, chunk_size=4096, timeout=20)
    data = bytes(range(256)) * (3 * 4096) + EICAR
    assert await client.instream(data) == "Mailmoat.Test.EICAR-String.UNOFFICIAL"


@needs_corpus
@pytest.mark.parametrize("name", ["eicar_attachment", "eicar_txt_attachment",
                                  "eicar_zip_attachment", "eicar_nested_zip_attachment"])
async def test_corpus_eicar_messages_are_rejected(address, name):
    raw = (CORPUS / "messages" / f"{name}.eml").read_bytes()
    outcome = await scan_bytes(raw, av_config(address))
    sym = outcome.result.get("AV_VIRUS_FOUND")
    assert sym is not None, symbol_names(outcome)
    assert "EICAR" in sym.reason and "the message" in sym.reason
    assert outcome.verdict.action is Action.REJECT
    assert outcome.result.forced[2] is Category.MALWARE


@needs_corpus
async def test_corpus_clean_control_passes(address):
    raw = (CORPUS / "messages" / "clean_control_attachment.eml").read_bytes()
    outcome = await scan_bytes(raw, av_config(address))
    assert not outcome.result.has("AV_VIRUS_FOUND")
    assert not outcome.result.has("AV_UNAVAILABLE")
    assert outcome.verdict.action is Action.ACCEPT


@needs_corpus
async def test_sigtool_md5_signature_alone_finds_zip_in_zip(tmp_path):
    # Only the `sigtool --md5` hash signature: clamd itself must unpack MIME, zip and zip.
    short = Path("/tmp") / f"mm-hdb-{tmp_path.name[-12:]}"
    short.mkdir()
    try:
        with running_clamd(short, signatures=("hdb",)) as server:
            client = ClamdClient(server.unix_address)
            nested = (CORPUS / "messages" / "eicar_nested_zip_attachment.eml").read_bytes()
            clean = (CORPUS / "messages" / "clean_control_attachment.eml").read_bytes()
            assert (await client.instream(nested) or "").startswith("eicar.com")
            assert await client.instream(clean) is None
        # the fixture stops what it started: no clamd left behind
        with pytest.raises(ProcessLookupError):
            os.kill(server.pid, 0)
        assert not Path(server.socket_path).exists() or not _accepts(server.socket_path)
    finally:
        import shutil
        shutil.rmtree(short, ignore_errors=True)


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


async def test_built_zip_in_zip_in_base64_is_found(clamd_server):
    inner = _zip("readme.com", EICAR)
    outer = _zip("docs.zip", inner)
    raw = make_email(subject="files", attachments=[("docs.zip", "application/zip", outer)])
    outcome = await scan_bytes(raw, av_config(clamd_server.unix_address))
    assert outcome.result.has("AV_VIRUS_FOUND")
    assert outcome.verdict.action is Action.REJECT


async def test_quarantine_action_and_per_attachment_scan(clamd_server):
    raw = make_email(attachments=[("a.txt", "text/plain", b"fine"),
                                  ("b.bin", "application/octet-stream", EICAR)])
    cfg = av_config(clamd_server.tcp_address, action="quarantine", scan="attachments")
    outcome = await scan_bytes(raw, cfg)
    sym = outcome.result.get("AV_VIRUS_FOUND")
    assert sym is not None and "attachment 'b.bin'" in sym.reason
    assert "a.txt" not in sym.reason
    assert outcome.result.facts.antivirus == AntivirusFacts(
        engine="clamav", scanned=("attachment 'a.txt'", "attachment 'b.bin'"),
        found=(VirusFound(where="attachment 'b.bin'",
                          signature="Mailmoat.Test.EICAR-String.UNOFFICIAL"),))
    assert outcome.verdict.action is Action.QUARANTINE


async def test_stream_over_clamd_limit_is_unavailable_not_clean(tmp_path):
    short = Path("/tmp") / f"mm-lim-{tmp_path.name[-12:]}"
    short.mkdir()
    try:
        with running_clamd(short, stream_max="1M") as server:
            big = make_email(attachments=[("big.bin", "application/octet-stream",
                                           bytes(range(256)) * 8192)])  # 2 MB
            outcome = await scan_bytes(big, av_config(server.unix_address))
            sym = outcome.result.get("AV_UNAVAILABLE")
            assert sym is not None, symbol_names(outcome)
            # either clamd said so, or it reset the connection and we name the likely cause
            assert "size limit exceeded" in sym.reason or "StreamMaxLength" in sym.reason
            assert outcome.verdict.action is Action.ACCEPT  # fail-open by default
    finally:
        import shutil
        shutil.rmtree(short, ignore_errors=True)


def _dead_unix_socket(tmp_path: Path) -> str:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nothing listens: connection refused
    return f"unix:{path}"


async def test_clamd_down_fails_open_by_default(tmp_path):
    raw = make_email(attachments=[("b.bin", "application/octet-stream", EICAR)])
    outcome = await scan_bytes(raw, av_config(_dead_unix_socket(tmp_path)))
    sym = outcome.result.get("AV_UNAVAILABLE")
    assert sym is not None and sym.score == 0
    assert "cannot connect to clamd" in sym.reason
    assert not outcome.result.has("ANTIVIRUS_FAIL")
    assert outcome.result.forced is None
    assert outcome.verdict.action is Action.ACCEPT


async def test_clamd_down_fail_closed_quarantines():
    # A TCP port nobody listens on (bound, never listening) on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        raw = make_email()
        outcome = await scan_bytes(raw, av_config(f"tcp:127.0.0.1:{port}", fail_closed=True))
    assert outcome.result.has("AV_UNAVAILABLE")
    assert outcome.verdict.action is Action.QUARANTINE


async def test_clamd_that_never_answers_times_out(tmp_path):
    # A listener that accepts and then says nothing: the read timeout must fire.
    async def silent(reader, writer):
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ClamdClient(f"tcp:127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(ClamdError, match="did not answer within 0.3s"):
            await client.instream(b"data")
    finally:
        server.close()


async def test_error_reply_is_unavailable_not_clean(tmp_path):
    async def refuse(reader, writer):
        await reader.readuntil(b"\0")
        writer.write(b"INSTREAM size limit exceeded. ERROR\0")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await scan_bytes(make_email(), av_config(f"tcp:127.0.0.1:{port}"))
    finally:
        server.close()
    sym = outcome.result.get("AV_UNAVAILABLE")
    assert sym is not None and "size limit exceeded" in sym.reason


def test_address_parsing_and_config_errors():
    assert parse_address("unix:/run/clamav/clamd.ctl").unix_path == "/run/clamav/clamd.ctl"
    a = parse_address("tcp:127.0.0.1:3310")
    assert (a.host, a.port) == ("127.0.0.1", 3310)
    with pytest.raises(ValueError):
        parse_address("127.0.0.1:3310")
    from mailmoat.scan.antivirus import build
    from mailmoat.scan.base import BuildContext

    with pytest.raises(ConfigError, match="unix:"):
        build(BuildContext(config=make_config(antivirus={"clamd": "localhost:3310"})))
    with pytest.raises(ConfigError, match="reject or quarantine"):
        build(BuildContext(config=make_config(antivirus={"clamd": "tcp:127.0.0.1:1",
                                                         "action": "bounce"})))
    assert build(BuildContext(config=make_config())) == []  # empty address: off


async def test_scan_both_with_many_attachments(clamd_server):
    files = [(f"part{i}.txt", "text/plain", f"harmless part {i}\n".encode()) for i in range(11)]
    files.append(("z.bin", "application/octet-stream", EICAR))
    cfg = av_config(clamd_server.unix_address, scan="both")
    outcome = await scan_bytes(make_email(attachments=files), cfg)
    av = outcome.result.facts.antivirus
    assert len(av.scanned) == 13  # the message and its 12 attachments
    assert [f.where for f in av.found] == ["the message", "attachment 'z.bin'"]
    assert "in the message, attachment 'z.bin'" in outcome.result.get("AV_VIRUS_FOUND").reason


async def test_whole_message_goes_to_clamd_before_the_parse(clamd_server):
    """clamd reads the raw message while we parse ours; the check uses that answer."""
    from mailmoat.message.model import Envelope
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner

    raw = make_email(body="see attached\n" + EICAR.decode())
    env = Envelope(mail_from="a@sender.test", rcpt_tos=("bob@example.test",))
    for scan_mode, started in (("message", {"clamav"}), ("both", {"clamav"}),
                               ("attachments", set())):
        scanner = Scanner(BuildContext(av_config(clamd_server.unix_address, scan=scan_mode)))
        try:
            early = scanner.pipeline.start_early(raw, env)
            assert set(early) == started
            if started:
                assert await early["clamav"] == "Mailmoat.Test.EICAR-String.UNOFFICIAL"
            if scan_mode != "attachments":
                out = await scanner.scan(raw, env)
                assert "in the message" in out.result.get("AV_VIRUS_FOUND").reason
        finally:
            await scanner.close()
