"""The behaviour check through the real scanner (parse, every check, policy), at chosen
times: what flags an account, what never does, and what each action does."""

from __future__ import annotations

import pytest

from mailmoat.internal.accounts import release_account
from mailmoat.scan.base import Action
from mailmoat.store.db import Database
from tests.internal.helpers import Org, internal_config, names

T0 = 1_780_000_000.0 - 1_780_000_000.0 % 86400 + 4 * 86400  # a Monday, 00:00 UTC
HOUR = 3600.0
DAY = 86400.0
PHISH = ("Your mailbox is full. Verify your account now: http://192.0.2.55/owa/login.php and "
         "confirm at http://paypal.com.secure-login.example.net/verify\n")


def colleagues(n: int, start: int = 0) -> list[str]:
    return [f"colleague{i}@example.test" for i in range(start, start + n)]


async def history(org: Org, account: str, days: int, per_hour: int, *, hours=range(9, 17),
                  rcpts=None, via: str = "header", client_ip: str = "127.0.0.1",
                  same_text: bool = False, weekdays_only: bool = True) -> float:
    """Ordinary mail on `days` days (weekdays only by default); the time after it."""
    day, sent = 0, 0
    while sent < days:
        start = T0 + day * DAY
        day += 1
        if weekdays_only and (day - 1) % 7 >= 5:
            continue
        sent += 1
        for h in hours:
            for k in range(per_hour):
                to = rcpts or [f"friend{(h * 7 + k) % 12}@example.test"]
                text = "Hi,\nthe weekly report is attached as usual.\nAnna\n" if same_text \
                    else f"Hi,\nabout item {k} of {h}: {'fine ' * (k + 1)}see you.\nAnna\n"
                out = await org.send(account, to, start + h * HOUR + k * 60, body=text,
                                     via=via, client_ip=client_ip,
                                     subject=f"Report {day}" if same_text else f"Re: item {k}")
                assert not {n for n in names(out) if n.startswith("INTERNAL_")}, \
                    [s.reason for s in out.result.symbols]
    return T0 + day * DAY


@pytest.fixture
async def org(tmp_path):
    o = Org(internal_config())
    yield o
    await o.close()


async def test_ordinary_mail_of_accounts_without_history_raises_nothing(org):
    for k in range(40):
        for m in range(4):
            out = await org.send(f"user{k}@example.test", [f"user{(k + m + 1) % 40}@example.test"],
                                 T0 + 9 * HOUR + k * 30 + m * 600,
                                 body=f"Hi,\nmeeting {m} about topic {k} moved.\nBen\n")
            assert not {n for n in names(out) if n.startswith("INTERNAL_")}
            assert out.result.facts.internal.action == "none"
    assert org.guard.stats.flagged == 0 and org.guard.stats.observed == 160


async def test_near_identical_mail_to_new_colleagues_flags_at_the_floor(org):
    at = T0 + 10 * HOUR
    for i in range(20):
        out = await org.send("mallory@example.test", [f"c{i}@example.test"], at + i,
                             subject="Holiday rota", body=f"Hi c{i},\nplease check the rota.\nM\n")
        assert out.result.facts.internal.action == "none"
    out = await org.send("mallory@example.test", ["c20@example.test"], at + 20,
                         subject="Holiday rota", body="Hi c20,\nplease check the rota.\nM\n")
    j = out.result.facts.internal
    assert j.flagged and j.action == "hold" and out.verdict.action is Action.QUARANTINE
    fan = out.result.get("INTERNAL_FANOUT")
    assert fan.score == 6.3 and fan.reason.startswith(
        "sent near-identical content to 21 colleagues in 21 messages within 20 seconds, all "
        "of them written to for the first time; it has no history of its own yet")
    assert "incident 1" in out.result.get("INTERNAL_FLAGGED").reason
    assert j.restriction.kind == "suspend" and j.restriction.until is None
    # Its next message is refused while suspended (the intake answers it).
    out = await org.send("mallory@example.test", ["c21@example.test"], at + 21,
                         subject="Lunch", body="Hi,\nlunch?\nM\n")
    assert out.result.facts.internal.action == "refuse"
    assert out.result.facts.internal.reply.startswith("451 4.7.1 Sending from "
                                                      "mallory@example.test is suspended")
    assert await org.guard.refusal("mallory@example.test", at + 22)
    assert await org.guard.refusal("someone@example.test", at + 22) is None
    assert len(org.guard.flags) == 1 and org.guard.alerter.sent[0].account == "mallory@example.test"


