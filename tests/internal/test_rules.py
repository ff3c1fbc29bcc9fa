"""`[[internal.rules]]`: refused at load when mistyped, matched through the real scanner,
their actions, and end to end through a running gateway, with a rule saved in the console
applied without a restart."""

from __future__ import annotations

import aiosmtplib
import pytest

from mailmoat.config import load_config
from mailmoat.errors import ConfigError
from mailmoat.internal.accounts import get_restriction, list_incidents
from mailmoat.scan.base import Action
from mailmoat.store.db import Database
from tests.internal.helpers import Org, held_count, internal_config, message, names
from tests.smtp.helpers import gateway_config, running_gateway, wait_until

T0 = 1_780_000_000.0
CARDS = "Hi,\nthe cards: 4111 1111 1111 1111, 5555 5555 5555 4444 and 3782 822463 10005.\n"
NO_CARDS = {"name": "no-cards-outside", "recipients": "external", "detectors": {"card": 1},
            "action": "hold"}


def _load(tmp_path, text: str):
    p = tmp_path / "mailmoat.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(p)


@pytest.mark.parametrize("rule,expected", [
    ('detectorz = { card = 1 }', r"unknown key 'detectorz' in \[internal.rules\[0\]\] in "
     r".*mailmoat.toml line 5 \(did you mean 'detectors'\?\)"),
    ('detectors = { crd = 1 }', r"no detector 'crd' \(did you mean 'card'\?\)"),
    ('recipients = "externl"', r"recipients = 'externl'.*must be any, internal or external"),
    ('action = "quarantine"\ndetectors = { card = 1 }',
     r"action = 'quarantine'.*must be tag, copy, alert, hold, reject, throttle or suspend"),
    ('groups = ["finanse"]', r"no group 'finanse' in \[internal\] groups \(did you mean "
     r"'finance'\?\)"),
    ('signals = ["INTERNAL_BURTS"]', r"no check declares the symbol INTERNAL_BURTS \(did you "
     r"mean INTERNAL_BURST\?\)"),
    ('description = "matches everything"', r"has no condition"),
    ('detectors = { card = 0 }', r"detector card needs a count from 1"),
])
def test_mistyped_rules_are_refused_at_load(tmp_path, rule, expected):
    text = ('[internal]\ngroups = { finance = ["*@fin.example.test"] }\n[[internal.rules]]\n'
            f'name = "r"\n{rule}\n')
    with pytest.raises(ConfigError, match=expected):
        _load(tmp_path, text)


def test_rules_and_groups_that_load(tmp_path):
    (tmp_path / "groups.txt").write_text("# who is who\nfinance: cfo@example.test, "
                                         "*@fin.example.test\nsales: @sales.example.test\n")
    cfg = _load(tmp_path, '[internal]\ngroups_file = "groups.txt"\n[[internal.rules]]\n'
                'name = "finance-ibans"\ngroups = ["finance"]\ndetectors = { iban = 2 }\n'
                'action = "alert"\n[[internal.rules]]\nname = "Two"\naccounts = ["@x.test"]\n'
                'recipient_domains = ["gmail.com"]\n')
    from mailmoat.internal.check import load_groups
    from mailmoat.internal.settings import InternalSettings

    s = cfg.section("internal", InternalSettings)
    assert [r.name for r in s.rules] == ["finance-ibans", "Two"]
    assert load_groups(cfg, s) == {"finance": ["cfo@example.test", "*@fin.example.test"],
                                   "sales": ["@sales.example.test"]}
    with pytest.raises(ConfigError, match="two rules are named 'Two'"):
        _load(tmp_path, '[[internal.rules]]\nname = "two"\naccounts = ["a@x.test"]\n'
              '[[internal.rules]]\nname = "Two"\naccounts = ["b@x.test"]\n')


