"""The contract of issue 17: with only the documented settings and no history at all, one
account's near-identical mail to 150 colleagues is stopped before more than 30 of its
messages reach the downstream, while twenty other accounts' ordinary mail all arrives.

Real SMTP over sockets: a relay on 127.0.0.1 (the trusted company mail server) sends to a
real gateway, which delivers to a real SMTP sink counting what arrives."""

from __future__ import annotations

import random

import pytest

from mailmoat.internal.accounts import get_restriction, list_incidents
from tests.internal.helpers import held_count, lure, message, ordinary_text, relay, settle
from tests.smtp.helpers import gateway_config, running_gateway

BURST = "mallory@example.test"
CONTRACT = {
    "smtp": {"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
    "internal": {"enabled": True, "identity_header": "X-Authenticated-Sender"},
}


def ordinary_mail(seed: int) -> list[tuple[str, list[str], bytes]]:
    """Twenty accounts, a handful of ordinary messages each to one to three colleagues."""
    rng = random.Random(seed)
    out = []
    for k in range(20):
        account = f"user{k}@example.test"
        for _ in range(rng.randint(3, 6)):
            rcpts = rng.sample([f"user{j}@example.test" for j in range(20) if j != k],
                               rng.randint(1, 3))
            subject, body = ordinary_text(rng)
            out.append((account, rcpts, message(account, rcpts, subject, body)))
    rng.shuffle(out)
    return out


def burst_mail(per_message: int) -> list[tuple[str, list[str], bytes]]:
    colleagues = [f"colleague{i}@example.test" for i in range(150)]
    out = []
    for i in range(0, 150, per_message):
        rcpts = colleagues[i:i + per_message]
        subject, body = lure(rcpts[0].split("@")[0] if per_message == 1 else "all")
        out.append((BURST, rcpts, message(BURST, rcpts, subject, body)))
    return out


def interleave(a: list, b: list) -> list:
    """b's items spread evenly through a's."""
    out, step = [], max(1, len(a) // max(1, len(b)))
    for i, x in enumerate(a):
        out.append(x)
        if i % step == 0 and b:
            out.append(b.pop(0))
    return out + b


@pytest.mark.parametrize("per_message", [1, 10], ids=["one-recipient-each", "ten-each"])
async def test_a_burst_to_150_colleagues_is_stopped_and_ordinary_mail_flows(
        tmp_path, sink, per_message):
    cfg = gateway_config(tmp_path, sink.port, **CONTRACT)
    ordinary = ordinary_mail(seed=per_message)
    burst = burst_mail(per_message)
    async with running_gateway(cfg) as gw:
        result = await relay(gw.smtp_port, interleave(burst, list(ordinary)))

        # Every ordinary message was taken and arrives.
        refused_ordinary = {a: r for a, r in result.refused.items() if a != BURST}
        assert not refused_ordinary, refused_ordinary
        assert sum(len(v) for a, v in result.accepted.items() if a != BURST) == len(ordinary)

        def arrived_ordinary() -> int:
            return sum(1 for frm, _, _ in sink.messages if frm != BURST)
        await settle(lambda: arrived_ordinary() == len(ordinary), what="ordinary mail delivered")

        # The burst: each message it got in was delivered or held; the rest refused.
        accepted = len(result.accepted.get(BURST, []))
        refused = result.refused.get(BURST, [])
        assert accepted + len(refused) == len(burst)
        await settle(lambda: sum(1 for frm, _, _ in sink.messages if frm == BURST)
                     + held_count(gw.db, BURST) == accepted, what="the burst's mail settled")
        delivered = sum(1 for frm, _, _ in sink.messages if frm == BURST)
        assert delivered <= 30, f"{delivered} of the burst's messages reached the downstream"
        assert refused and held_count(gw.db, BURST) >= 1
        assert all("451" in r and "4.7.1" in r and "suspended" in r for r in refused), refused[0]

        # The account is suspended until released, with an incident that says why.
        r = get_restriction(gw.db, BURST)
        assert r is not None and r.kind == "suspend" and r.until is None and r.by == "mailmoat"
        incidents = list_incidents(gw.db, account=BURST)
        assert len(incidents) == 1 and incidents[0].status == "open"
        assert "INTERNAL_FANOUT" in {s["name"] for s in incidents[0].signals}
        assert not list_incidents(gw.db, status="open", account="user0@example.test")
