"""Memory stays bounded under a downstream that never answers, and a full delivery backlog
is answered 451 4.3.1 at MAIL FROM (the sending MTA keeps the mail).

The downstream here is a tarpit on loopback: it accepts connections and then says nothing
(or only its banner), so every delivery attempt hangs until [delivery] connect_timeout and
mail piles up waiting. Before the cap, the delivery side kept every waiting message's
bytes in memory (the intake's hand-over); now it keeps at most [delivery]
max_bytes_in_memory / max_messages_in_memory and reads the rest back from the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator

import aiosmtplib
import psutil
import pytest

from mailmoat.spool.queue import STATES
from tests.conftest import make_email
from tests.smtp.helpers import gateway_config, port_of, running_gateway, wait_until

SIZE = 100 * 1024  # bytes per message
CAP = 2 * 1024 * 1024  # [delivery] max_bytes_in_memory in these tests
MiB = 1024 * 1024


class _Tarpit(asyncio.Protocol):
    def __init__(self, banner: bool, held: list[asyncio.BaseTransport]) -> None:
        self.banner = banner
        self.held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.held.append(transport)  # never closed, never answered
        if self.banner:
            transport.write(b"220 tarpit.test ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        pass  # EHLO and everything after it: no answer


@contextlib.asynccontextmanager
async def tarpit(banner: bool = False) -> AsyncIterator[int]:
    held: list[asyncio.BaseTransport] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: _Tarpit(banner, held), host="127.0.0.1", port=0)
    try:
        yield port_of(server)
    finally:
        server.close()
        for t in held:
            t.close()


def message(seq: int) -> bytes:
    line = "The quarterly figures are attached below, as discussed on the call.\n"
    body = line * (SIZE // len(line))
    return make_email(subject=f"Report {seq}", body=body,
                      headers={"X-Seq": str(seq)}).replace(b"<test-1@", f"<m{seq}@".encode())


def config(tmp_path, port: int, **delivery):
    # connect_timeout bounds how long stop() waits for workers stuck on the tarpit;
    # retry_schedule keeps deferred mail deferred for the whole test.
    return gateway_config(tmp_path, port,
                          delivery={"workers": 4, "connect_timeout": 2, "retry_schedule": [600],
                                    "max_bytes_in_memory": CAP, **delivery},
                          content={"enabled": False}, deep={"mode": "off"})


async def send_many(port: int, seqs: range, connections: int,
                    on_ack=lambda: None) -> tuple[dict[int, str], dict[int, str]]:
    """Send each seq once; returns ({seq: queued id}, {seq: refusal})."""
    acked: dict[int, str] = {}
    refused: dict[int, str] = {}
    todo = iter(seqs)

    async def one() -> None:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=20)
        await c.connect()
        for seq in todo:
            try:
                _, reply = await c.sendmail("alice@sender.test", ["bob@example.test"],
                                            message(seq))
            except aiosmtplib.SMTPResponseException as exc:
                refused[seq] = f"{exc.code} {exc.message}"
                await c.rset()
                continue
            acked[seq] = reply.rsplit(" ", 1)[1]
            on_ack()
        await c.quit()

    await asyncio.gather(*(one() for _ in range(connections)))
    return acked, refused


def spooled(gw, mid: str) -> bool:
    """Both files of the message are in some spool state (it was not lost)."""
    return any((gw.spool.dir(s) / f"{mid}.json").exists()
               and (gw.spool.dir(s) / f"{mid}.eml").exists() for s in STATES)


def rss() -> int:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss


@pytest.mark.slow
@pytest.mark.parametrize("banner", [False, True], ids=["silent", "banner-then-stall"])
async def test_memory_is_flat_under_a_tarpit_downstream(tmp_path, banner):
    async with tarpit(banner) as port, running_gateway(config(tmp_path, port)) as gw:
        mgr = gw.delivery
        # Warm up (scanner, parser, connections), then measure from there.
        acked, _ = await send_many(gw.smtp_port, range(20), connections=4)
        before = rss()
        peak = [0, 0]

        def sample() -> None:
            msgs, held = mgr.memory_held()
            peak[0], peak[1] = max(peak[0], msgs), max(peak[1], held)

        more, refused = await send_many(gw.smtp_port, range(20, 320), connections=8,
                                        on_ack=sample)
        acked.update(more)
        grown = rss() - before
        backlog = mgr.backlog()
        print(f"\n{len(more)} messages of {SIZE // 1024} KB ({len(more) * SIZE / MiB:.1f} MiB) "
              f"into a {'banner-then-stall' if banner else 'silent'} tarpit: "
              f"delivery held at most {peak[1] / MiB:.2f} MiB in {peak[0]} messages "
              f"(cap {CAP / MiB:.0f} MiB); RSS grew {grown / MiB:.1f} MiB; "
              f"backlog {backlog[0]} messages, {backlog[1] / MiB:.1f} MiB")
        assert not refused and len(acked) == 320
        assert peak[1] <= CAP, peak
        assert mgr.memory_held()[1] <= CAP
        # Nothing delivered, nothing dropped: every acknowledged message waits (counted).
        assert backlog[0] == 320 and backlog[1] >= 320 * SIZE
        # 30 MiB of mail went in; what the process grew by is the cap plus noise, not that.
        assert grown < 15 * MiB, f"RSS grew {grown / MiB:.1f} MiB"
        assert all(spooled(gw, mid) for mid in acked.values())
    assert all(spooled(gw, mid) for mid in acked.values())


@pytest.mark.parametrize("limit", ["max_backlog", "max_backlog_bytes"])
async def test_full_backlog_is_answered_451_and_nothing_acknowledged_is_lost(tmp_path, limit):
    value = 20 if limit == "max_backlog" else 20 * SIZE
    async with tarpit(banner=True) as port, \
            running_gateway(config(tmp_path, port, **{limit: value})) as gw:
        acked, refused = await send_many(gw.smtp_port, range(40), connections=1)
        assert 15 <= len(acked) <= 20 and len(acked) + len(refused) == 40
        assert all(r.startswith("451 4.3.1") for r in refused.values()), refused
        assert gw.delivery.backlog_full()
        assert gw.delivery.backlog()[0] == len(acked)
        assert all(spooled(gw, mid) for mid in acked.values())
    # After the gateway stopped (workers cut off mid-attempt): still all in the spool.
    assert all(spooled(gw, mid) for mid in acked.values())


async def test_backlog_and_memory_return_to_zero_once_delivered(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port, delivery={"max_backlog": 5},
                         content={"enabled": False}, deep={"mode": "off"})
    async with running_gateway(cfg) as gw:
        acked, refused = await send_many(gw.smtp_port, range(12), connections=1)
        await wait_until(lambda: gw.delivery.backlog() == (0, 0), what="backlog drained")
        assert gw.delivery.memory_held() == (0, 0)
        # The sink drains the backlog as fast as it fills: refusals, if any, were
        # temporary and later mail got through.
        assert len(sink.messages) == len(acked) and len(acked) >= 5
        assert all(r.startswith("451 4.3.1") for r in refused.values())
        acked2, refused2 = await send_many(gw.smtp_port, range(12, 14), connections=1)
        assert len(acked2) == 2 and not refused2


async def test_handed_over_mail_past_the_cap_is_read_back_from_the_spool(tmp_path, sink):
    """A message that does not fit the in-memory budget waits in active/ only; the worker
    reads it from there (no claim from incoming/), and delivers it once."""
    import time

    from mailmoat.relay.deliver import DeliveryManager
    from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id

    cfg = gateway_config(tmp_path, sink.port, delivery={"max_bytes_in_memory": 0})
    spool = Spool(tmp_path / "spool")
    mgr = DeliveryManager(cfg, spool)
    mid = new_message_id()
    entry = SpoolEntry(id=mid, mail_from="a@sender.test", rcpt_tos=["bob@example.test"],
                       received_at=time.time(), scanned=True)
    raw = make_email()
    spool.put(entry, raw, "active")
    mgr.wake(mid, entry, raw)
    assert mgr._handed == {} and mgr.memory_held() == (0, 0)
    assert mgr.backlog() == (1, len(raw))
    await mgr.start()
    try:
        await sink.wait_for(1)
        await wait_until(lambda: spool.ids("done") == [mid], what="moved to done")
    finally:
        await mgr.stop()
    assert len(sink.messages) == 1 and b"see you tomorrow" in sink.messages[0][2]
    assert mgr.backlog() == (0, 0) and mgr.memory_held() == (0, 0)