async def test_a_rule_holds_cards_sent_outside_and_says_why():
    org = Org(internal_config(rules=[NO_CARDS]))
    try:
        out = await org.send("anna@example.test", ["x@partner.test", "y@partner.test"], T0,
                             body=CARDS)
        rule = out.result.get("INTERNAL_RULE")
        assert rule is not None and rule.score == 5.0
        assert rule.reason == ("rule 'no-cards-outside': 3 payment card numbers (Luhn-valid) "
                               "to 2 external recipients")
        assert "4111" not in rule.reason and "4444" in "…4444"
        assert out.verdict.action is Action.QUARANTINE
        # The same numbers to colleagues, an order number outside, a Luhn miss: no rule.
        for rcpts, body in ((["b@example.test"], CARDS),
                            (["x@partner.test"], "Order number 4111 1111 1111 1111 shipped"),
                            (["x@partner.test"], "card 4111 1111 1111 1112")):
            out = await org.send("anna@example.test", rcpts, T0 + 60, body=body)
            assert "INTERNAL_RULE" not in names(out), body
            assert out.verdict.action is Action.ACCEPT
    finally:
        await org.close()


async def test_rule_conditions_groups_attachments_and_symbols():
    rules = [{"name": "finance-xlsx-out", "groups": ["finance"], "direction": ["outbound"],
              "attachment_types": ["xlsx", "csv"], "detectors": {"iban": 2}, "score": 3,
              "action": "tag"},
             {"name": "bursting", "signals": ["INTERNAL_FANOUT", "INTERNAL_BURST"],
              "action": "alert", "score": 1}]
    org = Org(internal_config(rules=rules, groups={"finance": ["*@fin.example.test"]}))
    csv = b"name,iban\nA,DE89 3704 0044 0532 0130 00\nB,GB82WEST12345698765432\n"
    try:
        out = await org.send("bo@fin.example.test", ["p@partner.test"], T0, body="See attached",
                             attachments=[("pay.csv", "text/csv", csv)])
        assert out.result.get("INTERNAL_RULE").reason == (
            "rule 'finance-xlsx-out': 2 IBANs (mod-97-valid), .csv attachments to 1 recipient "
            "(group finance)")
        assert out.result.get("INTERNAL_RULE").score == 3.0
        # Not in the group, or one IBAN only: no rule.
        out = await org.send("al@example.test", ["p@partner.test"], T0 + 1, body="See attached",
                             attachments=[("pay.csv", "text/csv", csv)])
        assert "INTERNAL_RULE" not in names(out)
        out = await org.send("bo@fin.example.test", ["p@partner.test"], T0 + 2, body="x",
                             attachments=[("pay.csv", "text/csv", csv.splitlines()[1])])
        assert "INTERNAL_RULE" not in names(out)
        # A rule on the behaviour symbols: fires with the fan-out, opens an incident (alert).
        for i in range(21):
            out = await org.send("m@example.test", [f"c{i}@example.test"], T0 + 100 + i,
                                 subject="Rota", body="Hi,\nplease check the rota.\n")
        reasons = [s.reason for s in out.result.symbols if s.name == "INTERNAL_RULE"]
        assert reasons and reasons[0].startswith("rule 'bursting': with INTERNAL_")
    finally:
        await org.close()


@pytest.mark.parametrize("action", ["reject", "suspend", "throttle", "alert"])
async def test_rule_actions(tmp_path, action):
    cfg = internal_config(tmp_path, rules=[{**NO_CARDS, "action": action}])
    db = Database(cfg.database_url)
    db.create_schema()
    org = Org(cfg, db)
    try:
        out = await org.send("anna@example.test", ["x@partner.test"], T0, body=CARDS)
        j = out.result.facts.internal
        if action == "reject":
            assert out.verdict.action is Action.REJECT and not j.flagged
            return
        assert j.flagged and "INTERNAL_FLAGGED" in names(out)
        [incident] = list_incidents(db)
        assert incident.account == "anna@example.test"
        assert incident.signals[0]["reason"].startswith("rule 'no-cards-outside'")
        assert org.guard.alerter.sent[-1].account == "anna@example.test"
        r = get_restriction(db, "anna@example.test")
        if action == "alert":
            assert j.action == "tag" and r is None
            return
        assert r is not None and r.kind == action and "rule 'no-cards-outside'" in r.reason
        later = await org.send("anna@example.test", ["b@example.test"], T0 + 60, body="Hi")
        if action == "suspend":
            assert j.action == "hold" and out.verdict.action is Action.QUARANTINE
            assert later.result.facts.internal.action == "refuse"
        else:
            assert j.action == "defer" and j.reply.startswith("451 4.7.1")
    finally:
        await org.close()
        db.dispose()


