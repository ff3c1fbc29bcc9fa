"""`mailmoat serve` as a subprocess, and a sink in a thread, for whole-process tests."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import mailmoat_cmd, subprocess_env


class CountingSink:
    """Counts deliveries by the X-Test-Seq header (the sink's own acknowledgements)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = BytesHeaderParser().parsebytes(envelope.original_content)
        with self.lock:
            self.seen[msg.get("X-Test-Seq", "")] += 1
            if len(self.raw) < 20:
                self.raw.append(envelope.original_content)
        return "250 2.0.0 ok"

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.seen)


def start_sink_thread(handler: Any) -> Controller:
    c = Controller(handler, hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    c.start()
    return c


def sink_port(c: Controller) -> int:
    return int(c.port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, smtp_port: int, downstream_port: int, extra: str = "") -> Path:
    cfg = tmp / "mailmoat.toml"
    cfg.write_text(f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "mx.gateway.test"
relay_domains = ["example.test"]
trusted_networks = []
max_connections_per_ip = 200

[delivery]
downstream = "127.0.0.1:{downstream_port}"
workers = 16
retry_schedule = [1]

[storage]
data_dir = "{tmp / 'data'}"

[web]
enabled = false

[scan]
network = false
{extra}
""")
    return cfg


def start_gateway(cfg: Path, port: int, log: Path, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    out = open(log, "ab")
    proc = subprocess.Popen(mailmoat_cmd("serve", "--config", str(cfg), "--log-level", "WARNING"),
                            env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(100).startswith(b"220"):
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gateway did not start: {log.read_text()[-3000:]}")


def stop_gateway(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
