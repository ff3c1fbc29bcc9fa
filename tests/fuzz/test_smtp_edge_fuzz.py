"""Fuzzing the SMTP edge (issue 21) over a real socket: random HELO/EHLO, MAIL FROM and
RCPT TO arguments (control characters, NULs, invalid UTF-8, lone surrogates, odd unicode,
long strings, random ESMTP parameters) always get a well-formed reply — 2xx, 4xx or 5xx,
never a dropped connection, never aiosmtpd's `500 Error: (SomeException)` and no error
logged — and the gateway still answers NOOP afterwards.

One gateway on loopback for the module (tests/smtp/helpers.py), driven from a loop of our
own so hypothesis can run the examples synchronously. Bounded and reproducible for CI:
fixed max_examples, a deadline, derandomize=True."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.smtp.helpers import Sink, gateway_config, port_of, running_gateway, start_sink

pytestmark = pytest.mark.slow

REPLY_LINE = re.compile(rb"^[245]\d\d([ -]).*\r\n\Z", re.S)
GOOD_HELO = b"client.sender.test"
GOOD_FROM = b"<alice@sender.test>"
GOOD_RCPT = b"<bob@example.test>"

# Argument bytes: never CR or LF (they would end the command line and start another).
_odd_chars = st.characters(codec=None, exclude_characters="\r\n",
                           categories=["Cc", "Cf", "Cs", "Co", "Zs", "Zl", "Zp", "Mn", "So", "Lo",
                                       "Ll", "Lu", "Nd", "Po", "Sm"])
_piece = st.one_of(
    st.text(_odd_chars, max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\x00", b"\x01", b"\x7f", b"\x1b[2J", b"\xff", b"\xc3", b"\xed\xa0\x80",
                     b"\xe2\x80\xae", b"<", b">", b"<>", b"@", b"@@", b"\"", b"\\", b"[", b"]",
                     b"[IPv6:", b":", b" ", b"\t", b"=", b"SIZE=", b"BODY=8BITMIME", b"SMTPUTF8",
                     b"AUTH=<>", b"%", b".", b"..", b"xn--", b"postmaster", b"example.test"]),
    # Lengths at the limits: local part 64, label 63, domain 255, the command line.
    st.sampled_from([64, 65, 63, 255, 256, 600, 3000]).map(lambda n: b"x" * n))
arg = st.lists(_piece, max_size=8).map(b"".join).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@dataclass
class Dialogue:
    greeting: bytes  # EHLO or HELO
    helo: bytes
    mail: bytes
    rcpt: bytes


dialogues = st.builds(
    Dialogue,
    greeting=st.sampled_from([b"EHLO", b"HELO", b"ehlo", b"Helo"]),
    # Half the time a valid greeting / sender, so the fuzzed later commands reach their checks.
    helo=st.one_of(st.just(GOOD_HELO), arg),
    mail=st.one_of(st.just(GOOD_FROM), arg.map(lambda a: b"<" + a + b">"), arg,
                   st.tuples(arg, arg).map(lambda t: b"<" + t[0] + b"> " + t[1])),
    rcpt=st.one_of(arg.map(lambda a: b"<" + a + b">"), arg,
                   st.tuples(arg, arg).map(lambda t: b"<" + t[0] + b"@example.test> " + t[1])),
)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


@dataclass
class Edge:
    loop: asyncio.AbstractEventLoop
    port: int
    errors: _Errors


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    loop = asyncio.new_event_loop()
    errors = _Errors()
    loggers = [logging.getLogger("mailmoat"), logging.getLogger("mail.log")]
    for lg in loggers:
        lg.addHandler(errors)
    sink_server = loop.run_until_complete(start_sink(Sink()))
    cfg = gateway_config(tmp_path_factory.mktemp("smtp-fuzz"), port_of(sink_server),
                         smtp={"max_connections_per_ip": 50},
                         content={"enabled": False}, deep={"mode": "off"})  # starts faster
    gw_cm = running_gateway(cfg)
    gw = loop.run_until_complete(gw_cm.__aenter__())
    try:
        yield Edge(loop, gw.smtp_port, errors)
    finally:
        loop.run_until_complete(gw_cm.__aexit__(None, None, None))
        sink_server.close()
        loop.run_until_complete(sink_server.wait_closed())
        loop.close()
        for lg in loggers:
            lg.removeHandler(errors)


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        c = cls(reader, writer)
        assert (await c.reply()).startswith(b"220"), "no banner"
        return c

    async def reply(self) -> bytes:
        """A whole reply, checked line by line; its last line. EOF is a failure."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            assert line, "the gateway dropped the connection"
            assert REPLY_LINE.match(line), f"malformed reply line {line[:200]!r}"
            if line[3:4] == b" ":
                return line

    async def cmd(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        reply = await self.reply()
        assert not reply.startswith(b"500 Error: ("), f"exception for {line[:200]!r}: {reply!r}"
        return reply

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def converse(port: int, d: Dialogue) -> list[bytes]:
    c = await Conn.open(port)
    replies = []
    try:
        for line in (d.greeting + b" " + d.helo, b"MAIL FROM:" + d.mail, b"RCPT TO:" + d.rcpt,
                     b"RCPT TO:" + GOOD_RCPT, b"RSET"):
            reply = await c.cmd(line)
            replies.append(reply)
            if reply.startswith(b"421"):  # the gateway hung up on purpose: a fresh connection
                await c.close()
                c = await Conn.open(port)
        assert (await c.cmd(b"NOOP")).startswith(b"250")
        assert (await c.cmd(b"QUIT")).startswith(b"221")
    finally:
        await c.close()
    return replies


FUZZ = settings(max_examples=300, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(d=dialogues)
@example(d=Dialogue(b"EHLO", b"bad\x00host", b"<ev\x00il@sender.test>", b"<bo\x01b@example.test>"))
@example(d=Dialogue(b"EHLO", GOOD_HELO, b"<" + b"l" * 3000 + b"@sender.test>", b"<\xed\xa0\x80@x>"))
@example(d=Dialogue(b"HELO", b"\xff\xfe", b"<a@sender.test> SIZE=\x00 BODY=\xff", b"<> NOTIFY=\x7f"))
@example(d=Dialogue(b"EHLO", GOOD_HELO, GOOD_FROM, b"<\"\\\x00\"@[IPv6:::\x01]>"))
def test_smtp_edge_always_answers_well_formed(d: Dialogue, edge: Edge) -> None:
    edge.errors.records.clear()
    replies = edge.loop.run_until_complete(converse(edge.port, d))
    assert all(r[:1] in b"245" for r in replies), replies
    assert edge.errors.records == [], edge.errors.records


@pytest.mark.parametrize("command", [b'MAIL FROM:"', b"MAIL FROM:<", b'MAIL FROM: "'])
def test_lone_quote_or_bracket_address(command: bytes, edge: Edge) -> None:
    """Found by the fuzzer: the stdlib address parser raised IndexError on a lone `"` or
    `<`, which aiosmtpd answered `500 Error: (IndexError)` with a logged traceback."""
    async def go() -> bytes:
        c = await Conn.open(edge.port)
        try:
            assert (await c.cmd(b"EHLO " + GOOD_HELO)).startswith(b"250")
            return await c.cmd(command)  # asserts: not `500 Error: (...)`
        finally:
            await c.close()

    edge.errors.records.clear()
    reply = edge.loop.run_until_complete(go())
    assert reply.startswith((b"501", b"553")), reply  # a syntax or address refusal
    assert edge.errors.records == [], edge.errors.records
