"""Mail spooled unscanned (the scanner raised at intake) is scanned by delivery before it
goes anywhere, through the same intake code: plan, our headers, the hand-over record."""

from __future__ import annotations

import aiosmtplib
from sqlalchemy import select

from mailmoat.store.models import MessageRow
from tests.conftest import make_email
from tests.smtp.helpers import gateway_config, running_gateway, wait_until


async def test_a_message_spooled_unscanned_is_scanned_before_delivery(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        real_scan = gw.scanner.scan
        calls = []

        async def broken_once(raw, env):
            calls.append(env)
            if len(calls) == 1:
                raise RuntimeError("scanner broken at intake")
            return await real_scan(raw, env)

        gw.scanner.scan = broken_once  # the one scanner intake and delivery share
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                            timeout=10)
        await c.connect()
        _, reply = await c.sendmail("alice@sender.test", ["bob@example.test"],
                                    make_email(subject="Quarterly figures"))
        await c.quit()
        mid = reply.rsplit(" ", 1)[1]
        await sink.wait_for(1)
        await wait_until(lambda: mid in gw.spool.ids("done"), what="moved to done")
        assert len(calls) == 2  # intake's failed scan, then delivery's
        (msg,) = sink.parsed()
        assert msg["X-Mailmoat-ID"] == mid
        assert msg["X-Mailmoat-Verdict"].startswith("action=accept")
        # The Received value intake built travels in the hand-over and heads the message.
        entry, _ = gw.spool.read("done", mid)
        assert entry.scanned and entry.handover.plan == {"bob@example.test": "deliver"}
        assert entry.handover.received and f"id {mid}" in entry.handover.received
        assert mid in msg.get_all("Received")[0]
        assert entry.handover.sender_auth_failed is False  # recorded by the late scan
        assert entry.handover.log is not None and entry.handover.log["symbols"] is not None

        def logged() -> bool:
            with gw.db.session() as s:
                return s.scalars(select(MessageRow).where(MessageRow.id == mid)).first() \
                    is not None
        await wait_until(logged, what="the message logged")
