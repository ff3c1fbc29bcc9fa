"""Issue 21: no message may freeze the gateway. While one client sends 200,000 nested <div>s
(which held the process for two minutes), other clients are served, and the message is
quarantined: not delivered unscanned, not lost."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib

from mailmoat.store.models import QuarantineRow
from tests.message.test_parse_budget import nested_divs_message
from tests.smtp.helpers import gateway_config, running_gateway, wait_until


async def _banner_seconds(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line.startswith(b"220 "), line
        return time.perf_counter() - started
    finally:
        writer.close()


async def test_other_clients_are_served_while_hostile_html_is_scanned(tmp_path, sink):
    # No score may reject it in the session: what must hold it is the parse budget.
    cfg = gateway_config(tmp_path, sink.port, policy={"reject_threshold": 1000.0})
    raw = nested_divs_message(200_000, top="<p>Minutes of Tuesday's meeting attached.</p>")
    async with running_gateway(cfg) as gw:
        sender = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                                 timeout=60, local_hostname="client.sender.test")
        await sender.connect()
        hostile = asyncio.create_task(
            sender.sendmail("alice@sender.test", ["bob@example.test"], raw))
        waits = []
        while not hostile.done() or not waits:  # probe until the hostile DATA is answered
            waits.append(await _banner_seconds(gw.smtp_port))
            await asyncio.sleep(0.02)
        _, reply = await hostile
        await sender.quit()
        assert max(waits) < 2.0, waits
        mid = reply.rsplit(" ", 1)[1]

        def held() -> bool:
            with gw.db.session() as s:
                return s.get(QuarantineRow, mid) is not None

        await wait_until(held, what="the hostile message to be quarantined")
        assert sink.messages == []
