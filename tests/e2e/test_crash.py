"""kill -9 in the middle of a burst: every message answered 250 is delivered after restart.

Duplicates are allowed only for messages the sink had acknowledged before the kill (the
gateway died between the sink's 250 and moving the message to done/: at-least-once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiosmtplib
import pytest

from tests.e2e.gateway_proc import (CountingSink, free_port, sink_port, start_gateway,
                                    start_sink_thread, stop_gateway, write_config)

TOTAL = 1200
KILL_AFTER = 500  # acknowledged messages before the kill
CONNECTIONS = 24


def _msg(seq: int) -> bytes:
    return (f"From: load@sender.test\r\nTo: bob@example.test\r\nSubject: burst {seq}\r\n"
            f"Message-ID: <burst-{seq}@sender.test>\r\nX-Test-Seq: {seq}\r\n\r\n"
            f"message number {seq}\r\n").encode()


async def _burst(port: int, proc, acked: set[str]) -> None:
    counter = iter(range(TOTAL))
    killed = asyncio.Event()

    async def one_connection() -> None:
        try:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
            await c.connect()
            for seq in counter:
                await c.sendmail("load@sender.test", ["bob@example.test"], _msg(seq))
                acked.add(str(seq))  # 250 received
                if len(acked) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)
        except (aiosmtplib.SMTPException, OSError):
            return  # the gateway died under us: this message was never acknowledged

    await asyncio.gather(*(one_connection() for _ in range(CONNECTIONS)))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kill_9_mid_burst_loses_nothing(tmp_path):
    sink = CountingSink()
    controller = start_sink_thread(sink)
    port = free_port()
    cfg = write_config(tmp_path, port, sink_port(controller))
    log = tmp_path / "gateway.log"
    proc = start_gateway(cfg, port, log)
    try:
        acked: set[str] = set()
        asyncio.run(_burst(port, proc, acked))
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.3)
        before = sink.snapshot()  # what the sink acknowledged before the crash
        assert KILL_AFTER <= len(acked) < TOTAL, len(acked)

        proc = start_gateway(cfg, port, log)
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline:
            missing = acked - set(sink.snapshot())
            if not missing:
                break
            time.sleep(0.2)
        after = sink.snapshot()
        missing = acked - set(after)
        assert not missing, f"{len(missing)} acknowledged messages never delivered"
        dupes = {seq for seq, n in after.items() if n > 1}
        assert dupes <= set(before), f"duplicated without a pre-crash receipt: {dupes - set(before)}"
        # delivered-but-unacknowledged messages are fine (the client saw the crash first)
        assert stop_gateway(proc) == 0  # SIGTERM: graceful shutdown
        print(f"acked={len(acked)} delivered={len(after)} dupes={len(dupes)} "
              f"sink-before-kill={len(before)}")
    finally:
        stop_gateway(proc)
        controller.stop()
