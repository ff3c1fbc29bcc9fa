"""Outbound DKIM signing and `mailmoat dkim keygen`, verified through the inbound check."""

from __future__ import annotations

import re
import subprocess

import dkim.util
import pytest

from mailmoat.config import config_from_dict
from mailmoat.dkimsign import DkimSigner
from mailmoat.errors import ConfigError
from tests.auth.conftest import names, scan_auth
from tests.conftest import mailmoat_cmd, make_email, subprocess_env


def _keygen(tmp_path, *args: str) -> tuple[str, str]:
    proc = subprocess.run(mailmoat_cmd("dkim", "keygen", "--domain", "sender.test",
                                       "--selector", "mm1", "--out", str(tmp_path / "keys"),
                                       *args),
                          capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def _record(stdout: str) -> str:
    line = next(l for l in stdout.splitlines() if l.startswith("mm1._domainkey.sender.test."))
    return "".join(re.findall(r'"([^"]*)"', line))


@pytest.mark.parametrize("args, k", [(("--type", "rsa", "--bits", "1024"), b"rsa"),
                                     (("--type", "ed25519"), b"ed25519")])
async def test_keygen_record_verifies_signed_mail(tmp_path, dns_server, args, k):
    stdout, _ = _keygen(tmp_path, *args)
    key_file = tmp_path / "keys" / "sender.test.mm1.pem"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    value = _record(stdout)
    tags = dkim.util.parse_tag_value(value.encode())
    assert tags[b"v"] == b"DKIM1" and tags[b"k"] == k and tags[b"p"]
    dns_server.zones["mm1._domainkey.sender.test"] = {"TXT": [value]}

    cfg = config_from_dict({"dkim_signing": {"keys": {"sender.test": {
        "selector": "mm1", "key_file": str(key_file)}}}})
    signed = DkimSigner.from_config(cfg).sign(make_email(), "sender.test")
    assert signed.startswith(b"DKIM-Signature:")
    out = await scan_auth(signed, dns_server)
    assert "DKIM_PASS" in names(out)


def test_keygen_refuses_to_overwrite_and_bad_input(tmp_path):
    from typer.testing import CliRunner

    from mailmoat.cli import app

    runner = CliRunner()
    args = ["dkim", "keygen", "--domain", "sender.test", "--selector", "mm1", "--type",
            "ed25519", "--out", str(tmp_path / "keys")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    key = (tmp_path / "keys" / "sender.test.mm1.pem").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "exists" in again.output
    assert (tmp_path / "keys" / "sender.test.mm1.pem").read_bytes() == key
    bad = runner.invoke(app, ["dkim", "keygen", "--domain", "bad domain!", "--selector", "s",
                              "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "not a valid domain" in bad.output
    small = runner.invoke(app, ["dkim", "keygen", "--domain", "a.test", "--selector", "s",
                                "--bits", "512", "--out", str(tmp_path)])
    assert small.exit_code != 0 and "1024" in small.output


def test_signer_signs_expected_headers_and_uses_parent_domain_key(tmp_path, ed_pem):
    (tmp_path / "k.pem").write_bytes(ed_pem)
    cfg = config_from_dict({"dkim_signing": {"keys": {"sender.test": {
        "selector": "ed", "key_file": "k.pem"}}}}, source=str(tmp_path / "mailmoat.toml"))
    signer = DkimSigner.from_config(cfg)
    raw = make_email()
    signed = signer.sign(raw, "mail.sender.test")
    header = signed.split(b"\n\n", 1)[0].decode()
    sig = re.search(r"DKIM-Signature:(.*?)(?=\n\S)", header, re.S).group(1)
    tags = dkim.util.parse_tag_value(re.sub(r"\s+", " ", sig).encode())
    assert tags[b"d"] == b"sender.test" and tags[b"a"] == b"ed25519-sha256"
    signed_headers = re.sub(rb"\s", b"", tags[b"h"]).split(b":")
    for h in (b"from", b"to", b"subject", b"date", b"message-id", b"content-type"):
        assert h in signed_headers
    assert signed_headers.count(b"from") == 2  # oversigned: a second From breaks it
    assert signer.sign(raw, "other.test") == raw  # no key: unchanged


def test_signer_config_errors(tmp_path):
    cfg = config_from_dict({"dkim_signing": {"keys": {"a.test": {
        "selector": "s", "key_file": str(tmp_path / "missing.pem")}}}})
    with pytest.raises(ConfigError, match="cannot read"):
        DkimSigner.from_config(cfg)
    (tmp_path / "bad.pem").write_text("not a key")
    cfg = config_from_dict({"dkim_signing": {"keys": {"a.test": {
        "selector": "s", "key_file": str(tmp_path / "bad.pem")}}}})
    with pytest.raises(ConfigError, match="a.test"):
        DkimSigner.from_config(cfg)


def test_signer_without_config_passes_mail_through():
    raw = make_email()
    assert DkimSigner.from_config(config_from_dict({})).sign(raw, "sender.test") == raw
