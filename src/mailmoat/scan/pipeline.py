"""The scan pipeline: ordered stages of checks, concurrent within a stage, each on a budget.

A check that raises or runs out of time never breaks the scan: it yields `<FAMILY>_FAIL`
with the reason, and the message goes on to policy with what the other checks found.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from mailmoat.message.model import Envelope, ParsedMessage
from mailmoat.scan.base import Category, Check, ScanResult, SymbolSpec

log = logging.getLogger(__name__)


def fail_symbol(family: str) -> str:
    return f"{family.upper()}_FAIL"


class Pipeline:
    def __init__(self, checks: Sequence[Check], weight_overrides: dict[str, float] | None = None,
                 default_timeout: float = 10.0):
        names = [c.name for c in checks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate check names: {sorted(dupes)}")
        self.checks = list(checks)
        self.weight_overrides = dict(weight_overrides or {})
        # `[scan] check_timeout`: the budget of every check that does not set its own.
        self.default_timeout = default_timeout
        specs: dict[str, SymbolSpec] = {}
        for check in self.checks:
            for sym, spec in check.symbols.items():
                if sym in specs and specs[sym] != spec:
                    raise ValueError(f"symbol {sym} declared twice with different specs")
                specs[sym] = spec
            fam = check.family or check.name
            specs.setdefault(fail_symbol(fam), SymbolSpec(
                0.0, f"The {fam} check failed or timed out; its verdict is missing.",
                Category.POLICY, fam))
        self.specs = specs
        self.stages = sorted({c.stage for c in self.checks})

    def start_early(self, raw: bytes, envelope: Envelope) -> dict[str, asyncio.Future[Any]]:
        """Each check's pre-parse work (Check.start_early), by check name."""
        early: dict[str, asyncio.Future[Any]] = {}
        for check in self.checks:
            try:
                fut = check.start_early(raw, envelope)
            except Exception:  # run() still does the work the slow way
                log.exception("starting check %s early", check.name)
                continue
            if fut is not None:
                # An early start whose run() never collects it must not warn about an
                # exception nobody retrieved.
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())
                early[check.name] = fut
        return early

    async def scan(self, msg: ParsedMessage,
                   early: dict[str, asyncio.Future[Any]] | None = None) -> ScanResult:
        result = ScanResult(specs=self.specs, weight_overrides=self.weight_overrides,
                            early=dict(early or {}))
        try:
            for stage in self.stages:
                batch = [c for c in self.checks if c.stage == stage]
                await asyncio.gather(*(self._run_one(c, msg, result) for c in batch))
        finally:
            for fut in result.early.values():  # not collected: its check returned first
                fut.cancel()
            result.early.clear()
        return result

    async def _run_one(self, check: Check, msg: ParsedMessage, result: ScanResult) -> None:
        started = time.perf_counter()
        timeout = self.timeout_of(check)
        try:
            await asyncio.wait_for(check.run(msg, result), timeout=timeout)
        except asyncio.TimeoutError:
            result.add(fail_symbol(check.family or check.name),
                       reason=f"check {check.name} did not finish within {timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken check must never lose or block mail
            log.exception("check %s failed", check.name)
            result.add(fail_symbol(check.family or check.name),
                       reason=f"check {check.name} failed: {type(exc).__name__}: {exc}"[:300])
        finally:
            result.timings[check.name] = time.perf_counter() - started

    def timeout_of(self, check: Check) -> float:
        """Seconds `check` may run: its own timeout, else `[scan] check_timeout`."""
        return check.timeout if check.timeout is not None else self.default_timeout

    async def close(self) -> None:
        for check in self.checks:
            try:
                await check.close()
            except Exception:
                log.exception("closing check %s", check.name)
