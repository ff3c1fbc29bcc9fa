"""Outbound DKIM signing, called by the delivery path for mail leaving the company.

Interface used by the relay: `DkimSigner.from_config(config).sign(raw, domain) -> bytes`.
With no key configured for the sender's domain (or a parent of it), the bytes pass
unchanged; a signing error is logged and the message goes out unsigned, never lost.

Keys are PEM files: RSA (PKCS#1 or PKCS#8) for rsa-sha256, Ed25519 (PKCS#8) for
ed25519-sha256 (RFC 8463). `mailmoat dkim keygen` writes them and prints the TXT record.

    [dkim_signing]
    keys = { "example.test" = { selector = "mm1", key_file = "keys/example.test.mm1.pem" } }
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import BaseModel, ConfigDict, Field

import mailmoat.dkimfast  # noqa: F401  (faster identical DKIM canonicalization)
from mailmoat.config import Config, Section
from mailmoat.errors import ConfigError

log = logging.getLogger(__name__)

# What we sign, when present. From is signed once more than it occurs ("oversigned"), so a
# second From cannot be added without breaking the signature.
SIGNED_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "list-unsubscribe", "list-unsubscribe-post",
)


class DkimKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: str = Field(description="selector published at <selector>._domainkey.<domain>")
    key_file: str = Field(description="PEM private key (RSA or Ed25519), relative to the config")


class DkimSigningSettings(Section):
    enabled: bool = Field(True, description="sign outbound mail for domains that have a key")
    keys: dict[str, DkimKeyConfig] = Field(
        default_factory=dict, description="signing domain -> {selector, key_file}")


@dataclass(frozen=True)
class SigningKey:
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private: bytes  # what dkimpy wants: PKCS#1 PEM for RSA, base64 seed for Ed25519


def load_private_key(pem: bytes, selector: str) -> SigningKey:
    """A PEM private key → a SigningKey dkimpy can use. Raises ValueError if unusable."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        pkcs1 = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
        return SigningKey(selector, "rsa-sha256", pkcs1)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return SigningKey(selector, "ed25519-sha256", base64.b64encode(seed))
    raise ValueError(f"unsupported key type {type(key).__name__} (use RSA or Ed25519)")


def generate_private_key(key_type: str = "rsa", bits: int = 2048) -> bytes:
    """A new private key as PKCS#8 PEM."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown key type {key_type!r} (rsa or ed25519)")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def dns_record_value(pem: bytes) -> str:
    """The TXT value to publish at <selector>._domainkey.<domain> for this private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    raise ValueError(f"unsupported key type {type(key).__name__}")


def zone_file_line(selector: str, domain: str, value: str) -> str:
    """A BIND zone-file line; long values split into 255-byte character-strings."""
    chunks = [value[i:i + 250] for i in range(0, len(value), 250)]
    quoted = " ".join(f'"{c}"' for c in chunks)
    return f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"


def sign_message(raw: bytes, domain: str, key: SigningKey) -> bytes:
    """Return `raw` with a DKIM-Signature header prepended."""
    linesep = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    d = dkim.DKIM(raw, signature_algorithm=key.algorithm.encode(), linesep=linesep)
    present = {name.decode("ascii", "replace").lower() for name, _ in d.headers}
    include = [h.encode() for h in SIGNED_HEADERS if h in present] + [b"from"]
    sig = d.sign(key.selector.encode(), domain.encode(), key.private,
                 canonicalize=(b"relaxed", b"relaxed"), include_headers=include)
    return sig + raw


class DkimSigner:
    def __init__(self, keys: dict[str, SigningKey] | None = None) -> None:
        self.keys = {d.lower().rstrip("."): k for d, k in (keys or {}).items()}

    @classmethod
    def from_config(cls, config: Config) -> DkimSigner:
        settings = config.section("dkim_signing", DkimSigningSettings)
        if not settings.enabled:
            return cls()
        keys: dict[str, SigningKey] = {}
        for domain, kc in settings.keys.items():
            path = config.resolve_path(kc.key_file)
            try:
                keys[domain] = load_private_key(Path(path).read_bytes(), kc.selector)
            except OSError as exc:
                raise ConfigError(f"[dkim_signing] key for {domain}: cannot read {path}: "
                                  f"{exc.strerror}") from exc
            except ValueError as exc:
                raise ConfigError(f"[dkim_signing] key for {domain} in {path}: {exc}") from exc
        return cls(keys)

    def key_for(self, domain: str) -> tuple[str, SigningKey] | None:
        """The key of `domain` or of its closest parent domain that has one."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self.keys:
                return candidate, self.keys[candidate]
        return None

    def sign(self, raw: bytes, domain: str) -> bytes:
        found = self.key_for(domain) if domain else None
        if found is None:
            return raw
        sign_domain, key = found
        try:
            return sign_message(raw, sign_domain, key)
        except Exception:  # an unsigned message beats a lost one
            log.exception("DKIM signing for %s failed; sending unsigned", sign_domain)
            return raw


# --- ARC sealing (RFC 8617) ------------------------------------------------------------------

class ArcSealingSettings(Section):
    enabled: bool = Field(False, description="ARC-seal mail we deliver after scanning it")
    domain: str = Field("", description="sealing domain (d= of ARC-Seal)")
    selector: str = Field("", description="selector published at <selector>._domainkey.<domain>")
    key_file: str = Field("", description="RSA private key PEM (dkimpy seals with RSA only)")
    authserv_id: str = Field(
        "", description="authserv-id of our Authentication-Results; empty: [smtp] hostname")


class ArcSealer:
    """Adds an ARC set to mail the gateway passes on, so that a downstream server (say a
    cloud mailbox) can trust our authentication results even after we changed the message
    (subject tag, added headers) and broke the sender's DKIM signature.

    Call `seal(raw, ar_value)` last, after every modification, with the value of the
    Authentication-Results header we add (`scan.auth.authentication_results_header`)."""

    def __init__(self, domain: str, key: SigningKey, authserv_id: str) -> None:
        if key.algorithm != "rsa-sha256":
            raise ValueError("ARC sealing needs an RSA key")
        self.domain = domain.lower().rstrip(".")
        self.key = key
        self.authserv_id = authserv_id

    @classmethod
    def from_config(cls, config: Config) -> ArcSealer | None:
        s = config.section("arc_sealing", ArcSealingSettings)
        if not s.enabled:
            return None
        if not (s.domain and s.selector and s.key_file):
            raise ConfigError("[arc_sealing] needs domain, selector and key_file when enabled")
        path = config.resolve_path(s.key_file)
        try:
            key = load_private_key(Path(path).read_bytes(), s.selector)
            return cls(s.domain, key, s.authserv_id or config.smtp.hostname)
        except OSError as exc:
            raise ConfigError(f"[arc_sealing] cannot read {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"[arc_sealing] key in {path}: {exc}") from exc

    def seal(self, raw: bytes, ar_value: str) -> bytes:
        """`raw` with our Authentication-Results and a new ARC set prepended; unchanged
        (logged) if sealing fails."""
        linesep = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
        value = ar_value.replace("\r\n\t", " ").replace("\n", " ")
        with_ar = b"Authentication-Results: " + value.encode("utf-8") + linesep + raw
        try:
            arc_set = dkim.arc_sign(with_ar, self.key.selector.encode(), self.domain.encode(),
                                    self.key.private, self.authserv_id.encode(),
                                    linesep=linesep)
        except Exception:
            log.exception("ARC sealing as %s failed; passing the message on unsealed",
                          self.domain)
            return with_ar
        return b"".join(arc_set) + with_ar