async def test_own_history_of_mass_mail_raises_its_limit(tmp_path):
    org = Org(internal_config())
    try:
        # comms sends one text to 18 colleagues each working hour, for a week: its own
        # busiest hours reach 18 (17 a week on), so 40 near-identical at once is within 3 × 17.
        end = await history(org, "comms@example.test", 5, 1, hours=range(9, 13),
                            rcpts=colleagues(18), same_text=True)
        out = await org.send("comms@example.test", colleagues(40, 100), end + 10 * HOUR,
                             subject="All-hands on Friday", body="Hi all,\nall-hands Friday.\n")
        assert not {n for n in names(out) if n.startswith("INTERNAL_")}, \
            [s.reason for s in out.result.symbols]
        # The same message from an account without that history is a fan-out.
        out = await org.send("dave@example.test", colleagues(40, 100), end + 10 * HOUR,
                             subject="All-hands on Friday", body="Hi all,\nall-hands Friday.\n")
        assert out.result.facts.internal.flagged
    finally:
        await org.close()


async def test_peers_stand_in_for_an_account_without_history(tmp_path):
    org = Org(internal_config(min_peer_accounts=5, floor_messages=5, floor_recipients=5))
    try:
        for k in range(6):
            await history(org, f"peer{k}@example.test", 3, 2, hours=range(9, 11))
        out = await org.send("newbie@example.test", ["x@example.test"], T0 + 20 * DAY + 9 * HOUR,
                             body="Hi,\nfirst day!\n")
        assert not {n for n in names(out) if n.startswith("INTERNAL_")}
        at = T0 + 20 * DAY + 10 * HOUR
        for i in range(8):
            out = await org.send("newbie@example.test", [f"n{i}@example.test"], at + i * 60,
                                 body=f"Hi,\nquestion {i} about {'x' * i}: {i * 7}?\n")
        burst = out.result.get("INTERNAL_BURST")
        assert burst is not None and "it has no history of its own yet; its peers' busiest " \
            "hours reach" in burst.reason
    finally:
        await org.close()


async def test_odd_hours_count_only_with_a_long_history(org):
    end = await history(org, "anna@example.test", 15, 1, hours=range(9, 17))
    out = await org.send("anna@example.test", ["friend1@example.test"], end + 3 * HOUR,
                         body="Hi,\nsomething at night.\n")
    odd = out.result.get("INTERNAL_ODD_HOUR")
    assert odd is not None and odd.reason.startswith("sent at 03:00 UTC;")
    assert not out.result.facts.internal.flagged  # alone it flags nothing
    out = await org.send("anna@example.test", ["friend1@example.test"], end + 1 * DAY + 12 * HOUR,
                         body="Hi,\nsomething at noon.\n")
    assert "INTERNAL_ODD_HOUR" not in names(out)


async def test_a_new_client_counts_only_with_other_changes(org):
    end = await history(org, "bob@example.test", 4, 2, hours=range(9, 13), via="auth",
                        client_ip="192.0.2.10")
    # A new phone on the road: same kind of mail, nothing.
    out = await org.send("bob@example.test", ["friend2@example.test"], end + 10 * HOUR,
                         via="auth", client_ip="203.0.113.5", body="Hi,\nrunning late.\n",
                         headers={"User-Agent": "iPhone Mail (20D67)"})
    assert not {n for n in names(out) if n.startswith("INTERNAL_")}
    # ... but from yet another network and program, with links to a domain it never sent,
    # that is a change of content too.
    out = await org.send("bob@example.test", ["friend2@example.test"], end + 10 * HOUR + 60,
                         via="auth", client_ip="198.51.100.7",
                         body="Hi,\nplease read https://files.example.net/x\n",
                         headers={"User-Agent": "Thunderbird/115.0"})
    sym = out.result.get("INTERNAL_NEW_CLIENT")
    assert sym is not None and "from network 198.51.100.0/24 (198.51.100.7)" in sym.reason
    assert "mail program it never used (thunderbird)" in sym.reason
    assert "links to example.net it never sent before" in sym.reason
    assert not out.result.facts.internal.flagged


