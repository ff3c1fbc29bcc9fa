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


class _Early(Check):
    """Starts its work before the parse and reports what reached run()."""

    name = "early"
    family = "earlyfam"
    symbols = {"EARLY_SEEN": SymbolSpec(0.0, "early result", Category.POLICY, "earlyfam")}

    def __init__(self) -> None:
        self.started_with: bytes | None = None

    def start_early(self, raw, envelope):
        self.started_with = raw

        async def work() -> str:
            return f"{len(raw)} bytes from {envelope.mail_from}"
        return asyncio.ensure_future(work())

    async def run(self, msg, result):
        fut = result.early.pop(self.name, None)
        result.add("EARLY_SEEN", reason=await fut if fut else "no early start")


class _EarlyIgnored(Check):
    """Starts something early that its run() never collects (it returned first)."""

    name = "early_ignored"
    family = "earlyfam2"
    symbols = {}

    def __init__(self) -> None:
        self.fut: asyncio.Future | None = None

    def start_early(self, raw, envelope):
        self.fut = asyncio.ensure_future(asyncio.sleep(30))
        return self.fut

    async def run(self, msg, result):
        return


class _EarlyBroken(Check):
    name = "early_broken"
    family = "earlyfam3"
    symbols = {"EARLY_RAN": SymbolSpec(0.0, "ran", Category.POLICY, "earlyfam3")}

    def start_early(self, raw, envelope):
        raise RuntimeError("cannot start early")

    async def run(self, msg, result):
        result.add("EARLY_RAN", reason="run() did the work itself")


async def test_early_start_reaches_run_and_leftovers_are_cancelled():
    from mailmoat.message.model import Envelope
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.engine import Scanner
    from tests.conftest import make_config

    early, ignored = _Early(), _EarlyIgnored()
    scanner = Scanner(BuildContext(make_config()),
                      pipeline=Pipeline([early, ignored, _EarlyBroken()]))
    raw = make_email()
    out = await scanner.scan(raw, Envelope(mail_from="a@x.test", rcpt_tos=("b@example.test",)))
    assert early.started_with == raw
    assert out.result.get("EARLY_SEEN").reason == f"{len(raw)} bytes from a@x.test"
    # The parse ran (in a thread, since something started early) and the checks saw it.
    assert out.message.subject and out.message.raw == raw
    # run() never collected it: cancelled, not left running after the scan.
    await asyncio.sleep(0)
    assert ignored.fut.cancelled()
    # A check whose early start breaks still runs the ordinary way.
    assert out.result.has("EARLY_RAN") and not out.result.has("EARLYFAM3_FAIL")
    assert out.result.early == {}
