"""Tier 3 against a real HTTP server on loopback that speaks the chat-completions API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import pytest

from mailmoat.message.parse import parse_message
from mailmoat.scan.base import Category, ScanResult, SymbolSpec
from mailmoat.scan.facts import ModelFacts
from mailmoat.scan.llm import (SYMBOLS, LlmCheck, LlmSettings, TokenBucket, parse_answer,
                               redact)
from tests.conftest import make_config, make_email, scan_bytes, symbol_names
from tests.llm.fake_openai import FakeChatServer

BEC_SPEC = {"BEC_PAYMENT_REQUEST": SymbolSpec(3.0, "payment request", Category.BEC, "bec")}


@pytest.fixture
def fake():
    server = FakeChatServer().start()
    yield server
    server.stop()


def settings(fake: FakeChatServer, **kw) -> LlmSettings:
    base = {"enabled": True, "endpoint": fake.url, "timeout": 10.0}
    base.update(kw)
    return LlmSettings(**base)


def uncertain_result(p: float = 0.5) -> ScanResult:
    r = ScanResult(specs={**SYMBOLS, **BEC_SPEC})
    r.facts.content = ModelFacts(p_bad=p, p_spam=p, p_phish=0.0)
    return r


def msg(body: str = "Please review the attached quarterly numbers.", subject: str = "Numbers"):
    return parse_message(make_email(subject=subject, body=body))


async def test_verdict_becomes_symbol_with_reason(fake):
    fake.content = json.dumps({"verdict": "phishing", "confidence": 0.93,
                               "reason": "Asks the reader to re-enter a password on a foreign site."})
    check = LlmCheck(settings(fake))
    result = uncertain_result(0.55)
    await check.run(msg(), result)
    await check.close()
    sym = result.get("LLM_PHISH")
    assert sym is not None and sym.category is Category.PHISHING
    assert sym.score == pytest.approx(4.0 * 0.93)
    assert "re-enter a password" in sym.reason and "0.93" in sym.reason
    assert "ml_spam_probability 0.55" in sym.reason
    body = fake.requests[0].body
    assert body["model"] == "qwen2.5:7b-instruct"
    assert body["response_format"] == {"type": "json_object"}
    assert "Numbers" in body["messages"][1]["content"]


@pytest.mark.parametrize("verdict,symbol", [("spam", "LLM_SPAM"), ("bec", "LLM_BEC"),
                                            ("ham", "LLM_HAM"), ("PHISHING", "LLM_PHISH")])
async def test_each_verdict_maps_to_its_symbol(fake, verdict, symbol):
    fake.content = "```json\n" + json.dumps({"verdict": verdict, "confidence": 0.7,
                                            "reason": "because"}) + "\n```"
    check = LlmCheck(settings(fake))
    result = uncertain_result()
    await check.run(msg(), result)
    await check.close()
    assert [s.name for s in result.symbols] == [symbol]


async def test_not_asked_about_confident_mail(fake):
    check = LlmCheck(settings(fake))
    for p in (0.05, 0.97):
        result = uncertain_result(p)
        await check.run(msg(), result)
        assert result.symbols == []
    # The tier-2 score, when present, is preferred over tier 1's.
    result = uncertain_result(0.5)
    result.facts.deep = ModelFacts(p_bad=0.02, p_spam=0.02, p_phish=0.0)
    await check.run(msg(), result)
    await check.close()
    assert result.symbols == [] and fake.requests == []


async def test_asked_about_bec_suspect_mail_even_when_confident(fake):
    fake.content = json.dumps({"verdict": "bec", "confidence": 0.8, "reason": "CEO wants gift cards"})
    check = LlmCheck(settings(fake))
    result = uncertain_result(0.01)
    result.add("BEC_PAYMENT_REQUEST", reason="asks for a wire transfer")
    await check.run(msg(), result)
    await check.close()
    assert "BEC_PAYMENT_REQUEST" in result.get("LLM_BEC").reason
    assert len(fake.requests) == 1


async def test_no_tier1_score_means_not_asked_unless_always(fake):
    check = LlmCheck(settings(fake))
    result = ScanResult(specs=SYMBOLS)
    await check.run(msg(), result)
    assert result.symbols == [] and fake.requests == []
    check2 = LlmCheck(settings(fake, ask_when="always"))
    await check2.run(msg(), result)
    await check.close()
    await check2.close()
    assert result.has("LLM_HAM")


def test_redact_masks_personal_data():
    text = ("Write to john.smith@corp.example or call +44 20 7946 0958, card 4111111111111111, "
            "IBAN DE89 3704 0044 0532 0130 00, ref 12345, invoice 2026.")
    out = redact(text)
    for secret in ("john.smith", "7946", "4111111111111111", "DE89", "0532"):
        assert secret not in out
    assert "[redacted]@corp.example" in out and "[iban]" in out and "[phone]" in out
    assert "ref 12345" in out and "invoice 2026" in out  # short numbers carry meaning, kept


async def test_redaction_applied_to_request_body(fake):
    body = ("Dear customer, confirm your account at billing@paypa1.example, call 0800 123 4567 "
            "and pay to GB82 WEST 1234 5698 7654 32. Customer number 99887766.")
    check = LlmCheck(settings(fake))
    await check.run(parse_message(make_email(body=body, sender="Mallory <mallory@paypa1.example>")),
                    uncertain_result())
    await check.close()
    sent = json.dumps(fake.requests[0].body)
    for secret in ("billing@", "mallory@", "123 4567", "GB82", "99887766"):
        assert secret not in sent, secret
    assert "paypa1.example" in sent  # the domain is evidence and stays

    fake.requests.clear()
    check = LlmCheck(settings(fake, redact=False))
    await check.run(parse_message(make_email(body=body)), uncertain_result())
    await check.close()
    assert "99887766" in json.dumps(fake.requests[0].body)


async def test_identical_message_is_answered_from_cache(fake):
    check = LlmCheck(settings(fake))
    r1, r2 = uncertain_result(), uncertain_result()
    await check.run(msg(), r1)
    await check.run(msg(), r2)
    await check.close()
    assert len(fake.requests) == 1
    assert r1.has("LLM_HAM") and r2.has("LLM_HAM")


async def test_timeout_gives_unavailable_within_budget(fake):
    fake.delay = 3.0
    check = LlmCheck(settings(fake, timeout=0.4))
    result = uncertain_result()
    message = msg()
    started = time.perf_counter()
    await check.run(message, result)
    elapsed = time.perf_counter() - started
    await check.close()
    assert elapsed < 0.4 + 0.5  # slack for a loaded test machine
    sym = result.get("LLM_UNAVAILABLE")
    assert sym.score == 0 and "within 0.4s" in sym.reason


async def test_concurrency_limit_respected(fake):
    fake.delay = 0.25
    check = LlmCheck(settings(fake, max_concurrency=2, timeout=5.0))
    results = [uncertain_result() for _ in range(6)]
    await asyncio.gather(*(check.run(msg(body=f"distinct message number {chr(65 + i)}"), r)
                           for i, r in enumerate(results)))
    await check.close()
    assert len(fake.requests) == 6
    assert fake.max_in_flight == 2
    assert all(r.has("LLM_HAM") for r in results)


async def test_rate_budget_exhausted_gives_unavailable(fake):
    check = LlmCheck(settings(fake, rate_per_minute=2))
    results = [uncertain_result() for _ in range(3)]
    for i, r in enumerate(results):
        await check.run(msg(body=f"another distinct message {chr(65 + i)}"), r)
    await check.close()
    assert len(fake.requests) == 2
    assert results[0].has("LLM_HAM") and results[1].has("LLM_HAM")
    assert "rate budget of 2 requests/minute spent" in results[2].get("LLM_UNAVAILABLE").reason


def test_token_bucket_refills():
    now = [0.0]
    b = TokenBucket(60, clock=lambda: now[0])
    assert sum(b.take() for _ in range(100)) == 60
    now[0] += 1.0
    assert b.take() and not b.take()


@pytest.mark.parametrize("content,raw,status,why", [
    ("not json at all", None, 200, "answer is not JSON"),
    ('{"verdict": "maybe", "confidence": 1}', None, 200, "unknown verdict"),
    ('["spam"]', None, 200, "not a JSON object"),
    ("", b"<html>oops</html>", 200, "response body is not JSON"),
    ("", b'{"choices": []}', 200, "no choices[0].message.content"),
    ("", b'{"error": "overloaded"}', 503, "HTTP 503"),
])
async def test_bad_answers_give_unavailable(fake, content, raw, status, why):
    fake.content, fake.raw_body, fake.status = content, raw, status
    check = LlmCheck(settings(fake))
    result = uncertain_result()
    await check.run(msg(), result)
    await check.close()
    sym = result.get("LLM_UNAVAILABLE")
    assert sym is not None and why in sym.reason and sym.score == 0
    assert [s.name for s in result.symbols] == ["LLM_UNAVAILABLE"]


async def test_connection_refused_gives_unavailable():
    check = LlmCheck(LlmSettings(enabled=True, endpoint="http://127.0.0.1:9/v1", timeout=1.0))
    result = uncertain_result()
    await check.run(msg(), result)
    await check.close()
    assert "ConnectError" in result.get("LLM_UNAVAILABLE").reason


def test_parse_answer_clamps_and_sanitises():
    body = {"choices": [{"message": {"content": json.dumps(
        {"verdict": "spam", "confidence": 7, "reason": "x\x00\x1b[31m " + "y" * 500})}}]}
    verdict, conf, reason = parse_answer(body)
    assert verdict == "spam" and conf == 1.0
    assert "\x00" not in reason and "\x1b" not in reason and len(reason) <= 200


async def test_auth_header_from_env_and_never_logged(fake, monkeypatch, caplog):
    secret = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv("MAILMOAT_TEST_LLM_KEY", secret)
    caplog.set_level(logging.DEBUG)
    check = LlmCheck(settings(fake, api_key_env="MAILMOAT_TEST_LLM_KEY"))
    await check.run(msg(), uncertain_result())
    fake.status, fake.raw_body = 401, b'{"error": "bad key"}'
    failed = uncertain_result()
    await check.run(msg(body="a different message"), failed)
    await check.close()
    assert fake.requests[0].headers["Authorization"] == f"Bearer {secret}"
    assert "HTTP 401" in failed.get("LLM_UNAVAILABLE").reason
    assert secret not in caplog.text
    assert all(secret not in s.reason for s in failed.symbols)


async def test_no_auth_header_without_key(fake, monkeypatch):
    monkeypatch.delenv("MAILMOAT_LLM_KEY", raising=False)
    check = LlmCheck(settings(fake))
    await check.run(msg(), uncertain_result())
    await check.close()
    assert "Authorization" not in fake.requests[0].headers


async def test_end_to_end_through_the_scanner(fake):
    fake.content = json.dumps({"verdict": "spam", "confidence": 1.0, "reason": "bulk offer"})
    config = make_config(llm={"enabled": True, "endpoint": fake.url, "ask_when": "always"})
    outcome = await scan_bytes(make_email(subject="Cheap watches"), config, network=True)
    assert "LLM_SPAM" in symbol_names(outcome)
    # Disabled (the default) or offline scans never talk to the endpoint.
    await scan_bytes(make_email(), make_config(), network=True)
    await scan_bytes(make_email(subject="x"), config, network=False)
    assert len(fake.requests) == 1


@pytest.mark.redis
async def test_redis_cache_shared_between_checks(fake):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"mailmoat-test-{uuid.uuid4().hex}:"
    try:
        try:
            await client.ping()
        except Exception:
            pytest.skip("no Redis on 127.0.0.1:6379")
        a = LlmCheck(settings(fake, redis_prefix=prefix), redis=client)
        b = LlmCheck(settings(fake, redis_prefix=prefix), redis=client)
        r = uncertain_result()
        await a.run(msg(), uncertain_result())
        await b.run(msg(), r)  # a fresh process-local LRU: the answer comes from Redis
        await a.close()
        await b.close()
        assert len(fake.requests) == 1 and r.has("LLM_HAM")
    finally:
        async for k in client.scan_iter(match=prefix + "*"):
            await client.delete(k)
        await client.aclose()


async def test_combined_tier12_probability_decides_first(fake):
    check = LlmCheck(settings(fake))
    confident = uncertain_result(0.5)
    confident.facts.deep = ModelFacts(p_bad=0.5, p_spam=0.5, p_phish=0.0, combined_bad=0.9)
    await check.run(msg(), confident)
    unsure = uncertain_result(0.95)
    unsure.facts.deep = ModelFacts(p_bad=0.1, p_spam=0.1, p_phish=0.0, combined_bad=0.52)
    await check.run(msg(), unsure)
    await check.close()
    assert confident.symbols == []
    assert "deep_combined_probability 0.52" in unsure.get("LLM_HAM").reason