async def test_reply_to_diversion_forwarding_and_attachments_to_free_mail(org):
    at = T0 + 11 * HOUR
    out = await org.send("fin@example.test", ["supplier@partner.test"], at, via="auth",
                         body="Please pay the attached invoice.\n",
                         headers={"Reply-To": "fin.dept@gmail.com"})
    sym = out.result.get("INTERNAL_REPLY_TO")
    assert sym.score == 3.0 and "fin.dept@gmail.com, a free-mail address" in sym.reason
    out = await org.send("eve@example.test", ["eve.private@gmail.com"], at, via="auth",
                         sender="Partner <news@partner.test>", body="Forwarded newsletter.\n")
    assert "INTERNAL_FORWARD" in names(out)
    # Attachments to a free-mail address never written to: one is noted, a stream flags.
    scores = []
    for i in range(10):
        out = await org.send("eve@example.test", ["dropbox.me@gmail.com"], at + 60 * (i + 1),
                             via="auth", subject=f"file {i}", body=f"part {i}\n",
                             attachments=[(f"plan{i}.pdf", "application/pdf", b"%PDF-1.4 x")])
        sym = out.result.get("INTERNAL_EXFILTRATION")
        assert sym is not None and "(.pdf) to a free-mail address it had never written to" \
            in sym.reason
        scores.append(sym.score)
    assert scores[0] == 1.5 and scores[2] == 3.0 and scores[5] == 4.5 and scores[9] == 6.0
    assert "10 such messages within 10 minutes" in sym.reason
    assert out.result.facts.internal.flagged


async def test_phishing_sent_by_an_account_flags_it_alone(org):
    out = await org.send("carol@example.test", ["dan@example.test"], T0 + 9 * HOUR,
                         subject="Mailbox quota", body=PHISH)
    bad = out.result.get("INTERNAL_BAD_CONTENT")
    assert bad is not None and bad.score == 6.0 and "backed by evidence" in bad.reason
    assert out.result.facts.internal.flagged


@pytest.mark.parametrize("action", ["hold", "throttle", "tag"])
async def test_actions(action):
    org = Org(internal_config(action=action, throttle_per_hour=3, action_minutes=30))
    try:
        at = T0 + 9 * HOUR
        for i in range(21):
            out = await org.send("m@example.test", [f"c{i}@example.test"], at + i,
                                 subject="Rota", body="Hi,\nplease check the rota.\n")
        j = out.result.facts.internal
        assert j.flagged
        later = [await org.send("m@example.test", [f"d{i}@example.test"], at + 100 + i,
                                subject=f"Other {i}", body=f"Hi,\nthing {i} {'y' * i}.\n")
                 for i in range(5)]
        if action == "hold":
            assert j.action == "hold" and j.restriction.until == at + 20 + 1800
            assert all(o.verdict.action is Action.QUARANTINE and "INTERNAL_RESTRICTED" in names(o)
                       for o in later)
        elif action == "throttle":
            assert j.action == "defer" and j.reply.startswith("451 4.7.1 Unusual sending")
            acts = [o.result.facts.internal.action for o in later]
            assert acts == ["none"] * 3 + ["defer"] * 2  # 3 an hour from the throttle on
            assert later[-1].result.facts.internal.reply.startswith(
                "451 4.7.1 Sending from m@example.test is throttled to 3 messages an hour")
        else:
            assert j.action == "tag" and j.restriction is None
            assert all(o.result.facts.internal.action == "none" for o in later)
        # The restriction ends after action_minutes.
        out = await org.send("m@example.test", ["f@example.test"], at + 3600,
                             subject="Much later", body="Hi,\nan hour on.\n")
        assert out.result.facts.internal.action == "none"
    finally:
        await org.close()


