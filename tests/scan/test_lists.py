"""Allow and block lists: sender, domain and IP entries, overrides, forgery resistance."""

from __future__ import annotations

import pytest

from mailmoat.errors import ConfigError
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.policy.decide import decide
from mailmoat.scan.base import Action, BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AuthFacts
from mailmoat.scan.lists import ListsCheck, SenderPattern, build
from mailmoat.scan.pipeline import Pipeline
from tests.conftest import make_config, make_email, scan_bytes, symbol_names


@pytest.mark.parametrize(
    "entry,address,hit",
    [
        ("alice@sender.test", "alice@sender.test", True),
        ("Alice@Sender.Test", "ALICE@sender.test", True),
        ("alice@sender.test", "bob@sender.test", False),
        ("@sender.test", "bob@sender.test", True),
        ("@sender.test", "bob@mail.sender.test", False),
        ("sender.test", "bob@sender.test", True),
        ("*@sender.test", "bob@sender.test", True),
        ("*.sender.test", "bob@mail.sender.test", True),
        ("*.sender.test", "bob@sender.test", True),
        ("*.sender.test", "bob@evilsender.test", False),
        ("@sender.test", "bob@sender.test.evil", False),
        ("@sender.test", "", False),
    ],
)
def test_sender_patterns(entry, address, hit):
    assert SenderPattern.parse(entry).matches(address) is hit


@pytest.mark.parametrize("bad", ["", "@", "*.", "nodot", "a@", "@a b.test", "*.*.test"])
def test_bad_sender_entries_are_config_errors(bad):
    with pytest.raises(ConfigError, match="policy"):
        build(BuildContext(make_config(policy={"block_senders": [bad]})))


@pytest.mark.parametrize(
    "policy",
    [
        {"allow_ips": ["300.1.1.1"]},
        {"block_ips": ["10.0.0.0/33"]},
        {"block_senders": "a@b.test"},  # a string, not a list
        {"block_action": "discard"},
        {"domains": {"example.test": {"block_action": "bounce"}}},
        {"outbound": {"reject_threshold": "high"}},
        {"recipients": {"a@example.test": {"tag_threshold": True}}},
        {"domains": {"example.test": {"subject_prefix": 5}}},
    ],
)
def test_bad_list_config_is_refused(policy):
    with pytest.raises(ConfigError):
        build(BuildContext(make_config(policy=policy)))


def test_no_lists_no_check():
    assert build(BuildContext(make_config())) == []


