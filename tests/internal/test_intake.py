"""The account guard at the SMTP intake, over real sockets: forged identity headers,
refusals at MAIL and DATA, a suspension that survives a restart, a release from the CLI
after which the mail the upstream kept flows, and the incident's messages for recall."""

from __future__ import annotations

import asyncio
import subprocess

import aiosmtplib
import pytest

from mailmoat.internal.accounts import (
    get_restriction,
    incident_message_ids,
    incident_messages,
    list_incidents,
    restrict_account,
)
from mailmoat.smtp.users import hash_password
from mailmoat.store.models import MessageRow
from tests.conftest import make_email, mailmoat_cmd, subprocess_env
from tests.internal.helpers import held_count, lure, message, relay, settle
from tests.smtp.helpers import gateway_config, running_gateway

MALLORY = "mallory@example.test"


def logged(gw, mid: str) -> MessageRow | None:
    with gw.db.session() as s:
        return s.get(MessageRow, mid)


async def connect(port: int) -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                        local_hostname="client.example.test")
    await c.connect()
    await c.ehlo()
    return c


@pytest.fixture
def untrusted_cfg(tmp_path, sink):
    users = tmp_path / "users"
    users.write_text(f"sam@example.test:{hash_password('pw')}\n")
    # The company mail server is elsewhere (192.0.2.25): this test's client on loopback
    # is an outsider, or an SMTP AUTH user.
    return gateway_config(tmp_path, sink.port, smtp={
        "trusted_networks": ["192.0.2.25/32"], "internal_domains": ["example.test"],
        "auth_users_file": str(users), "require_tls_for_auth": False},
        internal={"identity_header": "X-Authenticated-Sender", "sync_seconds": 0.1},
        delivery={"outbound_relay": f"127.0.0.1:{sink.port}"})


async def test_a_forged_identity_header_is_never_believed_and_is_removed(untrusted_cfg, sink):
    async with running_gateway(untrusted_cfg) as gw:
        c = await connect(gw.smtp_port)
        # An outsider claiming to be the CEO: inbound mail, no account, header gone.
        raw = make_email(sender="CEO <ceo@example.test>", subject="Urgent",
                         headers={"X-Authenticated-Sender": "ceo@example.test"})
        _, reply = await c.sendmail("ceo@example.test", ["bob@example.test"], raw)
        first = reply.rsplit(" ", 1)[1]
        # An SMTP AUTH user naming someone else: its own login is what counts.
        await c.login("sam@example.test", "pw")
        raw = make_email(sender="<sam@example.test>", to="partner@elsewhere.test",
                         headers={"X-Authenticated-Sender": "ceo@example.test"})
        _, reply = await c.sendmail("sam@example.test", ["partner@elsewhere.test"], raw)
        second = reply.rsplit(" ", 1)[1]
        await c.quit()
        await sink.wait_for(2)
        for _, _, delivered in sink.messages:
            assert b"X-Authenticated-Sender" not in delivered.split(b"\r\n\r\n", 1)[0]
        await settle(lambda: logged(gw, first) and logged(gw, second), what="logged")
        assert logged(gw, first).sender_account == "" and logged(gw, first).direction == "inbound"
        assert logged(gw, second).sender_account == "sam@example.test"
        assert gw.internal_guard.baseline("ceo@example.test") is None
        assert gw.internal_guard.baseline("sam@example.test").learned == 1


async def test_a_suspended_smtp_auth_account_is_refused_at_mail(untrusted_cfg, sink):
    async with running_gateway(untrusted_cfg) as gw:
        restrict_account(untrusted_cfg, gw.db, "sam@example.test", "admin@example.test",
                         reason="password phished", reply="5xx")
        await settle(lambda: gw.internal_guard.restrictions.get("sam@example.test"),
                     what="the gateway read the suspension")
        c = await connect(gw.smtp_port)
        await c.login("sam@example.test", "pw")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as exc:
            await c.sendmail("sam@example.test", ["partner@elsewhere.test"], make_email())
        assert exc.value.code == 550 and "5.7.1 Sending from sam@example.test is suspended" \
            in exc.value.message
        await c.quit()
        assert not sink.messages


