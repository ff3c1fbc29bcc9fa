"""`mailmoat dkim …`: DKIM key management for outbound signing.

`mailmoat dkim keygen --domain example.test --selector mm1 --out keys/` writes
`keys/example.test.mm1.pem` (mode 0600, never overwritten) and prints the TXT record to
publish plus the `[dkim_signing]` lines that use the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer

from mailmoat.dkimsign import dns_record_value, generate_private_key, zone_file_line

dkim_app = typer.Typer(help="DKIM keys for signing outbound mail.", no_args_is_help=True)

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _check_name(value: str, what: str) -> str:
    value = value.strip().rstrip(".").lower()
    if not value or not all(_LABEL.match(p) for p in value.split(".")):
        raise typer.BadParameter(f"{value!r} is not a valid {what}")
    return value


@dkim_app.command("keygen")
def keygen(
    domain: str = typer.Option(..., "--domain", help="signing domain (d=)"),
    selector: str = typer.Option(..., "--selector", help="selector (s=)"),
    key_type: str = typer.Option("rsa", "--type", help="rsa or ed25519"),
    bits: int = typer.Option(2048, "--bits", help="RSA key size"),
    out: Path = typer.Option(Path("."), "--out", help="folder for the private key"),
) -> None:
    """Make a signing key, write it to OUT, and print the DNS TXT record to publish."""
    domain = _check_name(domain, "domain")
    selector = _check_name(selector, "selector")
    key_type = key_type.lower()
    if key_type not in ("rsa", "ed25519"):
        raise typer.BadParameter("--type must be rsa or ed25519")
    if key_type == "rsa" and bits < 1024:
        raise typer.BadParameter("--bits must be at least 1024 (receivers reject shorter keys)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{domain}.{selector}.pem"
    pem = generate_private_key(key_type, bits)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        typer.echo(f"error: {path} exists; choose another selector or move it away", err=True)
        raise typer.Exit(1) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    value = dns_record_value(pem)
    typer.echo(f"; private key written to {path}")
    typer.echo(f"; publish this TXT record at {selector}._domainkey.{domain}:")
    typer.echo(zone_file_line(selector, domain, value))
    typer.echo("; and sign with it by adding to the config:")
    typer.echo("; [dkim_signing]")
    typer.echo(f'; keys = {{ "{domain}" = {{ selector = "{selector}", key_file = "{path}" }} }}')


def register(app: typer.Typer) -> None:
    app.add_typer(dkim_app, name="dkim")
