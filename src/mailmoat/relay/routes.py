"""Where mail for a recipient goes next: one function shared by intake and delivery."""

from __future__ import annotations

from mailmoat.config import Config
from mailmoat.errors import ConfigError
from mailmoat.message.model import domain_of


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError as exc:
        raise ConfigError(f"expected host:port, got {value!r}") from exc


def is_local(config: Config, domain: str) -> bool:
    return domain in {d.lower() for d in config.smtp.relay_domains} or \
        domain in config.internal_domains


def route_for(config: Config, rcpt: str) -> tuple[str, int]:
    """Next hop for a recipient: explicit route, then our domains → downstream, then
    foreign domains → outbound_relay (or downstream when none is set)."""
    d = config.delivery
    domain = domain_of(rcpt)
    if domain in d.routes:
        return parse_hostport(d.routes[domain])
    if not is_local(config, domain) and d.outbound_relay:
        return parse_hostport(d.outbound_relay)
    return parse_hostport(d.downstream)
