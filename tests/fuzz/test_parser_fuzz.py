"""Fuzzing the parser and the whole scan (issue 21): for arbitrary bytes and for hostile MIME
built by strategies (tests/fuzz/strategies.py), `parse_message` never raises and always
returns a ParsedMessage, and `Scanner.scan` (content and deep models off, no network) never
raises — and neither swallows a bug: no error is logged (parse_message's last-resort
`except` logs "could not build the message model"; a check that raises logs "check X failed"
and adds X_FAIL).

Bounded and reproducible for CI: fixed max_examples, a deadline, derandomize=True."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings

from mailmoat.message.model import Envelope, ParsedMessage
from mailmoat.message.parse import parse_message
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner
from tests.conftest import make_config
from tests.fuzz.strategies import any_bytes, hostile_message

FUZZ = settings(max_examples=300, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCAN_FUZZ = settings(FUZZ, max_examples=120)

ENVELOPE = Envelope(mail_from="alice@sender.test", rcpt_tos=("bob@example.test",),
                    client_ip="192.0.2.10", helo="mail.sender.test")


class _Errors(logging.Handler):
    """Collects ERROR records from mailmoat's loggers while a test runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        out = [f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[1]!r})" if r.exc_info else "")
               for r in self.records]
        self.records.clear()
        return out


@pytest.fixture(scope="module")
def errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("mailmoat")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def check_parse(raw: bytes, errors: _Errors) -> None:
    msg = parse_message(raw, ENVELOPE)
    assert isinstance(msg, ParsedMessage)
    assert msg.raw == raw
    assert isinstance(msg.text, str) and isinstance(msg.html, str) and isinstance(msg.subject, str)
    assert errors.take() == [], raw[:300]


@FUZZ
@given(raw=any_bytes)
@example(raw=b"")
@example(raw=b"\x00" * 100)
@example(raw=b"\r\n\r\n")
@example(raw=b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n")
@example(raw=b"Subject: =?utf-8?B?////?=\r\n=?x?Q?=ZZ?=\r\n\r\n")
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes, errors: _Errors) -> None:
    check_parse(raw, errors)


@FUZZ
@given(raw=hostile_message)
# Found by this target: a charset with a NUL in its name (codecs.lookup raises ValueError,
# not LookupError), and 8-bit text declared in a codec that cannot decode with 'replace'
# (idna: the stdlib's Message.get_payload raises UnicodeError). Both lost the whole model.
@example(raw=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\x00\r\n\r\nhi\r\n")
@example(raw=b"Content-Type: text/plain; charset=idna\r\nSubject: x\r\n\r\nhello \xe9\xff\r\n")
@example(raw=b"Content-Type: text/html; charset=\"utf-7\x00\"\r\n\r\n<p>+AGEAYgBj-</p>\r\n")
def test_parse_never_raises_on_hostile_mime(raw: bytes, errors: _Errors) -> None:
    check_parse(raw, errors)


@pytest.fixture(scope="module")
def scanner() -> Iterator[tuple[Scanner, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    scanner = Scanner(BuildContext(config=make_config(), network=False, extras={}))
    try:
        yield scanner, loop
    finally:
        loop.run_until_complete(scanner.close())
        loop.close()


def check_scan(raw: bytes, scanner: tuple[Scanner, asyncio.AbstractEventLoop], errors: _Errors) -> None:
    s, loop = scanner
    outcome = loop.run_until_complete(s.scan(raw, ENVELOPE))
    failed = [sym.name for sym in outcome.result.symbols if sym.name.endswith("_FAIL")]
    assert failed == [], (failed, raw[:300])
    assert errors.take() == [], raw[:300]
    assert outcome.verdict is not None and set(outcome.per_recipient) == {"bob@example.test"}


@SCAN_FUZZ
@given(raw=any_bytes)
def test_scan_never_raises_on_arbitrary_bytes(raw: bytes, scanner, errors: _Errors) -> None:
    check_scan(raw, scanner, errors)


@SCAN_FUZZ
@given(raw=hostile_message)
def test_scan_never_raises_on_hostile_mime(raw: bytes, scanner, errors: _Errors) -> None:
    check_scan(raw, scanner, errors)
