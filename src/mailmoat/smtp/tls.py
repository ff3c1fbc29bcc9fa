"""TLS for STARTTLS: the configured certificate, or a self-signed one made on first start."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from mailmoat.config import Config
from mailmoat.errors import ConfigError


def ensure_self_signed(data_dir: Path, hostname: str) -> tuple[Path, Path]:
    """Create data_dir/tls/{cert,key}.pem once (RSA 2048, ten years) and return the paths."""
    d = data_dir / "tls"
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.replace(tmp_key, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(config: Config) -> ssl.SSLContext:
    if config.smtp.tls_cert:
        cert, key = config.resolve_path(config.smtp.tls_cert), config.resolve_path(
            config.smtp.tls_key or config.smtp.tls_cert)
    else:
        cert, key = ensure_self_signed(config.data_dir, config.smtp.hostname)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except OSError as exc:  # ssl.SSLError too: one line that says what to change
        why = exc.strerror or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(f"[smtp] tls_cert {cert} / tls_key {key} cannot be used ({why}): "
                          "make them readable PEM files of one key pair, or change [smtp] "
                          "tls_cert and tls_key (empty: a self-signed certificate)") from None
    return ctx


def handshake_failure(error: BaseException) -> str:
    """Why a STARTTLS handshake failed, in one short line ("WRONG_VERSION_NUMBER",
    "TLSV1_ALERT_UNKNOWN_CA", "connection closed"). Failed handshakes are routine (scanners,
    clients that distrust a self-signed certificate, old TLS versions); each deserves one log
    line, not a traceback. aiosmtpd wraps the cause in its TLSSetupException."""
    cause = error.__cause__ or error.__context__ or error
    if isinstance(cause, ssl.SSLError):
        text = cause.reason or cause.strerror or str(cause)
    elif isinstance(cause, (ConnectionError, EOFError)):
        text = str(cause) or "connection closed"
    elif cause is error:
        text = str(error)
    else:
        text = f"{type(cause).__name__}: {cause}"
    return " ".join(str(text).split())[:200] or type(cause).__name__
