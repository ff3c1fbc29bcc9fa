"""The company-mail simulator (mailmoat.internal.simulate): deterministic, shaped like an
office's mail, every takeover scenario and legitimate burst in it, and real messages."""

from __future__ import annotations

import email.utils
import itertools
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from mailmoat.internal.simulate import (
    BURSTS,
    FREEMAIL,
    MAIL_SERVER_IP,
    SCENARIOS,
    Planned,
    SimConfig,
    Simulation,
    simulate,
)
from mailmoat.message.model import Direction
from mailmoat.message.parse import parse_message

# 28 days around a quarter end (2025-03-31), takeovers from day 15 on; small enough to plan
# in about a second.
SMALL = SimConfig(seed=7, accounts=120, days=28, start=date(2025, 3, 10), volume=0.5)
DOMAIN = SMALL.domain
ZONES = {"nyc": "America/New_York", "ber": "Europe/Berlin", "sha": "Asia/Shanghai"}


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(SMALL)


@pytest.fixture(scope="module")
def plan(sim: Simulation) -> list[Planned]:
    return list(sim.outline())


def _internal(addr: str) -> bool:
    return addr.rsplit("@", 1)[-1] == DOMAIN


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(sim: Simulation) -> None:
    again = simulate(SMALL)
    assert again.transactions() == sim.transactions()
    assert [(s.name, s.accounts, s.start) for s in again.scenarios] == \
        [(s.name, s.accounts, s.start) for s in sim.scenarios]
    a = list(itertools.islice(sim.messages(), 300))
    b = list(itertools.islice(again.messages(), 300))
    assert [m.raw for m in a] == [m.raw for m in b]
    assert [m.envelope for m in a] == [m.envelope for m in b]
    other = list(itertools.islice(simulate(SimConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
                                  .messages(), 300))
    assert [m.raw for m in other] != [m.raw for m in a]
    # Rendering a subset gives the same bytes as the whole stream.
    until = a[-1].envelope.received_at
    picked = {m.index: m.raw for m in sim.messages(lambda p: p.kind == "reply" and p.t < until)
              if m.index < 300}
    assert picked and all(a[i].raw == raw for i, raw in picked.items())


def test_messages_are_in_time_order_with_consistent_envelopes(sim: Simulation) -> None:
    last = 0.0
    for m in itertools.islice(sim.messages(), 800):
        env = m.envelope
        assert env.received_at >= last - 1
        last = env.received_at
        assert sim.start <= env.received_at < sim.end
        assert 1 <= len(env.rcpt_tos) <= 50
        external = any(not _internal(r) for r in env.rcpt_tos)
        assert env.direction is (Direction.OUTBOUND if external else Direction.INTERNAL)
        # "header" identity: the company mail server relays and names the user.
        assert env.client_ip == MAIL_SERVER_IP and env.auth_user is None
        assert env.mail_from in ("", m.account)


def test_volumes_are_heavy_tailed(plan: list[Planned], sim: Simulation) -> None:
    sent = Counter(p.account for p in plan
                   if p.label is None and p.kind in ("new", "reply", "new_external",
                                                     "reply_external"))
    counts = sorted((sent.get(a.address, 0) for a in sim.accounts), reverse=True)
    top_decile = sum(counts[:len(counts) // 10]) / sum(counts)
    assert top_decile > 0.25, top_decile  # a tenth of the people send a quarter of the mail
    assert counts[0] > 5 * statistics.median(counts)
    by_role: dict[str, list[int]] = defaultdict(list)
    for a in sim.accounts:
        by_role[a.role.name].append(sent.get(a.address, 0))
    # Support answers customers all day; engineers write less.
    assert statistics.median(by_role["support"]) > statistics.median(by_role["engineer"])


def test_people_send_in_their_own_working_hours_in_three_time_zones(
        plan: list[Planned], sim: Simulation) -> None:
    zones = ZONES
    travelling = {b.accounts[0] for b in sim.bursts if b.kind == "travel"}
    in_hours: Counter[str] = Counter()
    total: Counter[str] = Counter()
    utc_hours: dict[str, Counter[int]] = defaultdict(Counter)
    for p in plan:
        if p.label is not None or p.kind not in ("new", "reply") or p.account in travelling:
            continue
        local = datetime.fromtimestamp(p.t, ZoneInfo(zones[p.site]))
        total[p.site] += 1
        in_hours[p.site] += local.weekday() < 5 and 7 <= local.hour < 19
        utc_hours[p.site][datetime.fromtimestamp(p.t, ZoneInfo("UTC")).hour] += 1
    assert set(total) == set(zones)
    for site in zones:
        assert in_hours[site] / total[site] > 0.8, (site, in_hours[site] / total[site])
    busiest = {site: max(range(24), key=lambda h: utc_hours[site][h]) for site in zones}
    assert 12 <= busiest["nyc"] <= 22  # 8:00-18:00 EST/EDT
    assert 6 <= busiest["ber"] <= 16  # CET/CEST
    assert 0 <= busiest["sha"] <= 10  # CST
    # Nobody's week is all weekdays: a little weekend mail exists, far less than weekday mail.
    weekend = sum(1 for p in plan if p.label is None and p.kind == "new"
                  and datetime.fromtimestamp(p.t, ZoneInfo(zones[p.site])).weekday() >= 5)
    assert 0 < weekend < 0.1 * sum(1 for p in plan if p.kind == "new")


def test_first_time_correspondents_come_at_a_modest_rate(plan: list[Planned],
                                                        sim: Simulation) -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    new = total = 0
    settle = sim.start + 14 * 86400
    for p in plan:
        if p.label is not None:
            continue
        rcpts = set(p.recipients)
        if p.t >= settle and p.kind in ("new", "new_external"):
            total += 1
            new += bool(rcpts - seen[p.account])
        seen[p.account] |= rcpts
    assert total > 500
    assert 0.03 < new / total < 0.3, new / total


def test_every_scenario_is_injected_and_labelled(plan: list[Planned], sim: Simulation) -> None:
    assert sorted(s.name for s in sim.scenarios) == sorted(SCENARIOS)
    by_name = {s.name: s for s in sim.scenarios}
    clean_until = sim.start + SMALL.attack_from * SMALL.days * 86400
    labelled: dict[str, list[Planned]] = defaultdict(list)
    for p in plan:
        if p.label is not None:
            labelled[p.label].append(p)
            s = by_name[p.label]
            assert p.account in s.accounts and p.t >= s.start - 1 and p.t >= clean_until
    for name in SCENARIOS:
        assert len(labelled[name]) >= 3, name
    # No account is in two scenarios: each flag belongs to one.
    victims = [a for s in sim.scenarios for a in s.accounts]
    assert len(victims) == len(set(victims))
    assert len(by_name["multi_takeover"].accounts) >= 3
    spam = labelled["spam_burst"]
    assert len(spam) >= 200 and spam[-1].t - spam[0].t < 2 * 3600
    assert all(not _internal(r) for p in spam for r in p.recipients)
    lateral = labelled["lateral_phishing"]
    hours = (lateral[-1].t - lateral[0].t) / 3600
    assert all(_internal(r) for p in lateral for r in p.recipients)
    assert len(lateral) >= 12 and len(lateral) / hours < 5  # low and slow: a few an hour
    everyone = {r for p in labelled["company_phish"] for r in p.recipients}
    assert len(everyone) >= 0.95 * len(sim.accounts)
    fraud = labelled["payment_fraud"]
    assert sim.account(fraud[0].account).role.name == "finance"
    assert all(not _internal(r) for p in fraud for r in p.recipients)
    exfil = labelled["night_exfiltration"]
    local = ZoneInfo(ZONES[exfil[0].site])
    assert all(datetime.fromtimestamp(p.t, local).hour < 6 and p.attachments for p in exfil)
    assert {r.rsplit("@", 1)[1] for p in exfil for r in p.recipients} <= set(FREEMAIL)
    forwards = labelled["auto_forward"]
    assert len({r for p in forwards for r in p.recipients}) == 1
    assert len({p.account for p in labelled["multi_takeover"]}) >= 3
    hijack = labelled["thread_hijack"]
    assert all(p.attachments for p in hijack)


def test_the_legitimate_bursts_are_there(plan: list[Planned], sim: Simulation) -> None:
    assert {b.kind for b in sim.bursts} == set(BURSTS)
    kinds = Counter(p.kind for p in plan)
    people = len(sim.accounts)
    # The weekly newsletter: one copy per person, from one account, within minutes.
    letters = [p for p in plan if p.kind == "newsletter"]
    assert len({p.account for p in letters}) == 1
    weeks = defaultdict(list)
    for p in letters:
        weeks[int((p.t - sim.start) // (7 * 86400))].append(p.t)
    assert len(weeks) == 4
    assert all(len(ts) >= 0.9 * people and max(ts) - min(ts) < 3600 for ts in weeks.values())
    # The all-hands: to all@, expanded by the mail server to (nearly) every person.
    hands = [p for p in plan if p.kind == "all_hands"]
    assert len(hands) == 2
    assert all(p.to == (f"all@{DOMAIN}",) and len(p.recipients) >= 0.95 * people for p in hands)
    # Quarter end: invoices with a PDF to customers on the last working days of March.
    invoices = [p for p in plan if p.kind == "quarter_end"]
    assert len(invoices) >= 150 and all(p.attachments == 1 for p in invoices)
    days = {datetime.fromtimestamp(p.t, ZoneInfo(ZONES[p.site])).date() for p in invoices}
    assert days == {date(2025, 3, 28), date(2025, 3, 31)}  # the last two working days
    # New hires: nothing before the first day, then hellos to the team.
    for b in (b for b in sim.bursts if b.kind == "new_hire"):
        sent = [p for p in plan if p.account == b.accounts[0]]
        assert sent and min(p.t for p in sent) >= b.start - 3600 * 12
        assert any(p.kind == "new_hire" for p in sent)
    # Vacation: the mail server answers for the absent person, nothing else from them.
    assert kinds["vacation"] > 10
    for b in (b for b in sim.bursts if b.kind == "vacation"):
        during = [p for p in plan if p.account == b.accounts[0] and b.start <= p.t < b.end]
        assert all(p.kind == "vacation" and not p.authenticated for p in during)
    # Travel: a foreign network; a new phone: a new mail program from that day on.
    for b in (b for b in sim.bursts if b.kind == "travel"):
        a = sim.account(b.accounts[0])
        away = [p for p in plan if p.account == a.address and b.start <= p.t < b.end
                and p.label is None and p.kind in ("new", "reply")]
        assert away and all(not p.client_ip.startswith(a.site.office_net) for p in away)
    for b in (b for b in sim.bursts if b.kind == "new_phone"):
        before = {p.agent for p in plan if p.account == b.accounts[0] and p.t < b.start}
        after = {p.agent for p in plan if p.account == b.accounts[0] and p.t >= b.start}
        assert after - before
    assert kinds["list"] > 0 and kinds["reply"] > kinds["new"] * 0.3


def test_messages_parse_as_real_mail(sim: Simulation) -> None:
    """A sample of every kind of message goes through mailmoat's own parser."""
    quota: Counter[str] = Counter()

    def pick(p: Planned) -> bool:
        quota[p.kind] += 1
        return quota[p.kind] <= 6

    seen_ids: set[str] = set()
    kinds: set[str] = set()
    for m in sim.messages(pick):
        msg = parse_message(m.raw, m.envelope)
        kinds.add(m.kind)
        assert msg.defects == (), (m.kind, msg.defects)
        assert msg.from_addr is not None and msg.from_addr.address == m.account
        assert msg.subject or m.kind == "night_exfiltration"
        sent = email.utils.parsedate_to_datetime(msg.date).timestamp()
        assert abs(sent - m.envelope.received_at) < 2
        assert msg.message_id.startswith("<") and msg.message_id.endswith(">")
        if msg.message_id not in seen_ids:
            seen_ids.add(msg.message_id)
        if m.kind == "reply":
            assert msg.header("In-Reply-To") and msg.subject.startswith("Re: ")
            assert "wrote:" in msg.text
        if m.kind not in ("vacation",):
            assert msg.header("X-Authenticated-Sender") == m.account
            assert "(Authenticated sender: " in (msg.header("Received") or "")
        else:
            assert msg.header("Auto-Submitted", ) and m.envelope.mail_from == ""
        if m.kind == "newsletter":
            assert msg.html and len(msg.urls) >= 5
        if m.kind == "quarter_end":
            (att,) = msg.attachments
            assert att.filename.endswith(".pdf") and att.detected_type == "application/pdf"
        if m.kind in ("lateral_phishing", "company_phish", "new_network_content",
                      "multi_takeover"):
            hosts = {u.host for u in msg.urls}
            assert hosts and not any(h.endswith(DOMAIN) for h in hosts)
            assert any("xampl" in h or "sign" in h for h in hosts)  # a lookalike or e-sign lure
        if m.kind == "payment_fraud":
            assert msg.reply_to and msg.reply_to[0].domain in FREEMAIL
            assert "IBAN" in msg.text
        if m.kind in ("night_exfiltration", "thread_hijack"):
            assert msg.attachments
        if m.kind == "auto_forward":
            assert msg.subject.startswith("FW: ")
    assert kinds >= set(SCENARIOS) | {"newsletter", "all_hands", "quarter_end", "vacation",
                                       "new_hire", "reply", "new", "list"}


def test_smtp_auth_mode_puts_the_device_in_the_envelope() -> None:
    sim = simulate(SimConfig(**{**SMALL.__dict__, "identity": "auth", "days": 14}))
    for m in itertools.islice(sim.messages(), 300):
        env = m.envelope
        if m.kind == "vacation":
            assert env.auth_user is None and env.client_ip == MAIL_SERVER_IP
            continue
        assert env.auth_user == m.account and env.client_ip != MAIL_SERVER_IP
        assert b"X-Authenticated-Sender" not in m.raw


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="identity"):
        SimConfig(identity="pigeon")
    with pytest.raises(ValueError, match="unknown scenario"):
        SimConfig(scenarios=("spam_burst", "alien_invasion"))
    with pytest.raises(ValueError, match="accounts"):
        SimConfig(accounts=10)