@pytest.mark.parametrize("action", ["tag", "hold"])
async def test_review_copies_of_a_flagging_message_that_is_delivered(action):
    org = Org(internal_config(action=action, review_copy_to=["sec@example.test"]))
    try:
        at = T0 + 9 * HOUR
        for i in range(21):
            out = await org.send("m@example.test", [f"c{i}@example.test"], at + i,
                                 subject="Rota", body="Hi,\nplease check the rota.\n")
            j = out.result.facts.internal
            assert j.flagged == (i == 20)
            # Copied when it flags the account and still goes out; held mail is reviewed
            # in quarantine instead.
            want = ("sec@example.test",) if j.flagged and action == "tag" else ()
            assert j.copy_to == want
    finally:
        await org.close()


async def test_a_released_account_flags_nothing_within_the_grace(tmp_path):
    cfg = internal_config(tmp_path, sync_seconds=0.05)
    db = Database(cfg.database_url)
    db.create_schema()
    org = Org(cfg, db)
    try:
        at = T0 + 9 * HOUR
        for i in range(21):
            out = await org.send("m@example.test", [f"c{i}@example.test"], at + i,
                                 subject="Rota", body="Hi,\nplease check the rota.\n")
        assert out.result.facts.internal.flagged
        release_account(cfg, db, "m@example.test", "admin@example.test", now=at + 60)
        await org.guard.sync()
        # What was queued upstream flows: the same text to more new colleagues.
        for i in range(21, 60):
            out = await org.send("m@example.test", [f"c{i}@example.test"], at + 60 + i,
                                 subject="Rota", body="Hi,\nplease check the rota.\n")
            j = out.result.facts.internal
            assert j.action == "none" and not j.flagged and out.verdict.action is Action.ACCEPT
        fan = out.result.get("INTERNAL_FANOUT")
        assert fan.score == 0 and fan.reason.endswith("(not counted: released by "
                                                      "admin@example.test)")
        # After the grace it counts again (the window starts at the release).
        later = at + 60 + 25 * HOUR
        for i in range(21):
            out = await org.send("m@example.test", [f"z{i}@example.test"], later + i,
                                 subject="Rota 2", body="Hi,\nplease check the new rota.\n")
        assert out.result.facts.internal.flagged
    finally:
        await org.close()
        db.dispose()


async def test_a_post_the_mail_server_expanded_from_a_list_is_one_message_to_the_list(org):
    """A fresh account's post to a 150-member list, handed over in three transactions of
    50 (To: the list, the members only in the envelope), raises nothing; the same text to
    the same 150 colleagues in Bcc (To: the sender) is a fan-out."""
    members = colleagues(150)
    at = T0 + 9 * HOUR
    for k in range(0, 150, 50):
        out = await org.send("lead@example.test", members[k:k + 50], at + k / 100,
                             to="Engineering <engineering@example.test>",
                             message_id="<post-1@example.test>", subject="Sprint review",
                             body="Hi all,\nthe sprint review moves to Thursday 14:00.\nLee\n")
        assert not {n for n in names(out) if n.startswith("INTERNAL_")}, \
            [s.reason for s in out.result.symbols]
    assert org.guard.baseline("lead@example.test").hour_counts[:2] == [1, 1]
    out = await org.send("mallory@example.test", members[:50], at + 60,
                         to="mallory@example.test", message_id="<bcc-1@example.test>",
                         subject="Sprint review",
                         body="Hi all,\nthe sprint review moves to Thursday 14:00.\nLee\n")
    assert "INTERNAL_FANOUT" in names(out) and out.result.facts.internal.flagged


async def test_with_lists_named_a_made_up_list_in_to_is_a_fan_out():
    """[internal] lists: only the named lists count as list posts, so a taken-over account
    that puts a made-up address of ours in To and 50 colleagues in Bcc is a fan-out; a post
    to a named list still raises nothing."""
    org = Org(internal_config(lists=["*-team@example.test"]))
    try:
        at = T0 + 9 * HOUR
        text = "Hi all,\nthe sprint review moves to Thursday 14:00.\nLee\n"
        out = await org.send("lead@example.test", colleagues(50), at,
                             to="Engineering <engineering-team@example.test>",
                             message_id="<post-2@example.test>", subject="Sprint", body=text)
        assert not {n for n in names(out) if n.startswith("INTERNAL_")}
        out = await org.send("mallory@example.test", colleagues(50, 50), at + 60,
                             to="All staff <all-staff@example.test>",
                             message_id="<fake-1@example.test>", subject="Sprint", body=text)
        assert "INTERNAL_FANOUT" in names(out) and out.result.facts.internal.flagged
    finally:
        await org.close()


