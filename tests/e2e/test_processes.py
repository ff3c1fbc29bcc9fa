"""`[smtp] processes = 2`: two intake+delivery processes on one socket and one spool."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiosmtplib
import pytest

from tests.e2e.gateway_proc import (
    CountingSink,
    free_port,
    sink_port,
    start_gateway,
    start_sink_thread,
    stop_gateway,
    write_config,
)

TOTAL = 200
CONNECTIONS = 8


def _msg(seq: int) -> bytes:
    return (f"From: load@sender.test\r\nTo: bob@example.test\r\nSubject: multi {seq}\r\n"
            f"Message-ID: <multi-{seq}@sender.test>\r\nX-Test-Seq: {seq}\r\n\r\n"
            f"message number {seq}\r\n").encode()


async def _send_all(port: int) -> set[str]:
    counter = iter(range(TOTAL))
    acked: set[str] = set()

    async def one_connection() -> None:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=20)
        await c.connect()
        for seq in counter:
            await c.sendmail("load@sender.test", ["bob@example.test"], _msg(seq))
            acked.add(str(seq))
        await c.quit()

    await asyncio.gather(*(one_connection() for _ in range(CONNECTIONS)))
    return acked


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_two_processes_deliver_every_message_exactly_once(tmp_path):
    sink = CountingSink()
    controller = start_sink_thread(sink)
    port = free_port()
    cfg = write_config(tmp_path, port, sink_port(controller), extra="")
    cfg.write_text(cfg.read_text().replace("[delivery]", "processes = 2\n\n[delivery]", 1))
    spool = tmp_path / "data" / "spool"
    # A message a crashed run left in active/: the parent recovers it once, before forking.
    (spool / "active").mkdir(parents=True)
    from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id
    left = SpoolEntry(id=new_message_id(), mail_from="load@sender.test",
                      rcpt_tos=["bob@example.test"], received_at=time.time(), scanned=True)
    Spool(spool).put(left, _msg(TOTAL), "active")
    log = tmp_path / "gateway.log"
    proc = start_gateway(cfg, port, log)
    try:
        kids = _children(proc.pid)
        assert len(kids) == 2, log.read_text()[-2000:]
        acked = asyncio.run(_send_all(port))
        assert len(acked) == TOTAL
        want = {str(i) for i in range(TOTAL + 1)}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and set(sink.snapshot()) != want:
            time.sleep(0.1)
        seen = sink.snapshot()
        assert set(seen) == want, f"missing: {sorted(want - set(seen))[:10]}"
        assert stop_gateway(proc) == 0, log.read_text()[-3000:]
        # Counted after the processes are gone: a late duplicate has nowhere left to come from.
        seen = sink.snapshot()
        assert all(n == 1 for n in seen.values()), {k: n for k, n in seen.items() if n > 1}
        for state in ("incoming", "active", "deferred", "shunt"):
            assert not list((spool / state).glob("*.json")), state
        assert len(list((spool / "done").glob("*.json"))) == TOTAL + 1
        assert "Traceback" not in log.read_text()
    finally:
        stop_gateway(proc)
        controller.stop()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_child_that_dies_stops_the_others_with_an_error(tmp_path):
    sink = CountingSink()
    controller = start_sink_thread(sink)
    port = free_port()
    cfg = write_config(tmp_path, port, sink_port(controller))
    cfg.write_text(cfg.read_text().replace("[delivery]", "processes = 2\n\n[delivery]", 1))
    log = tmp_path / "gateway.log"
    proc = start_gateway(cfg, port, log)
    try:
        kids = _children(proc.pid)
        assert len(kids) == 2
        os.kill(kids[0], signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == 1
        for k in kids:
            assert not Path(f"/proc/{k}").exists() or \
                Path(f"/proc/{k}/stat").read_text().split()[2] == "Z"
    finally:
        stop_gateway(proc)
        controller.stop()
