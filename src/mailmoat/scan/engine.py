"""The scanner: bytes + envelope → parsed message → symbols → per-recipient verdicts.

One object shared by the SMTP intake, the offline `mailmoat scan`, `mailmoat evaluate` and
the benchmarks, so all of them judge mail exactly the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass

from mailmoat.config import Config
from mailmoat.message.model import Envelope, ParsedMessage
from mailmoat.message.parse import parse_message, unparsed_message
from mailmoat.policy.decide import Verdict, decide, strictest
from mailmoat.scan.base import BuildContext, ScanResult
from mailmoat.scan.pipeline import Pipeline
from mailmoat.scan.registry import build_pipeline

log = logging.getLogger(__name__)

# Messages up to this size parse inline: a few milliseconds within the HTML budget, less
# than handing them to a thread costs. Larger ones parse in a worker thread, so the event
# loop (other SMTP clients, /healthz) is served meanwhile and the parse has a time budget.
INLINE_PARSE_MAX = 64 * 1024
# Parse threads of their own: a parse past its budget cannot be stopped, only abandoned,
# and abandoned ones must not take the threads that delivery and the web console use.
PARSE_THREADS = 8


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
        self._parse_pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def scan(self, raw: bytes, envelope: Envelope | None = None) -> ScanOutcome:
        started = time.perf_counter()
        envelope = envelope or Envelope(mail_from="", rcpt_tos=())
        early = self.pipeline.start_early(raw, envelope)
        try:
            # In a thread when early work is in flight (the event loop goes on sending the
            # early look-ups and streaming to clamd while the CPU-bound parse runs) or when
            # the message is large.
            if early or len(raw) > INLINE_PARSE_MAX:
                msg = await self._parse_in_thread(raw, envelope)
            else:
                msg = parse_message(raw, envelope, **self._limits())
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

    def _limits(self) -> dict[str, int]:
        scan = self.config.scan
        return {"max_depth": scan.max_parse_depth, "max_parts": scan.max_parts,
                "max_html_depth": scan.max_html_depth, "max_html_tags": scan.max_html_tags}

    async def _parse_in_thread(self, raw: bytes, envelope: Envelope) -> ParsedMessage:
        """Parse in a worker thread within [scan] parse_timeout. Past it the message is not
        lost: it is judged unparsed (PARSE_TIMEOUT, MIME_UNPARSEABLE: quarantined by the
        malformed check) and the thread is left to finish on its own."""
        if self._parse_pool is None:
            self._parse_pool = concurrent.futures.ThreadPoolExecutor(
                PARSE_THREADS, thread_name_prefix="mailmoat-parse")
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._parse_pool, lambda: parse_message(
            raw, envelope, **self._limits()))
        timeout = self.config.scan.parse_timeout
        try:
            return await asyncio.wait_for(job, timeout)
        except TimeoutError:
            log.warning("parse of a %d-byte message from %s took over %.0f s; judged unparsed",
                        len(raw), envelope.client_ip or "-", timeout)
            return unparsed_message(raw, envelope, ["PARSE_TIMEOUT"])

    async def close(self) -> None:
        await self.pipeline.close()
        if self._parse_pool is not None:
            self._parse_pool.shutdown(wait=False, cancel_futures=True)
            self._parse_pool = None
