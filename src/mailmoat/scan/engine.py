"""The scanner: bytes + envelope → parsed message → symbols → per-recipient verdicts.

One object shared by the SMTP intake, the offline `mailmoat scan`, `mailmoat evaluate` and
the benchmarks, so all of them judge mail exactly the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mailmoat.config import Config
from mailmoat.message.model import Envelope, ParsedMessage
from mailmoat.message.parse import parse_message
from mailmoat.policy.decide import Verdict, decide, strictest
from mailmoat.scan.base import BuildContext, ScanResult
from mailmoat.scan.pipeline import Pipeline
from mailmoat.scan.registry import build_pipeline


@dataclass
class ScanOutcome:
    message: ParsedMessage
    result: ScanResult
    verdict: Verdict  # the strictest over all recipients
    per_recipient: dict[str, Verdict]
    elapsed: float  # seconds, parse + scan

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "action": self.verdict.action.value,
            "score": self.verdict.score,
            "category": self.verdict.category.value,
            "reason": self.verdict.reason,
            "symbols": [{"name": s.name, "score": s.score, "reason": s.reason}
                        for s in sorted(self.result.symbols, key=lambda s: -abs(s.score))],
        }
        if self.verdict.bulk_level is not None:
            out["bulk_level"] = self.verdict.bulk_level
        return out


class Scanner:
    def __init__(self, ctx: BuildContext, pipeline: Pipeline | None = None) -> None:
        self.ctx = ctx
        self.config: Config = ctx.config
        self.pipeline = pipeline or build_pipeline(ctx)

    async def scan(self, raw: bytes, envelope: Envelope | None = None) -> ScanOutcome:
        started = time.perf_counter()
        envelope = envelope or Envelope(mail_from="", rcpt_tos=())
        early = self.pipeline.start_early(raw, envelope)
        limits = {"max_depth": self.config.scan.max_parse_depth,
                  "max_parts": self.config.scan.max_parts}
        try:
            if early:
                # In a thread, so the event loop goes on sending the early look-ups and
                # streaming to clamd while the (CPU-bound) parse runs.
                msg = await asyncio.to_thread(parse_message, raw, envelope, **limits)
            else:
                msg = parse_message(raw, envelope, **limits)
        except BaseException:
            for fut in early.values():
                fut.cancel()
            raise
        result = await self.pipeline.scan(msg, early)
        policy = self.config.policy
        per = {r: decide(result, policy, r, envelope.direction) for r in envelope.rcpt_tos}
        verdict = strictest(list(per.values())) if per else decide(result, policy, None, envelope.direction)
        return ScanOutcome(message=msg, result=result, verdict=verdict, per_recipient=per,
                           elapsed=time.perf_counter() - started)

    async def close(self) -> None:
        await self.pipeline.close()
