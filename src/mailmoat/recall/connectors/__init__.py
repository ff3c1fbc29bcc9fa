"""Mailbox connectors: IMAP, Microsoft Graph, Gmail, behind one interface (base.py), and the
choice of connector for each recipient (`Connectors`).

A recipient's domain picks the connector: the first of [recall.imap], [recall.graph],
[recall.gmail] whose `domains` lists it, else the first of them whose `domains` is empty.
Connectors are built on first use, so a secret is read only when a recall needs it, and a
connector that cannot be built (its secret file unreadable, say) fails its items with that
reason while the other connectors' items go on.
"""

from __future__ import annotations

import threading
from typing import Any

from mailmoat.config import Config
from mailmoat.errors import ConfigError
from mailmoat.recall.connectors.base import Connector, MailboxError
from mailmoat.recall.settings import RecallSettings, recall_settings, secret

__all__ = ["CONNECTOR_NAMES", "Connectors", "build_connector"]

CONNECTOR_NAMES = ("imap", "graph", "gmail")


def build_connector(config: Config, name: str, **kw: Any) -> Connector:
    """The connector `name` from `[recall.<name>]`, its secret read now."""
    settings = recall_settings(config)
    section = getattr(settings, name, None)
    if section is None:
        raise ConfigError(f"[recall.{name}] is not configured")
    if name == "imap":
        from mailmoat.recall.connectors.imap import ImapConnector

        password = secret(config, section.master_password_file, section.master_password_env,
                          "[recall.imap] master password")
        return ImapConnector(section, password, **kw)
    if name == "graph":
        from mailmoat.recall.connectors.graph import GraphConnector

        client_secret = secret(config, section.client_secret_file, section.client_secret_env,
                               "[recall.graph] client secret")
        return GraphConnector(section, client_secret, ca_file=_path(config, section.ca_file),
                              **kw)
    if name == "gmail":
        from mailmoat.recall.connectors.gmail import GmailConnector

        key = secret(config, section.service_account_file, section.service_account_env,
                     "[recall.gmail] service account key")
        return GmailConnector(section, key, ca_file=_path(config, section.ca_file), **kw)
    raise ConfigError(f"unknown connector {name!r}")


def _path(config: Config, path: str) -> str:
    return str(config.resolve_path(path)) if path else ""


class Connectors:
    """The configured connectors, built on first use, shared by a worker's threads."""

    def __init__(self, config: Config, **kw: Any) -> None:
        self.config = config
        self.settings: RecallSettings = recall_settings(config)
        self._kw = kw
        self._built: dict[str, Connector | MailboxError] = {}
        self._lock = threading.Lock()

    def configured(self) -> list[str]:
        return [n for n in CONNECTOR_NAMES if getattr(self.settings, n) is not None]

    def name_for(self, recipient: str) -> str | None:
        domain = recipient.rpartition("@")[2].lower()
        names = self.configured()
        for n in names:
            if domain in {d.lower() for d in getattr(self.settings, n).domains}:
                return n
        for n in names:
            if not getattr(self.settings, n).domains:
                return n
        return None

    def get(self, name: str) -> Connector:
        """The connector `name`; MailboxError with the reason when it cannot be built."""
        with self._lock:
            got = self._built.get(name)
            if got is None:
                try:
                    got = build_connector(self.config, name, **self._kw)
                except (ConfigError, MailboxError) as exc:
                    got = MailboxError(f"the {name} connector cannot start: {exc}")
                self._built[name] = got
        if isinstance(got, MailboxError):
            raise got
        return got

    def total_connections(self) -> int:
        return sum(getattr(self.settings, n).max_connections for n in self.configured()) or 1

    def close(self) -> None:
        with self._lock:
            for c in self._built.values():
                if isinstance(c, Connector):
                    c.close()
            self._built.clear()