async def test_rules_end_to_end_through_the_gateway_and_the_console(tmp_path, sink):
    """Real SMTP from the trusted relay: the TOML's rule refuses cards sent outside; a rule
    saved as the console saves it (a policy version) holds IBANs from then on, no restart."""
    from mailmoat.web import policy_store

    cfg = gateway_config(
        tmp_path, sink.port, content={"enabled": False}, deep={"mode": "off"},
        policy={"reload_interval": 0.1},
        smtp={"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
        internal={"identity_header": "X-Authenticated-Sender",
                  "rules": [{**NO_CARDS, "action": "reject"}]})
    account = "anna@example.test"
    ibans = "Hi,\nplease pay DE89 3704 0044 0532 0130 00 and GB82 WEST 1234 5698 7654 32.\n"

    async def send(rcpts: list[str], body: str) -> str:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                            timeout=10, local_hostname="relay.example.test")
        await c.connect()
        try:
            _, reply = await c.sendmail(account, rcpts, message(account, rcpts, "Hi", body))
            return reply
        except aiosmtplib.SMTPDataError as exc:
            return f"{exc.code} {exc.message}"
        finally:
            await c.quit()

    async with running_gateway(cfg) as gw:
        refused = await send(["x@partner.test"], CARDS)
        assert refused.startswith("550") and "no-cards-outside" in refused
        assert "4111" not in refused
        assert (await send(["x@partner.test"], "Hi,\nsee you.\n")).startswith("2.0.0 Ok")
        assert (await send(["x@partner.test"], ibans)).startswith("2.0.0 Ok")
        await sink.wait_for(2)

        rules = policy_store.parse_rules_toml(cfg, '[[rules]]\nname = "no-ibans"\n'
                                              'detectors = { iban = 2 }\naction = "hold"\n')
        v = policy_store.save_rules(cfg, gw.db, rules, "admin@example.test").id
        await wait_until(lambda: gw.policy_version == v, what="the rules' version in force")
        assert (await send(["x@partner.test"], ibans)).startswith("2.0.0 Ok")
        await wait_until(lambda: held_count(gw.db, account) == 1, what="the IBANs held")
        # The console's rules replace the file's: cards go out again.
        assert (await send(["x@partner.test"], CARDS)).startswith("2.0.0 Ok")
        await sink.wait_for(3)


async def test_a_copy_rule_delivers_and_sends_the_reviewer_a_copy(tmp_path, sink):
    """Action copy: the message goes to its recipient, a copy to [internal] review_copy_to,
    and the message log lists the reviewer with action copy; other mail is not copied."""
    cfg = gateway_config(
        tmp_path, sink.port, content={"enabled": False}, deep={"mode": "off"},
        smtp={"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
        internal={"identity_header": "X-Authenticated-Sender",
                  "review_copy_to": ["Security@example.test"],
                  "rules": [{**NO_CARDS, "action": "copy"}]})
    account = "anna@example.test"
    async with running_gateway(cfg) as gw:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                            timeout=10, local_hostname="relay.example.test")
        await c.connect()
        _, reply = await c.sendmail(account, ["x@partner.test"],
                                    message(account, ["x@partner.test"], "Cards", CARDS))
        mid = reply.rsplit(" ", 1)[1]
        await c.sendmail(account, ["y@partner.test"],
                         message(account, ["y@partner.test"], "Hi", "Hi,\nsee you.\n"))
        await c.quit()
        await sink.wait_for(2)
        got = sorted(r for _, rcpts, _ in sink.messages for r in rcpts)
        assert got == ["security@example.test", "x@partner.test", "y@partner.test"]
        # The rule's score (5) tags the message; the reviewer's row says copy.
        want = {"x@partner.test": ("tag", "delivered"),
                "security@example.test": ("copy", "delivered")}
        await wait_until(lambda: _statuses(gw.db, mid) == want, what="both logged delivered")


def _statuses(db, mid: str) -> dict[str, tuple[str, str]]:
    from sqlalchemy import select

    from mailmoat.store.models import RecipientRow

    with db.session() as s:
        return {r.address: (r.action, r.status) for r in s.scalars(
            select(RecipientRow).where(RecipientRow.message_id == mid))}


def test_a_copy_rule_needs_a_reviewer(tmp_path):
    with pytest.raises(ConfigError, match="action copy but \\[internal\\] review_copy_to"):
        _load(tmp_path, '[[internal.rules]]\nname = "c"\ndetectors = { card = 1 }\n'
                        'action = "copy"\n')