CASES = [
    # (policy, scan kwargs, headers' From, auth facts, expected symbols, expected action)
    ({"block_senders": ["@sender.test"]}, {}, None, {}, {"POLICY_BLOCK_SENDER"}, Action.REJECT),
    (
        {"block_senders": ["@sender.test"], "block_action": "quarantine"},
        {},
        None,
        {},
        {"POLICY_BLOCK_SENDER"},
        Action.QUARANTINE,
    ),
    # a block on the From header alone, even with another envelope sender
    (
        {"block_senders": ["mallory@evil.test"]},
        {"mail_from": "bounce@esp.test"},
        "Mallory <mallory@evil.test>",
        {},
        {"POLICY_BLOCK_SENDER"},
        Action.REJECT,
    ),
    ({"block_ips": ["192.0.2.0/24"]}, {}, None, {}, {"POLICY_BLOCK_IP"}, Action.REJECT),
    (
        {"block_ips": ["2001:db8::/32"]},
        {"client_ip": "2001:db8::25"},
        None,
        {},
        {"POLICY_BLOCK_IP"},
        Action.REJECT,
    ),
    ({"block_ips": ["2001:db8::/32"]}, {"client_ip": "not-an-ip"}, None, {}, set(), Action.ACCEPT),
    ({"allow_ips": ["192.0.2.10"]}, {}, None, {}, {"POLICY_ALLOW_IP"}, Action.ACCEPT),
    (
        {"allow_senders": ["alice@sender.test"]},
        {},
        None,
        {},
        {"POLICY_ALLOW_SENDER"},
        Action.ACCEPT,
    ),
    # the envelope sender fails SPF: no allow by it, nor by the same-domain From
    ({"allow_senders": ["alice@sender.test"]}, {}, None, {"spf": "fail"}, set(), Action.ACCEPT),
    ({"allow_senders": ["alice@sender.test"]}, {}, None, {"spf": "softfail"}, set(), Action.ACCEPT),
    (
        {"allow_senders": ["alice@sender.test"]},
        {},
        None,
        {"spf": "pass", "spf_domain": "sender.test", "dmarc": "none"},
        {"POLICY_ALLOW_SENDER"},
        Action.ACCEPT,
    ),
    # DMARC failed: a same-domain From does not count either
    (
        {"allow_senders": ["@partner.test"]},
        {"mail_from": "b@partner.test"},
        "C <ceo@partner.test>",
        {"dmarc": "fail", "spf": "fail"},
        set(),
        Action.ACCEPT,
    ),
    # allow by a From that a forger wrote: no DMARC pass, different envelope domain → ignored
    (
        {"allow_senders": ["ceo@partner.test"]},
        {"mail_from": "x@evil.test"},
        "CEO <ceo@partner.test>",
        {},
        set(),
        Action.ACCEPT,
    ),
    (
        {"allow_senders": ["ceo@partner.test"]},
        {"mail_from": "x@evil.test"},
        "CEO <ceo@partner.test>",
        {"dmarc": "fail"},
        set(),
        Action.ACCEPT,
    ),
    # the same From with DMARC pass counts
    (
        {"allow_senders": ["ceo@partner.test"]},
        {"mail_from": "x@esp.test"},
        "CEO <ceo@partner.test>",
        {"dmarc": "pass"},
        {"POLICY_ALLOW_SENDER"},
        Action.ACCEPT,
    ),
    # …and with an envelope sender of the same domain
    (
        {"allow_senders": ["@partner.test"]},
        {"mail_from": "bounces@partner.test"},
        "CEO <ceo@partner.test>",
        {},
        {"POLICY_ALLOW_SENDER"},
        Action.ACCEPT,
    ),
    # block beats allow in the same layer
    (
        {"allow_senders": ["@sender.test"], "block_ips": ["192.0.2.10/32"]},
        {},
        None,
        {},
        {"POLICY_BLOCK_IP"},
        Action.REJECT,
    ),
]


class _Authenticate(Check):
    """Stage-0 stand-in for the auth family's facts (which lists reads in stage 1); no
    fields given: the auth family did not run."""

    name = "authenticate"
    family = "authenticate"
    symbols = {"SPAMMY": SymbolSpec(12.0, "test symbol", Category.SPAM, "authenticate")}

    def __init__(self, auth, spammy=False):
        self.auth, self.spammy = auth, spammy

    async def run(self, msg, result):
        if self.auth:
            result.facts.auth = AuthFacts(source="gateway", **self.auth)
        if self.spammy:
            result.add("SPAMMY", reason="test")


async def _scan(
    policy,
    raw,
    auth=None,
    spammy=False,
    mail_from="alice@sender.test",
    rcpts=("bob@example.test",),
    client_ip="192.0.2.10",
):
    config = make_config(policy=policy)
    checks = [_Authenticate(auth or {}, spammy), *build(BuildContext(config))]
    pipeline = Pipeline(checks)
    env = Envelope(mail_from=mail_from, rcpt_tos=tuple(rcpts), client_ip=client_ip)
    msg = parse_message(raw, env)
    result = await pipeline.scan(msg)
    return result, {r: decide(result, config.policy, r) for r in rcpts}


@pytest.mark.parametrize("policy,kw,from_,auth,expected,action", CASES)
async def test_list_cases(policy, kw, from_, auth, expected, action):
    raw = make_email(sender=from_) if from_ else make_email()
    result, verdicts = await _scan(policy, raw, auth, **kw)
    assert {s.name for s in result.symbols} == expected
    assert verdicts["bob@example.test"].action is action
    for s in result.symbols:
        assert s.reason and ("matches" in s.reason or " is in " in s.reason)


