"""The intel check on the real scan path: new mail carrying a live indicator gets an INTEL_*
symbol naming the feed and the indicator, scored by confidence; mail without one, or with a
withdrawn one, gets nothing."""

from __future__ import annotations

import hashlib
import time

from mailmoat.intel.poller import poll_feed
from mailmoat.intel.settings import intel_settings
from mailmoat.message.model import Envelope
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner
from mailmoat.scan.intel import message_facts
from tests.conftest import make_email

PAYLOAD = b"%PDF-1.4 pretend invoice " * 50
SHA = hashlib.sha256(PAYLOAD).hexdigest()


async def _scan(scanner: Scanner, raw: bytes):
    env = Envelope(mail_from="x@sender.test", rcpt_tos=("ann@example.test",),
                   client_ip="192.0.2.10")
    return await scanner.scan(raw, env)


async def test_live_indicators_block_new_mail_on_the_real_scan_path(db, tmp_path, recorder):
    from tests.intel.conftest import intel_config

    listing = tmp_path / "iocs.txt"
    listing.write_text(f"https://lure.example/login\n{SHA}\nweak-signal.example\n")
    config = intel_config(tmp_path, db,
                          {"name": "own-list", "kind": "list", "path": str(listing),
                           "confidence": 95},
                          {"name": "weak", "kind": "list", "path": str(tmp_path / "weak.txt"),
                           "confidence": 30})
    (tmp_path / "weak.txt").write_text("weak-signal.example\n")
    feeds = intel_settings(config).feeds
    for feed in feeds:
        assert poll_feed(config, db, feed, recall=recorder).ok
    scanner = Scanner(BuildContext(config=config, network=False, database=db))
    try:
        out = await _scan(scanner, make_email(body="Sign in at HTTPS://LURE.example/login"))
        sym = out.result.get("INTEL_URL")
        assert sym is not None and sym.score == 19.0  # 20 x 0.95
        assert sym.reason == ("link https://lure.example/login is listed by feed own-list "
                              "(indicator https://lure.example/login, confidence 95)")
        assert out.verdict.action.value == "reject"

        out = await _scan(scanner, make_email(attachments=[
            ("invoice.pdf", "application/pdf", PAYLOAD)]))
        assert out.result.get("INTEL_HASH") is not None
        assert out.verdict.category.value == "malware"

        # the strongest of two feeds listing the same domain names the symbol
        out = await _scan(scanner, make_email(body="http://www.weak-signal.example/a"))
        dom = out.result.get("INTEL_DOMAIN")
        assert dom is not None and "feed own-list" in dom.reason and "1 more" in dom.reason

        clean = await _scan(scanner, make_email(body="https://intranet.example.test/menu"))
        assert not any(s.name.startswith("INTEL_") for s in clean.result.symbols)

        # withdrawn from the list: after the reload, the same mail passes
        listing.write_text("")
        (tmp_path / "weak.txt").write_text("")
        for feed in feeds:
            assert poll_feed(config, db, feed, recall=recorder).ok
        check = next(c for c in scanner.pipeline.checks if c.name == "intel")
        assert check.live.refresh() is True
        out = await _scan(scanner, make_email(body="Sign in at https://lure.example/login"))
        assert out.result.get("INTEL_URL") is None
    finally:
        await scanner.close()


async def test_no_feeds_no_check(db, tmp_path):
    from tests.intel.conftest import intel_config

    scanner = Scanner(BuildContext(config=intel_config(tmp_path, db), network=False,
                                   database=db))
    try:
        assert "intel" not in {c.name for c in scanner.pipeline.checks}
    finally:
        await scanner.close()


async def test_message_facts_cost_little():
    """The check's per-message work: the facts of a message with 100 links."""
    from mailmoat.message.parse import parse_message

    body = "\n".join(f"https://host{i}.sub{i % 7}.example.co.uk/p/{i}" for i in range(100))
    msg = parse_message(make_email(body=body))
    started = time.perf_counter()
    for _ in range(20):
        facts = message_facts(msg)
    per_message = (time.perf_counter() - started) / 20
    assert ("domain", "sub3.example.co.uk") in facts
    assert per_message < 0.05, per_message