def write_config(tmp_path, sink_port: int) -> str:
    path = tmp_path / "mailmoat.toml"
    path.write_text(f"""
[smtp]
listen = "127.0.0.1:0"
hostname = "mx.gateway.test"
relay_domains = ["example.test"]
trusted_networks = ["127.0.0.1/32"]
internal_domains = ["example.test"]
[delivery]
downstream = "127.0.0.1:{sink_port}"
retry_schedule = [1]
[storage]
data_dir = "{tmp_path / 'data'}"
[web]
enabled = false
[scan]
network = false
[internal]
identity_header = "X-Authenticated-Sender"
sync_seconds = 0.1
""")
    return str(path)


def burst(start: int, n: int) -> list[tuple[str, list[str], bytes]]:
    out = []
    for i in range(start, start + n):
        rcpt = f"colleague{i}@example.test"
        subject, body = lure(f"colleague{i}")
        out.append((MALLORY, [rcpt], message(MALLORY, [rcpt], subject, body)))
    return out


async def test_a_suspension_survives_a_restart_and_a_release_lets_the_mail_flow(tmp_path, sink):
    from mailmoat.config import load_config

    path = write_config(tmp_path, sink.port)
    cfg = load_config(path)
    async with running_gateway(cfg) as gw:
        first = await relay(gw.smtp_port, burst(0, 30), connections=1)
        accepted = first.accepted[MALLORY]
        assert len(accepted) == 21 and len(first.refused[MALLORY]) == 9
        await settle(lambda: len(sink.messages) + held_count(gw.db, MALLORY) == 21,
                     what="the burst settled")
    assert len(sink.messages) == 20

    async with running_gateway(load_config(path)) as gw:
        # Still suspended after the restart: refused at DATA (header identity), nothing lost.
        again = await relay(gw.smtp_port, burst(30, 3), connections=1)
        assert MALLORY not in again.accepted and len(again.refused[MALLORY]) == 3
        assert "451" in again.refused[MALLORY][0] and "suspended" in again.refused[MALLORY][0]
        # Mail from everyone else flows.
        other = await relay(gw.smtp_port, [("ann@example.test", ["bob@example.test"], message(
            "ann@example.test", ["bob@example.test"], "Lunch", "Hi Bob,\nlunch at one?\nAnn\n"))],
            connections=1)
        assert len(other.accepted["ann@example.test"]) == 1

        # The administrator reviews the incident and releases the account from the shell.
        incident = list_incidents(gw.db, account=MALLORY)[0]
        msgs = incident_messages(gw.db, incident.id)
        assert [m.status for m in msgs].count("delivered") == 20
        assert [m.status for m in msgs].count("held") == 1
        ids = incident_message_ids(gw.db, incident.id)
        assert len(ids) == 20 and ids == [m.id for m in msgs if m.status == "delivered"]
        run = subprocess.run(mailmoat_cmd("account", "incident", str(incident.id), "-c", path,
                                          "--message-ids"), capture_output=True, text=True,
                             env=subprocess_env(), timeout=60)
        assert run.returncode == 0 and run.stdout.split() == ids, run.stderr
        run = subprocess.run(mailmoat_cmd("account", "release", MALLORY, "-c", path,
                                          "--actor", "admin@example.test"),
                             capture_output=True, text=True, env=subprocess_env(), timeout=60)
        assert run.returncode == 0 and "released" in run.stdout, run.stderr
        await settle(lambda: not gw.internal_guard.restrictions[MALLORY].active(1e12),
                     what="the gateway read the release")
        # What the upstream kept queued now flows, and flags nothing within the grace.
        queued = await relay(gw.smtp_port, burst(21, 40), connections=2)
        assert MALLORY not in queued.refused and len(queued.accepted[MALLORY]) == 40
        await sink.wait_for(20 + 1 + 40)
        r = get_restriction(gw.db, MALLORY)
        assert r.released_by == "admin@example.test" and r.grace_until is not None


async def test_messages_refused_while_suspended_are_counted_on_the_incident(tmp_path, sink):
    path = write_config(tmp_path, sink.port)
    from mailmoat.config import load_config

    async with running_gateway(load_config(path)) as gw:
        await relay(gw.smtp_port, burst(0, 25), connections=1)
        await asyncio.sleep(0)
        await gw.internal_guard.sync()
        incident = list_incidents(gw.db, account=MALLORY)[0]
        assert incident.refused == 4 and incident.flagged_messages == 1
