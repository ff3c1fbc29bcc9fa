"""Delivered mail stays in the spool's done/ for [delivery] keep_delivered_hours (what
`mailmoat intel rescan` reaches back to), and leaves it after."""

from __future__ import annotations

import os
import time

from mailmoat.relay.deliver import DeliveryManager
from mailmoat.spool.queue import Spool
from tests.conftest import make_config


def _done(spool: Spool, name: str, age_hours: float, now: float) -> None:
    for ext in ("eml", "json"):
        p = spool.dir("done") / f"{name}.{ext}"
        p.write_text("x")
        os.utime(p, (now - age_hours * 3600, now - age_hours * 3600))


def test_delivered_mail_is_kept_for_the_configured_hours(tmp_path):
    now = time.time()
    spool = Spool(tmp_path / "spool")
    for name, age in (("fresh", 1), ("day", 30), ("old", 49)):
        _done(spool, name, age, now)
    DeliveryManager(make_config(), spool)._cleanup_done(now)  # default: 48 hours
    assert spool.ids("done") == ["day", "fresh"]
    DeliveryManager(make_config(delivery={"keep_delivered_hours": 24}), spool)._cleanup_done(now)
    assert spool.ids("done") == ["fresh"]
    DeliveryManager(make_config(delivery={"keep_delivered_hours": 0}), spool)._cleanup_done(now)
    assert spool.ids("done") == []
