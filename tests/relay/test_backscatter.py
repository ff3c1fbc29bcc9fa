"""No backscatter (issue 21, item 5): a message from a sender whose SPF or DMARC failed
gets no bounce (DSN) when delivery later fails; what decides it survives in the spool."""

from __future__ import annotations

import aiosmtplib
import pytest
from sqlalchemy import select

from mailmoat.relay.dsn import dsn_refusal, sender_auth_failed
from mailmoat.scan.base import ScanResult
from mailmoat.scan.facts import AuthFacts
from mailmoat.spool.queue import STATES, Handover
from mailmoat.store.models import DeliveryEventRow
from tests.conftest import make_email
from tests.smtp.helpers import gateway_config, running_gateway, wait_until


def result(auth: AuthFacts | None = None) -> ScanResult:
    r = ScanResult(specs={})
    r.facts.auth = auth
    return r


@pytest.mark.parametrize("auth, forged", [
    (AuthFacts(source="gateway", spf="fail", spf_domain="sender.test"), True),
    # SPF fail on the envelope domain even though a DKIM signature of another domain passed
    (AuthFacts(source="gateway", spf="fail", dkim_pass=("list.test",)), True),
    (AuthFacts(source="gateway", spf="none", dmarc="fail"), True),
    (AuthFacts(source="gateway", spf="softfail", dkim_fail=("sender.test",)), True),
    # DMARC fails on the From header but the envelope sender (a list's bounce address)
    # passed SPF: the bounce reaches its real owner
    (AuthFacts(source="gateway", spf="pass", spf_domain="list.test", dmarc="fail"), False),
    (AuthFacts(source="gateway", spf="softfail"), False),
    (AuthFacts(source="gateway", spf="pass", dmarc="pass"), False),
    (None, False),
])
def test_sender_auth_failed_from_facts(auth, forged):
    assert sender_auth_failed(result(auth)) is forged


def test_sender_auth_failed_without_a_result():
    assert sender_auth_failed(None) is False


def test_dsn_refusal():
    assert dsn_refusal("", Handover()) == "null sender"
    assert dsn_refusal("a@sender.test", Handover(dsn=True)) == "itself a DSN"
    assert "SPF/DMARC" in dsn_refusal("a@sender.test", Handover(sender_auth_failed=True))
    assert dsn_refusal("a@sender.test", Handover(sender_auth_failed=False)) is None
    # An entry spooled before the fact was recorded: the logged symbols decide.
    old = Handover.from_json({"log": {"symbols": [{"name": "SPF_FAIL", "score": 3.0}]}})
    assert dsn_refusal("a@sender.test", old) is not None
    old = Handover.from_json({"log": {"symbols": [{"name": "DMARC_POLICY_REJECT"},
                                                  {"name": "SPF_PASS"}]}})
    assert dsn_refusal("a@sender.test", old) is None
    assert dsn_refusal("a@sender.test", Handover(log={"symbols": []})) is None


def events(gw, mid: str) -> list[tuple[str, str]]:
    with gw.db.session() as s:
        rows = s.scalars(select(DeliveryEventRow).where(DeliveryEventRow.message_id == mid)).all()
        return [(r.address, r.status) for r in rows]


async def test_unknown_recipient_from_forged_sender_gets_no_dsn(tmp_path, sink, monkeypatch):
    """Recipient checking off (the default): the downstream refuses an unknown user after
    we took the mail. The scan found the sender's SPF failed (forced here: the test's scan
    has no network), so no bounce goes to the (forged) sender; a genuine sender still gets
    one for the same failure."""
    import mailmoat.intake as intake  # where intake and late scan record the fact

    sink.rcpt_replies = {"ghost@example.test": "550 5.1.1 no such user"}
    forged = {"value": True}
    monkeypatch.setattr(intake, "sender_auth_failed", lambda _result: forged["value"])
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        async def send(mail_from: str) -> str:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                                timeout=10)
            await c.connect()
            _, reply = await c.sendmail(mail_from, ["ghost@example.test"], make_email())
            await c.quit()
            return reply.rsplit(" ", 1)[1]

        mid = await send("victim@sender.test")
        await wait_until(lambda: events(gw, mid) == [("ghost@example.test", "failed")],
                         what="the recipient failed")
        await wait_until(lambda: mid in gw.spool.ids("done"), what="moved to done")
        entry, _ = gw.spool.read("done", mid)
        assert entry.handover.sender_auth_failed is True
        # A DSN would have been spooled before the message moved to done/.
        assert [i for s in STATES for i in gw.spool.ids(s)] == [mid]  # no DSN
        assert sink.messages == []

        forged["value"] = False
        mid = await send("real@sender.test")
        await sink.wait_for(1)
        mail_from, rcpts, _raw = sink.messages[0]
        assert mail_from == "" and rcpts == ["real@sender.test"]
