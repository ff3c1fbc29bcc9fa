"""Outbound DKIM signing, called by the delivery path for mail leaving the company.

Interface used by the relay: `DkimSigner.from_config(config).sign(raw, domain) -> bytes`.
With no key configured for the sender's domain, the bytes pass unchanged.
(The auth family owns the implementation and `mailmoat dkim keygen`.)
"""

from __future__ import annotations

from mailmoat.config import Config


class DkimSigner:
    def __init__(self, keys: dict[str, tuple[str, bytes]] | None = None) -> None:
        self.keys = keys or {}  # domain -> (selector, private key PEM)

    @classmethod
    def from_config(cls, config: Config) -> DkimSigner:
        return cls()

    def sign(self, raw: bytes, domain: str) -> bytes:
        return raw
