"""mailmoat in front of a real Postfix: mail lands in the Maildir with our headers."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import make_email
from tests.e2e.postfix import PrivatePostfix, header, postfix_available
from tests.smtp.helpers import gateway_config, running_gateway

pytestmark = [pytest.mark.postfix, pytest.mark.slow]


@pytest.fixture
def postfix():
    why = postfix_available()
    if why:
        pytest.skip(why)
    # Not under pytest's tmp dir: that is private to root, and Postfix's daemons run as
    # the postfix user.
    root = Path(tempfile.mkdtemp(prefix="mailmoat-postfix-"))
    pf = PrivatePostfix(root)
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_relay_into_postfix_maildir(tmp_path, postfix):
    cfg = gateway_config(tmp_path, postfix.port)
    async with running_gateway(cfg) as gw:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False, timeout=10)
        await c.connect()
        _, reply = await c.sendmail("alice@sender.test", ["bob@example.test"],
                                    make_email(subject="Through Postfix",
                                               headers={"X-Mailmoat-ID": "forged"}))
        await c.quit()
        mid = reply.rsplit(" ", 1)[1]
        deadline = time.monotonic() + 30
        while not postfix.delivered() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    got = postfix.delivered()
    assert len(got) == 1, postfix.log()[-3000:]
    raw = got[0]
    assert header(raw, "X-Mailmoat-ID") == mid
    assert raw.count(b"X-Mailmoat-ID:") == 1
    assert header(raw, "X-Mailmoat-Verdict").startswith("action=accept")
    assert header(raw, "Subject") == "Through Postfix"
    assert b"mx.gateway.test (mailmoat)" in raw  # our Received header, under Postfix's