async def test_an_inbox_rule_forwarding_to_free_mail_flags_at_the_second_forward(org):
    body = ("\n\n-----Original Message-----\nFrom: Bob <bob@example.test>\nSubject: Budget\n\n"
            "Here are the numbers for next quarter.\n")
    rule = {"X-MS-Exchange-Inbox-Rules-Loop": "carl@example.test"}
    at = T0 + 10 * HOUR
    out = await org.send("carl@example.test", ["carl.home123@gmail.com"], at,
                         subject="FW: Budget", body=body, headers=rule)
    fwd = out.result.get("INTERNAL_FORWARD")
    assert fwd is not None and fwd.score == 4.5 and not out.result.facts.internal.flagged
    assert ("to carl.home123@gmail.com, a free-mail address it had never written to before, "
            "automatically (a forwarding rule): 1 forward to it within a day") in fwd.reason
    out = await org.send("carl@example.test", ["carl.home123@gmail.com"], at + 3 * HOUR,
                         subject="FW: Travel", body=body.replace("Budget", "Travel"),
                         headers=rule)
    assert out.result.get("INTERNAL_FORWARD").score == 6.0
    assert out.result.facts.internal.flagged
    # A person forwarding a colleague's mail to a partner it writes to: a quarter as much.
    await org.send("dora@example.test", ["ann@partner.test"], at, body="Hi,\nthanks.\n")
    out = await org.send("dora@example.test", ["ann@partner.test"], at + HOUR,
                         subject="Fwd: Budget", body=body)
    fwd = out.result.get("INTERNAL_FORWARD")
    assert fwd is not None and fwd.score == 1.0 and "by hand" in fwd.reason


async def test_a_network_no_account_used_appearing_on_several_accounts_at_once(org):
    accounts = [f"acct{i}@example.test" for i in range(4)]
    for day in range(3):
        for i, a in enumerate(accounts):
            await org.send(a, [f"friend{i}@example.test"], T0 + day * DAY + 9 * HOUR + i * 60,
                           via="auth", client_ip=f"81.10.{i}.7", body=f"Hi,\nday {day}.\n",
                           headers={"X-Mailer": "Microsoft Outlook 16.0"})
    at = T0 + 3 * DAY + 9 * HOUR
    phpmailer = {"X-Mailer": "PHPMailer 6.9.1"}
    # One account on a network none of ours used: nothing shared (yet).
    out = await org.send(accounts[0], ["friend9@example.test"], at, via="auth",
                         client_ip="185.220.4.9", headers=phpmailer, body="Hi,\nnote.\n")
    assert "INTERNAL_SHARED_CLIENT" not in names(out)
    # A network our accounts do use, new to another account: nothing either.
    out = await org.send(accounts[1], ["friend9@example.test"], at + 60, via="auth",
                         client_ip="81.10.200.7", body="Hi,\nnote.\n")
    assert "INTERNAL_SHARED_CLIENT" not in names(out)
    out = await org.send(accounts[2], ["friend9@example.test"], at + 600, via="auth",
                         client_ip="185.220.77.3", headers=phpmailer, body="Hi,\nnote.\n")
    shared = out.result.get("INTERNAL_SHARED_CLIENT")
    assert shared is not None and shared.score == 3.75
    assert shared.reason.startswith("sends from 185.220.0.0/16 with the same mail program "
                                    "(phpmailer), a network none of our accounts sent from "
                                    "before, as 1 other account of ours")
    out = await org.send(accounts[3], ["friend9@example.test"], at + 1200, via="auth",
                         client_ip="185.220.9.1", headers=phpmailer, body="Hi,\nnote.\n")
    assert out.result.get("INTERNAL_SHARED_CLIENT").score == 5.625
    # An hour later the network is still nobody's good network, but no longer shared.
    out = await org.send(accounts[1], ["friend9@example.test"], at + 3 * HOUR, via="auth",
                         client_ip="185.220.4.200", body="Hi,\nnote.\n")
    assert "INTERNAL_SHARED_CLIENT" not in names(out)
