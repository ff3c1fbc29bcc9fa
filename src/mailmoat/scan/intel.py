"""Check family `intel`: new mail carrying a live threat-intelligence indicator.

The indicators of the `[[intel.feeds]]` (mailmoat.intel) are held in memory
(`intel.live.LiveIndicators`, reloaded from the database in a thread every `[intel]
refresh_interval` seconds when something changed), so a message costs a few dict look-ups.
The message's facts are computed exactly as the delivery index computes them
(`recall.index.observables`: URLs, link hosts and their parent domains, sender and Reply-To
addresses, client IP, attachment SHA-256s, subject, Message-ID), so what blocks new mail is
what a retro-hunt finds in delivered mail.

One symbol per kind of fact, for the strongest indicator of that kind; its score is the
symbol's weight times the indicator's confidence / 100, so a confident indicator
quarantines or rejects on its own and a weak one only adds to the score.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailmoat.intel.live import LiveIndicator, LiveIndicators
from mailmoat.intel.settings import intel_settings
from mailmoat.message.model import ParsedMessage
from mailmoat.recall.index import observables
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec

__all__ = ["IntelCheck", "build", "message_facts"]

log = logging.getLogger(__name__)
_G = "intel"

SYMBOLS: dict[str, SymbolSpec] = {
    "INTEL_URL": SymbolSpec(20.0, "A link in the message is listed by a threat-intelligence "
                            "feed (score: weight x confidence / 100).", Category.PHISHING, _G),
    "INTEL_DOMAIN": SymbolSpec(20.0, "A link host, or the sender's or Reply-To domain, is or "
                               "lies under a domain listed by a threat-intelligence feed.",
                               Category.PHISHING, _G),
    "INTEL_IP": SymbolSpec(15.0, "The connecting client's IP, or an IP a link points to, is "
                           "listed by a threat-intelligence feed.", Category.PHISHING, _G),
    "INTEL_EMAIL": SymbolSpec(15.0, "The envelope sender, From or Reply-To address is listed "
                              "by a threat-intelligence feed.", Category.PHISHING, _G),
    "INTEL_HASH": SymbolSpec(20.0, "An attachment (or a file inside one) has a SHA-256 listed "
                             "by a threat-intelligence feed.", Category.MALWARE, _G),
    "INTEL_SUBJECT": SymbolSpec(6.0, "The subject is one a threat-intelligence feed lists for a "
                                "campaign (weak alone: subjects repeat).", Category.PHISHING,
                                _G),
    "INTEL_MESSAGE_ID": SymbolSpec(20.0, "The Message-ID is one a threat-intelligence feed "
                                   "lists (the same message sent again).", Category.PHISHING,
                                   _G),
}
_SYMBOL_OF = {"url": "INTEL_URL", "domain": "INTEL_DOMAIN", "ip": "INTEL_IP",
              "email": "INTEL_EMAIL", "sha256": "INTEL_HASH", "subject": "INTEL_SUBJECT",
              "message_id": "INTEL_MESSAGE_ID"}
_WHAT = {"url": "link", "domain": "domain", "ip": "IP", "email": "address",
         "sha256": "attachment SHA-256", "subject": "subject", "message_id": "Message-ID"}


def message_facts(msg: ParsedMessage, result: ScanResult | None = None) -> set[tuple[str, str]]:
    """The (kind, value) facts of a message, as the delivery index holds them."""
    walked = result.facts.attachments if result is not None else None
    hashes = [{"sha256": h.sha256} for h in walked] if walked else \
        [{"sha256": a.sha256} for a in msg.attachments]
    fa = msg.from_addr
    data = {
        "urls": [u.url for u in msg.urls],
        "url_domains": [u.host for u in msg.urls if u.host],
        "mail_from": msg.envelope.mail_from, "from_header": fa.address if fa else "",
        "headers": {"Reply-To": msg.header("Reply-To") or ""},
        "client_ip": msg.envelope.client_ip or "", "attachments": hashes,
        "subject": msg.subject, "message_id": msg.message_id,
    }
    return set(observables(data))


class IntelCheck(Check):
    name = "intel"
    family = "intel"
    symbols = SYMBOLS
    stage = 1  # after the attachments family (stage 0) listed every file's SHA-256

    def __init__(self, live: LiveIndicators, refresh_interval: float) -> None:
        self.live = live
        self.refresh_interval = refresh_interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop(),
                                                                name="intel-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await asyncio.to_thread(self.live.refresh)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: keep the set in memory, try again
                log.warning("intel: live indicators not reloaded", exc_info=True)

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        self.start()
        if not len(self.live):
            return
        hits = self.live.match(message_facts(msg, result))
        best: dict[str, list[LiveIndicator]] = {}
        for h in hits:  # strongest first
            best.setdefault(h.kind, []).append(h)
        for kind, found in best.items():
            top = found[0]
            more = f"; {len(found) - 1} more indicator(s)" if len(found) > 1 else ""
            value = top.value if kind != "message_id" else f"<{top.value}>"
            result.add(_SYMBOL_OF[kind],
                       reason=f"{_WHAT[kind]} {value[:200]} is listed by feed {top.feed} "
                              f"(indicator {top.source_id}, confidence {top.confidence}){more}",
                       factor=top.confidence / 100.0,
                       options=(f"feed={top.feed}", f"indicator={top.source_id}"))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def build(ctx: BuildContext) -> list[Check]:
    settings = intel_settings(ctx.config)
    if (ctx.database is None or not settings.enabled or not settings.block
            or not settings.feeds or ctx.disabled("intel")):
        return []
    live = LiveIndicators(ctx.database)
    try:
        live.refresh(force=True)
    except Exception:  # no table yet, or the database is away: the refresh loop catches up
        log.warning("intel: live indicators not loaded at start", exc_info=True)
    return [IntelCheck(live, settings.refresh_interval)]
