"""Two `mailmoat serve` processes behind one company mail server, sharing PostgreSQL and
Redis as two nodes behind one smarthost name would: a burst from one account split across
both is one account's burst (flagged once, at the same message as on one node), and
afterwards both nodes refuse the account."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailmoat.internal.accounts import get_restriction, list_incidents
from mailmoat.store.db import Database
from mailmoat.store.models import QuarantineRow
from tests.conftest import wait_for
from tests.e2e.gateway_proc import (
    CountingSink,
    free_port,
    sink_port,
    start_gateway,
    start_sink_thread,
    stop_gateway,
    write_config,
)
from tests.internal.helpers import Outcome, lure, message, send
from tests.pg import fresh_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REDIS = "redis://127.0.0.1:6379/0"
MALLORY = "mallory@example.test"


def node_config(tmp: Path, name: str, port: int, downstream: int, db_url: str,
                prefix: str) -> Path:
    d = tmp / name
    d.mkdir()
    cfg = write_config(d, port, downstream, extra=f"""
[redis]
url = "{REDIS}"
key_prefix = "{prefix}"

[internal]
identity_header = "X-Authenticated-Sender"
""")
    # One shared database; each node its own spool (data_dir), as on two machines.
    text = cfg.read_text().replace("trusted_networks = []", 'trusted_networks = ["127.0.0.1/32"]\n'
                                   'internal_domains = ["example.test"]')
    text = text.replace("[storage]\n", f'[storage]\ndatabase_url = "{db_url}"\n')
    text = text.replace('hostname = "mx.gateway.test"', f'hostname = "{name}.gateway.test"')
    cfg.write_text(text)
    return cfg


async def test_a_burst_split_across_two_serve_processes_is_one_accounts_burst(tmp_path,
                                                                              redis_prefix):
    with fresh_postgres_database() as db_url:
        sink = CountingSink()
        controller = start_sink_thread(sink)
        ports = [free_port(), free_port()]
        procs = []
        try:
            # One after the other: the first creates the shared schema.
            for name, port in zip(("a", "b"), ports, strict=True):
                cfg = node_config(tmp_path, name, port, sink_port(controller), db_url,
                                  redis_prefix)
                procs.append(start_gateway(cfg, port, tmp_path / f"{name}.log"))
            total, per_node = Outcome(), [Outcome(), Outcome()]
            for i in range(60):
                rcpt = f"colleague{i}@example.test"
                subject, body = lure(f"colleague{i}")
                got = await send(ports[i % 2], [(MALLORY, [rcpt], message(
                    MALLORY, [rcpt], subject, body))])
                total.add(got)
                per_node[i % 2].add(got)
            # One account's window across both: the 21st message overall flagged it (held
            # for review), every later one was refused by whichever node it reached.
            assert len(total.accepted[MALLORY]) == 21, total
            assert len(total.refused[MALLORY]) == 39
            assert all("451" in r and "4.7.1" in r for r in total.refused[MALLORY]), total.refused[MALLORY][:2]
            # Each node accepted its half until the flag and refused its half after it.
            assert [len(n.accepted[MALLORY]) for n in per_node] == [11, 10]
            assert [len(n.refused[MALLORY]) for n in per_node] == [19, 20]

            db = Database(db_url)
            try:
                r = get_restriction(db, MALLORY)
                assert r is not None and r.kind == "suspend"
                incidents = list_incidents(db, account=MALLORY)
                assert len(incidents) == 1, incidents  # one account, not two halves
                assert incidents[0].signals[0]["name"] == "INTERNAL_FANOUT"

                def held() -> int:  # the flagging message, quarantined by delivery behind
                    with db.session() as s:
                        return int(s.scalar(select(func.count()).select_from(QuarantineRow)
                                            .where(QuarantineRow.mail_from == MALLORY)) or 0)
                wait_for("the flagging message held", held, 30)
                assert held() == 1
            finally:
                db.dispose()
            wait_for("20 delivered", lambda: sum(sink.snapshot().values()) >= 20, 30)
            assert sum(sink.snapshot().values()) == 20
        finally:
            for p in procs:
                stop_gateway(p)
            controller.stop()
