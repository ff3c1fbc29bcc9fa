"""The baseline's parts alone: correspondents that age out, peaks that fold only clean
hours, the hour profile, the peers' percentiles, storage round trips, the fingerprint."""

from __future__ import annotations

import json

from mailmoat.internal.baseline import (
    BLOOM_GENERATION,
    HOUR,
    AccountBaseline,
    Entry,
    PeerStats,
    window_stats,
)
from mailmoat.internal.fingerprint import distance, recipient_key, simhash
from mailmoat.internal.store import pack_entry, unpack_entry

T0 = 1_780_000_000.0 - 1_780_000_000.0 % 86400 + 4 * 86400  # a Monday


def test_correspondents_are_remembered_and_age_out():
    b = AccountBaseline()
    first = [recipient_key(f"old{i}@example.test") for i in range(100)]
    for k in first:
        b.remember(k)
    assert all(b.knows(k) for k in first)
    unknown = [recipient_key(f"never{i}@example.test") for i in range(1000)]
    assert sum(b.knows(k) for k in unknown) < 20  # a few false "known" at most
    for gen in range(2):  # two generations later the first hundred are gone
        for i in range(BLOOM_GENERATION + 1):
            b.remember(recipient_key(f"g{gen}-{i}@example.test"))
    assert sum(b.knows(k) for k in first) < 20


def test_peaks_fold_clean_hours_only():
    b = AccountBaseline()
    b.roll_hour(T0)
    b.count(5, 5, 2, 1, 0)
    assert b.roll_hour(T0 + 10) == []  # same hour
    changed = b.roll_hour(T0 + HOUR)
    assert b.peaks[0] == 5 and (0, 0.0, 5.0) in changed
    b.count(50, 50, 50, 50, 0)
    b.hour_flagged = True
    b.roll_hour(T0 + 2 * HOUR)
    assert b.peaks[0] == 5  # the flagged hour taught nothing
    assert b.roll_hour(T0) == []  # a clock that went back changes nothing
    assert b.decayed_peaks(T0 + HOUR + 90 * 86400)[0] == 2.5  # half-life 90 days


def test_hour_profile_by_kind_of_day():
    b = AccountBaseline()
    for d in range(5):  # weekdays, 09:00
        for _ in range(10):
            b.learn(T0 + d * 86400 + 9 * HOUR, recipient_keys=(), internal=1, external=0,
                    network="", agent="", types=(), link_domains=(), reply_to="", size=0)
    assert b.hour_share(T0 + 9 * HOUR, 20) == (50, 50, "weekday")
    assert b.hour_share(T0 + 3 * HOUR, 20) == (0, 50, "weekday")
    saturday = T0 + 5 * 86400 + 10 * HOUR
    assert b.hour_share(saturday, 20) == (50, 50, "all")  # no weekend history: all days


def test_peers_percentile():
    p = PeerStats()
    for v in [1] * 95 + [8] * 4 + [200]:
        p.move(0, 0, v)
    assert p.accounts(0) == 100 and 8 <= p.high(0) < 10
    p.move(0, 200, 0)
    p.move(0, 8, 0)
    assert p.accounts(0) == 98
    q = PeerStats.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q.hist == p.hist and q.high(0) == p.high(0)


def test_baseline_round_trip():
    b = AccountBaseline()
    b.learn(T0, recipient_keys=(1, 2, 3), internal=2, external=1, network="192.0.2.0/24",
            agent="microsoft outlook", types=("pdf",), link_domains=("partner.test",),
            reply_to="a@partner.test", size=2000)
    b.roll_hour(T0)
    b.count(1, 3, 3, 1, 0)
    c = AccountBaseline.from_dict(json.loads(json.dumps(b.to_dict())))
    assert c.to_dict() == b.to_dict() and c.knows(2) and not c.knows(4)


def test_window_entries_round_trip_and_cluster():
    e = Entry(at=T0, fingerprint=simhash("Rota", "Hi Bob,\nplease check the rota now.\n"),
              recipients=(1, 2), new=2, external=1, external_attachments=True, freemail=1,
              forwarded=True)
    assert unpack_entry(pack_entry(e)) == e
    assert unpack_entry(b"short") is None
    f = Entry(at=T0 + 5, fingerprint=simhash("Rota", "Hi Ann,\nplease check the rota now.\n"),
              recipients=(2, 3), new=1, external=0, external_attachments=False, freemail=0,
              forwarded=False)
    w = window_stats([e], f, since=T0 - 1, bits=10)
    assert (w.messages, w.recipients, w.fanout, w.fanout_messages, w.forwards) == (2, 3, 3, 2, 1)
    assert window_stats([e], f, since=T0 + 1, bits=10).messages == 1  # e is before `since`


def test_fingerprint():
    a = simhash("Invoice", "Dear Bob,\nplease find the invoice 1234 attached for March.\n")
    b = simhash("Invoice", "Dear Carol,\nplease find the invoice 9876 attached for March.\n")
    c = simhash("Lunch", "Shall we have lunch at the new place near the station today?\n")
    assert distance(a, b) <= 2 and distance(a, c) > 16
    assert simhash("", "") == 0 and simhash("x", "") != 0
