from __future__ import annotations

import asyncio

from mailmoat.message.parse import parse_message
from mailmoat.scan.base import Action, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.pipeline import Pipeline
from mailmoat.scan.gtube import GTUBE
from tests.conftest import make_email, scan_bytes, symbol_names


class _Slow(Check):
    name = "slow"
    family = "slowfam"
    symbols = {"SLOW_HIT": SymbolSpec(1.0, "never reached", Category.SPAM, "slowfam")}
    timeout = 0.05

    async def run(self, msg, result):
        await asyncio.sleep(1)


class _Broken(Check):
    name = "broken"
    family = "brokenfam"
    symbols = {}

    async def run(self, msg, result):
        raise RuntimeError("boom")


class _Undeclared(Check):
    name = "undeclared"
    family = "undecl"
    symbols = {}

    async def run(self, msg, result):
        result.add("NOT_DECLARED", reason="x")


async def test_failing_and_slow_checks_become_fail_symbols():
    p = Pipeline([_Slow(), _Broken(), _Undeclared()])
    r = await p.scan(parse_message(make_email()))
    names = {s.name for s in r.symbols}
    assert names == {"SLOWFAM_FAIL", "BROKENFAM_FAIL", "UNDECL_FAIL"}
    assert "boom" in r.get("BROKENFAM_FAIL").reason


async def test_gtube_forces_reject():
    out = await scan_bytes(make_email(body="test " + GTUBE.decode()))
    assert "GTUBE" in symbol_names(out)
    assert out.verdict.action is Action.REJECT
    assert out.verdict.category is Category.SPAM


async def test_clean_mail_is_accepted():
    out = await scan_bytes(make_email())
    assert out.verdict.action is Action.ACCEPT and out.verdict.category is Category.CLEAN


async def test_unparseable_mail_is_quarantined_by_default():
    # A message whose parse fails completely is simulated through the defect.
    class _Unparseable(Check):
        name = "force_unparseable"
        family = "t"
        symbols = {}

        async def run(self, msg, result: ScanResult):
            pass

    from mailmoat.scan.malformed import MalformedCheck
    from dataclasses import replace

    msg = replace(parse_message(make_email()), defects=("MIME_UNPARSEABLE",))
    r = await Pipeline([MalformedCheck("quarantine")]).scan(msg)
    assert r.forced and r.forced[0] is Action.QUARANTINE
