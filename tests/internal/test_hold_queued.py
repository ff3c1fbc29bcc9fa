"""An incident's "hold what is still queued": the account's messages the downstream has not
taken yet (deferred) leave the delivery spool for quarantine, through the REST API of a
running gateway, and a release from quarantine then delivers them."""

from __future__ import annotations

import time

import httpx
from sqlalchemy import select

from mailmoat.app import build
from mailmoat.internal.accounts import incident_messages, record_flag
from mailmoat.store.models import AuditRow, QuarantineRow, RecipientRow
from mailmoat.store.quarantine import release_message
from mailmoat.web.auth import create_token, create_user
from tests.internal.helpers import message, relay, settle
from tests.smtp.helpers import Sink, free_port, gateway_config, port_of, start_sink

ALICE = "alice@example.test"


async def test_queued_mail_of_an_incident_is_held_and_can_be_released(tmp_path):
    sink = Sink()
    sink.data_replies = ["451 4.3.0 mailbox server busy"] * 3  # each message deferred once
    server = await start_sink(sink)
    web_port = free_port()
    cfg = gateway_config(tmp_path, port_of(server), **{
        "smtp": {"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
        "internal": {"identity_header": "X-Authenticated-Sender", "action": "tag"},
        # The next try is an hour away: the messages wait in deferred/.
        "delivery": {"retry_schedule": [3600]},
        "web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
    gw = build(cfg)
    await gw.start(web=True)
    try:
        rcpts = [f"c{i}@example.test" for i in range(3)]
        out = await relay(gw.smtp_port, [(ALICE, [r], message(ALICE, [r], "Invoice", "Hi,\n"
                                                                "see attached.\n"))
                                         for r in rcpts], connections=1)
        ids = out.accepted[ALICE]
        assert len(ids) == 3

        def statuses() -> set[str]:
            with gw.db.session() as s:
                return set(s.scalars(select(RecipientRow.status)
                                     .where(RecipientRow.message_id.in_(ids))))
        # The log says deferred once the attempt is recorded; the spool's move to deferred/
        # follows in the worker: wait for both.
        await settle(lambda: statuses() == {"deferred"}, what="all three logged deferred")
        await settle(lambda: sorted(gw.delivery.spool.ids("deferred")) == sorted(ids),
                     what="all three waiting in deferred/")

        now = time.time()
        incident = record_flag(gw.db, account=ALICE, at=now, window_start=now - 3600,
                               action="suspend", score=9, node="test", signals=[
                                   {"name": "INTERNAL_FANOUT", "score": 9, "reason": "test"}])
        assert {m.status for m in incident_messages(gw.db, incident)} == {"queued"}
        admin = create_user(gw.db, "admin@example.test", "admin", "admin-pw-123456")
        token = create_token(gw.db, admin.id, "test")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            r = await api.post(f"/api/v1/internal/incidents/{incident}/hold-queued")
            assert r.status_code == 200, r.text
            assert r.json() == {"held": {mid: [rc] for mid, rc in zip(ids, rcpts, strict=True)},
                                "not_waiting": []}
            # Nothing is left to hold a second time.
            r = await api.post(f"/api/v1/internal/incidents/{incident}/hold-queued")
            assert r.json() == {"held": {}, "not_waiting": []}
            r = await api.post("/api/v1/internal/incidents/99999/hold-queued")
            assert r.status_code == 404

        spool = gw.delivery.spool
        assert not spool.ids("deferred") and not spool.ids("incoming")
        assert {m.status for m in incident_messages(gw.db, incident)} == {"held"}
        with gw.db.session() as s:
            held = {q.message_id: q.held_for for q in s.scalars(select(QuarantineRow))}
            audited = list(s.scalars(select(AuditRow).where(
                AuditRow.action == "internal.hold_queued").order_by(AuditRow.id)))
        assert held == {mid: [rc] for mid, rc in zip(ids, rcpts, strict=True)}
        assert [(a.actor, a.target, a.details["messages"]) for a in audited] == [
            ("admin@example.test", ALICE, sorted(ids)), ("admin@example.test", ALICE, [])]

        # Held like any held message: a release delivers it.
        release_message(gw.config, gw.db, ids[0], "admin@example.test")
        await sink.wait_for(1, timeout=20)
        assert sink.messages[0][1] == [rcpts[0]]
    finally:
        await gw.stop()
        gw.db.dispose()
        server.close()
