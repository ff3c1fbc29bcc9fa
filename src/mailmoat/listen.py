"""Listening sockets, and start-up errors as one line that says what to change.

`mailmoat serve` turns a `ConfigError` into `error: <message>` on stderr and a non-zero exit,
so an address in use, a port out of range or an address this machine does not have ends in
one line instead of a traceback:

    [smtp] listen 127.0.0.1:2525 is in use by another process: stop it or change [smtp] listen
"""

from __future__ import annotations

import errno
import socket

from mailmoat.errors import ConfigError
from mailmoat.relay.routes import parse_hostport


def listen_address(key: str, value: str) -> tuple[str, int]:
    """(host, port) of a `listen` setting such as `[smtp] listen`, or a ConfigError."""
    try:
        host, port = parse_hostport(value)
    except ConfigError:
        raise ConfigError(f"{key} {value!r} is not host:port (e.g. 127.0.0.1:2525): "
                          f"change {key}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key} {value}: port {port} is out of range (1-65535): change {key}")
    return host, port


def bind_error(key: str, value: str, exc: OSError) -> ConfigError:
    """What to tell the operator when binding `value` (the setting `key`) failed."""
    if exc.errno == errno.EADDRINUSE:
        what = "is in use by another process: stop it or change"
    elif exc.errno == errno.EACCES:
        what = ("may not be opened by this user (ports below 1024 need root or "
                "CAP_NET_BIND_SERVICE): use a port above 1023 or change")
    elif exc.errno == errno.EADDRNOTAVAIL:
        what = "is not an address of this machine: change"
    elif isinstance(exc, socket.gaierror):
        what = "names a host that cannot be resolved: change"
    else:
        what = f"cannot be opened ({exc.strerror or exc}): change"
    return ConfigError(f"{key} {value} {what} {key}")


def open_listener(key: str, value: str, backlog: int = 1024) -> socket.socket:
    """A bound, listening, non-blocking socket for `value`, or a one-line ConfigError."""
    host, port = listen_address(key, value)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        raise bind_error(key, value, exc) from None
    sock.setblocking(False)
    return sock


__all__ = ["bind_error", "listen_address", "open_listener"]