async def test_allow_lowers_score_but_never_outvotes_a_forced_verdict():
    from mailmoat.scan.gtube import GTUBE

    out = await scan_bytes(
        make_email(body=GTUBE.decode()), make_config(policy={"allow_senders": ["@sender.test"]})
    )
    assert {"GTUBE", "POLICY_ALLOW_SENDER"} <= symbol_names(out)
    assert out.verdict.action is Action.REJECT


async def test_allow_outweighs_spammy_score():
    result, verdicts = await _scan({"allow_senders": ["@sender.test"]}, make_email(), spammy=True)
    assert result.score == -8.0
    assert verdicts["bob@example.test"].action is Action.ACCEPT


async def test_block_reason_names_the_entry():
    out = await scan_bytes(make_email(), make_config(policy={"block_senders": ["*.sender.test"]}))
    sym = out.result.get("POLICY_BLOCK_SENDER")
    assert (
        sym.reason
        == "envelope sender alice@sender.test matches block_senders entry '*.sender.test'"
    )
    assert out.verdict.category is Category.POLICY and "blocked by policy" in out.verdict.reason


async def test_per_recipient_override_allows_a_globally_blocked_sender():
    policy = {
        "block_senders": ["@sender.test"],
        "recipients": {"ceo@example.test": {"allow_senders": ["alice@sender.test"]}},
    }
    result, v = await _scan(policy, make_email(), rcpts=("ceo@example.test", "bob@example.test"))
    assert v["ceo@example.test"].action is Action.ACCEPT
    assert v["bob@example.test"].action is Action.REJECT
    allow = result.get("POLICY_ALLOW_SENDER")
    assert (
        allow.options == ("rcpt=ceo@example.test",) and "recipient ceo@example.test" in allow.reason
    )
    assert result.get("POLICY_BLOCK_SENDER").options == ("rcpt=bob@example.test",)


async def test_per_domain_override_blocks_for_that_domain_only():
    policy = {
        "domains": {"Example.Test": {"block_ips": ["192.0.2.0/24"], "block_action": "quarantine"}}
    }
    result, v = await _scan(policy, make_email(), rcpts=("bob@example.test", "carol@other.test"))
    assert v["bob@example.test"].action is Action.QUARANTINE
    assert v["carol@other.test"].action is Action.ACCEPT
    assert v["carol@other.test"].score == 0  # the scoped block symbol does not count for carol
    assert "domain Example.Test" in result.get("POLICY_BLOCK_IP").reason


async def test_same_outcome_for_every_recipient_is_message_wide():
    policy = {
        "block_senders": ["@sender.test"],
        "domains": {"example.test": {"allow_ips": ["203.0.113.0/24"]}},
    }
    result, v = await _scan(policy, make_email(), rcpts=("a@example.test", "b@example.test"))
    assert result.forced is not None and result.forced[0] is Action.REJECT
    assert result.get("POLICY_BLOCK_SENDER").options == ()
    assert {r: x.action for r, x in v.items()} == {
        "a@example.test": Action.REJECT,
        "b@example.test": Action.REJECT,
    }


async def test_lists_run_through_the_registry():
    out = await scan_bytes(make_email(), make_config(policy={"block_ips": ["192.0.2.10"]}))
    assert out.verdict.action is Action.REJECT and "POLICY_BLOCK_IP" in symbol_names(out)


async def test_offline_without_recipients_uses_global_lists():
    out = await scan_bytes(
        make_email(), make_config(policy={"block_senders": ["@sender.test"]}), rcpts=()
    )
    assert out.verdict.action is Action.REJECT


def test_lists_check_runs_after_auth_stage():
    assert ListsCheck.stage > Check.stage


def test_scoped_symbols_only_count_for_their_recipient():
    specs = {
        "A": SymbolSpec(5.0, "a", Category.SPAM, "t"),
        "B": SymbolSpec(1.0, "b", Category.SPAM, "t"),
    }
    r = ScanResult(specs=specs)
    r.add("A", reason="x", options=("rcpt=x@example.test",))
    r.add("B", reason="y")
    from mailmoat.config import PolicySettings

    p = PolicySettings()
    assert decide(r, p, "x@example.test").score == 6.0
    assert decide(r, p, "y@example.test").score == 1.0
