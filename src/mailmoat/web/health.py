"""What the dashboard and the start-up log say about the gateway's neighbours: is an
antivirus (clamd) answering, and can the downstream (the mail server mail is delivered to)
be reached. Both are probed from a worker thread with short timeouts and remembered for
PROBE_TTL_S, so a dashboard refresh never waits on a dead peer for long and never touches
the event loop SMTP shares."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass

from mailmoat.config import Config
from mailmoat.scan.antivirus import AntivirusSettings, ClamdClient, ClamdError

log = logging.getLogger("mailmoat.web.health")
PROBE_TTL_S = 30.0
PROBE_TIMEOUT_S = 1.5


@dataclass(frozen=True)
class Neighbour:
    ok: bool
    summary: str  # a few words for the dashboard: "antivirus off", "downstream unreachable"
    detail: str  # a sentence saying what to do about it


def antivirus(config: Config) -> Neighbour:
    s = config.section("antivirus", AntivirusSettings)
    if not s.clamd:
        return Neighbour(False, "antivirus off", "no clamd is configured ([antivirus] clamd is "
                         "empty): viruses are caught only by YARA rules and known-bad hashes. "
                         "Install clamav-daemon and set [antivirus] clamd = "
                         '"unix:/run/clamav/clamd.ctl"')
    try:
        answered = asyncio.run(ClamdClient(s.clamd, timeout=PROBE_TIMEOUT_S,
                                           connect_timeout=PROBE_TIMEOUT_S).ping())
        why = "it did not answer PING with PONG"
    except ClamdError as exc:
        answered, why = False, str(exc)
    if answered:
        return Neighbour(True, "antivirus on", f"clamd at {s.clamd} answers")
    return Neighbour(False, "antivirus off", f"clamd at {s.clamd} does not answer ({why}); "
                     "mail is scanned without it" + (" and held (fail_closed)" if s.fail_closed
                                                      else " and gets AV_UNAVAILABLE"))


def downstream(config: Config) -> Neighbour:
    target = config.delivery.downstream
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, int(port or 25)), timeout=PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return Neighbour(False, "downstream unreachable",
                         f"the downstream {target} cannot be reached ({reason}): mail waits in the "
                         "spool and is retried; check [delivery] downstream and that the mail "
                         "server behind mailmoat is running")
    return Neighbour(True, "downstream reachable", f"the downstream {target} accepts connections")


_cache: dict[tuple[int, str], tuple[float, Neighbour]] = {}
_lock = threading.Lock()


def probe(config: Config, what: str) -> Neighbour:
    """`antivirus` or `downstream`, remembered for PROBE_TTL_S per configuration."""
    key = (id(config), what)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < PROBE_TTL_S:
        return hit[1]
    result = antivirus(config) if what == "antivirus" else downstream(config)
    with _lock:
        _cache[key] = (now, result)
    return result


def log_at_start(config: Config) -> None:
    """One line at start when no antivirus answers (WARNING: mail flows less protected)."""
    av = probe(config, "antivirus")
    if not av.ok:
        log.warning("antivirus off: %s", av.detail)
