"""STARTTLS edge cases (issue 21, item 8): a second STARTTLS inside TLS is refused, and a
failed handshake is one log line with the client and the reason, not a traceback."""

from __future__ import annotations

import asyncio
import logging

import aiosmtplib

from mailmoat.smtp.tls import handshake_failure
from tests.smtp.helpers import gateway_config, running_gateway, wait_until


async def test_second_starttls_is_refused(tmp_path, sink):
    cfg = gateway_config(tmp_path, sink.port)
    async with running_gateway(cfg) as gw:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False, timeout=10)
        await c.connect()
        await c.ehlo()
        await c.starttls(validate_certs=False)
        await c.ehlo()
        assert not c.supports_extension("starttls")
        reply = await c.execute_command(b"STARTTLS")
        assert reply.code == 503 and "TLS already active" in reply.message
        # The session goes on, still encrypted.
        assert (await c.noop()).code == 250
        await c.quit()


async def test_failed_handshake_is_one_log_line(tmp_path, sink, caplog):
    cfg = gateway_config(tmp_path, sink.port)
    caplog.set_level(logging.INFO)
    async with running_gateway(cfg) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await reader.readline()  # banner
        writer.write(b"EHLO scanner.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"STARTTLS\r\n")
        assert (await reader.readline()).startswith(b"220")
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")  # not a TLS ClientHello
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # we hang up
        writer.close()

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "handshake" in r.getMessage()]

        await wait_until(lambda: bool(logged()), what="the handshake failure logged")
    [rec] = logged()
    assert rec.levelno == logging.WARNING and rec.exc_info is None
    text = rec.getMessage()
    assert "127.0.0.1" in text and "\n" not in text, text
    assert "WRONG_VERSION_NUMBER" in text or "HTTP_REQUEST" in text, text
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a failed handshake"


def test_handshake_failure_reason_is_short():
    import ssl

    from aiosmtpd.smtp import TLSSetupException

    err = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)")
    err.reason = "WRONG_VERSION_NUMBER"
    try:
        try:
            raise err
        except ssl.SSLError as inner:
            raise TLSSetupException() from inner
    except TLSSetupException as outer:
        assert handshake_failure(outer) == "WRONG_VERSION_NUMBER"
    assert handshake_failure(TLSSetupException()) == "TLSSetupException"
