"""Shared test helpers: build messages, scan them with a config, assert on symbols."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from mailmoat.config import Config, config_from_dict
from mailmoat.evaluation.messages import make_email  # noqa: F401  (tests import it from here)
from mailmoat.message.model import Direction, Envelope
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner, ScanOutcome

T = TypeVar("T")

# The tier-2 ONNX graph is built on first use into the user cache ($XDG_CACHE_HOME); the
# tests build theirs in a directory of their own (once per run), not in the user's home.
if "MAILMOAT_TEST_KEEP_CACHE" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="mailmoat-test-cache-")
    os.environ["XDG_CACHE_HOME"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


# The content models run on every message; tests of other families switch them off unless
# they ask for them, so each family's tests see only that family's symbols. tests/ml and
# tests/deep turn them back on (their conftest.py).
DEFAULT_SECTIONS: dict[str, dict[str, Any]] = {
    "scan": {"network": False}, "content": {"enabled": False}, "deep": {"mode": "off"}}


def make_config(**sections: dict[str, Any]) -> Config:
    """A config for tests: data under a temp dir is the caller's job; network off."""
    data: dict[str, Any] = {k: dict(v) for k, v in DEFAULT_SECTIONS.items()}
    data.update(sections)
    return config_from_dict(data)


async def scan_bytes(raw: bytes, config: Config | None = None, *, mail_from: str = "alice@sender.test",
                     rcpts: tuple[str, ...] = ("bob@example.test",), client_ip: str = "192.0.2.10",
                     direction: Direction = Direction.INBOUND, network: bool = False,
                     **extras: Any) -> ScanOutcome:
    config = config or make_config()
    scanner = Scanner(BuildContext(config=config, network=network, extras=extras))
    try:
        env = Envelope(mail_from=mail_from, rcpt_tos=rcpts, client_ip=client_ip, helo="mail.sender.test",
                       direction=direction)
        return await scanner.scan(raw, env)
    finally:
        await scanner.close()


def symbol_names(outcome: ScanOutcome) -> set[str]:
    return {s.name for s in outcome.result.symbols}


@pytest.fixture
def email_factory():
    return make_email


SRC_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "src"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running `python -m mailmoat` from this checkout (not an installed copy)."""
    import os
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["MAILMOAT_PYTHON"] = sys.executable
    env.update(extra)
    return env


def mailmoat_cmd(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "mailmoat", *args]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.1) -> T:
    """Another process's state (a gateway's, Dovecot's), asked until `probe()` gives
    something true, which is returned; nothing to await across a process boundary."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis_prefix():
    """A key prefix of this test's own on the local Redis (skipped when it is away); its
    keys are deleted after the test."""
    import uuid

    import redis.asyncio as aioredis

    prefix = f"mailmoat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}:"
    r = aioredis.from_url(REDIS_URL)
    try:
        await r.ping()
    except Exception as exc:
        await r.aclose()
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc}")
    yield prefix
    try:
        keys = [k async for k in r.scan_iter(f"{prefix}*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


@pytest.fixture
async def sink():
    """A recording SMTP server on loopback, the gateway's downstream in SMTP-level tests."""
    from tests.smtp.helpers import Sink, port_of, start_sink

    s = Sink()
    server = await start_sink(s)
    s.port = port_of(server)
    yield s
    server.close()
