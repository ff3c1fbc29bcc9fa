"""The memory does not vouch for a forged From: trust needs authentication."""

from __future__ import annotations

from mailmoat.message.model import Direction
from mailmoat.reputation_memory import SenderMemory
from mailmoat.store.db import Database
from tests.conftest import make_config, make_email
from tests.reputation.test_memory import PARTNER, _names, _scan


async def test_known_correspondent_needs_authentication(dns_server, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'mm.db'}")
    db.create_schema()
    mem = SenderMemory(db)
    for _ in range(3):
        mem.observe("pat@partner.test", ["bob@example.test"], "clean", Direction.INBOUND)
    dns_server.zones["partner.test"] = {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}
    dns_server.zones["_dmarc.partner.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    cfg = make_config(dns={"nameservers": [dns_server.nameserver], "timeout": 0.4},
                      reputation={"known_min_clean": 2})
    out = await _scan(db, make_email(sender=PARTNER), network=True, config=cfg)
    assert "DMARC_PASS" in {s.name for s in out.result.symbols}
    assert _names(out) == {"REP_KNOWN_CORRESPONDENT"}

    dns_server.zones["partner.test"] = {"TXT": ["v=spf1 ip4:198.51.100.9 -all"]}
    out = await _scan(db, make_email(sender=PARTNER), network=True, config=cfg)
    assert "DMARC_POLICY_REJECT" in {s.name for s in out.result.symbols}
    assert _names(out) == set()  # the same known sender, unauthenticated: no trust
    assert out.result.facts.sender_memory.first_contact is False
    db.dispose()
