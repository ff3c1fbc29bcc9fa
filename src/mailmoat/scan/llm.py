"""Tier 3: an optional second opinion from a large language model.

Asked only about mail the earlier tiers could not settle (the tier-2 or tier-1 probability
lies in the uncertain band) or that looks like business e-mail compromise (a `bec` symbol
with a positive score). It speaks the OpenAI-compatible `/chat/completions` API, so a
local Ollama or vLLM works as well as a hosted endpoint.

The LLM is never on the critical path of delivery: every call has a hard timeout, a
concurrency cap and a per-minute budget, answers are cached by the hash of the (redacted)
prompt, and any failure becomes `LLM_UNAVAILABLE` with weight 0 and the reason, never a delay
past the timeout and never a lost message. Before anything leaves the gateway, addresses,
phone numbers, long digit runs and IBAN-like strings can be masked (`redact = true`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from typing import Any, Literal

import httpx
from pydantic import Field

from mailmoat.config import Section
from mailmoat.message.model import ParsedMessage
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec

log = logging.getLogger(__name__)

_G = "llm"

SYMBOLS: dict[str, SymbolSpec] = {
    "LLM_SPAM": SymbolSpec(3.0, "The LLM second opinion judged the message to be spam.",
                           Category.SPAM, _G),
    "LLM_PHISH": SymbolSpec(4.0, "The LLM second opinion judged the message to be phishing.",
                            Category.PHISHING, _G),
    "LLM_BEC": SymbolSpec(4.0, "The LLM second opinion judged the message to be business "
                          "e-mail compromise (fraudulent payment or data request).",
                          Category.BEC, _G),
    "LLM_HAM": SymbolSpec(-1.5, "The LLM second opinion judged the message to be legitimate.",
                          Category.CLEAN, _G),
    "LLM_UNAVAILABLE": SymbolSpec(0.0, "The LLM was asked but gave no usable answer (timeout, "
                                  "HTTP error, bad JSON or rate budget spent).",
                                  Category.POLICY, _G),
}

_VERDICT_SYMBOL = {"spam": "LLM_SPAM", "phishing": "LLM_PHISH", "phish": "LLM_PHISH",
                   "bec": "LLM_BEC", "ham": "LLM_HAM"}


class LlmSettings(Section):
    enabled: bool = Field(False, description="ask the LLM at all")
    endpoint: str = Field("http://127.0.0.1:11434/v1",
                          description="base URL of an OpenAI-compatible API (…/v1)")
    model: str = Field("qwen2.5:7b-instruct", description="model name sent in the request")
    api_key_env: str = Field("MAILMOAT_LLM_KEY",
                             description="environment variable holding the bearer token; "
                             "unset: no Authorization header")
    timeout: float = Field(5.0, gt=0, description="seconds for the whole call, queueing included")
    max_concurrency: int = Field(2, ge=1, description="requests in flight at once")
    rate_per_minute: float = Field(30.0, gt=0, description="requests per minute (token bucket)")
    redact: bool = Field(True, description="mask addresses, phone numbers, long digit runs and "
                         "IBAN-like strings before sending")
    ask_when: Literal["uncertain_or_bec", "uncertain", "bec", "always"] = Field(
        "uncertain_or_bec", description="which mail the LLM is asked about")
    band: tuple[float, float] = Field((0.2, 0.8), description="uncertain band of the spam "
                                      "probability (tiers 1+2 combined, else tier 2's, else "
                                      "tier 1's)")
    max_body_chars: int = Field(3000, ge=100, description="characters of body text sent")
    cache_size: int = Field(2048, ge=0, description="answers kept in the in-memory LRU")
    cache_ttl: float = Field(86400.0, ge=0, description="seconds an answer stays cached")
    redis_cache: bool = Field(True, description="also cache answers in Redis when [redis] url "
                              "is set, so every gateway process shares them")
    redis_prefix: str = Field("mailmoat:llm:", description="key prefix of the Redis cache")
    json_mode: bool = Field(True, description="send response_format json_object (Ollama, "
                            "vLLM and OpenAI accept it)")


# --- redaction ---------------------------------------------------------------------------

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-]+)@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()./\-]{6,}\d(?!\w)")
_DIGITS = re.compile(r"\d{6,}")


def redact(text: str) -> str:
    """Mask personal data: the local part of addresses (the domain is evidence, kept),
    IBAN-like account numbers, phone numbers and any run of 6+ digits."""
    text = _EMAIL.sub(lambda m: f"[redacted]@{m.group(2)}", text)
    text = _IBAN.sub("[iban]", text)
    text = _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group(0)) >= 7
                      else m.group(0), text)
    return _DIGITS.sub("[number]", text)


# --- prompt ------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You are an email security analyst. Classify the email the user shows you as exactly one "
    "of: spam (unsolicited bulk or marketing), phishing (tries to steal credentials or "
    "payment data, or lures to a malicious link or file), bec (impersonates a colleague, "
    "executive or supplier to request a payment, gift cards, bank detail changes or "
    "sensitive data), ham (legitimate). Answer with JSON only: "
    '{"verdict": "spam|phishing|bec|ham", "confidence": <number 0..1>, '
    '"reason": "<one sentence>"}'
)


def build_messages(msg: ParsedMessage, settings: LlmSettings) -> list[dict[str, str]]:
    def addr(a: Any) -> str:
        return f"{a.display_name} <{a.address}>".strip() if a else ""

    body = msg.body_text[: settings.max_body_chars]
    hosts = sorted(msg.url_hosts)[:20]
    lines = [
        f"From: {', '.join(addr(a) for a in msg.from_)}",
        f"Reply-To: {', '.join(addr(a) for a in msg.reply_to)}",
        f"To: {', '.join(addr(a) for a in msg.to[:5])}",
        f"Envelope sender: {msg.envelope.mail_from}",
        f"Subject: {msg.subject}",
        f"Link hosts: {', '.join(hosts) or '(none)'}",
        f"Attachments: {', '.join(a.filename or a.declared_type for a in msg.attachments[:10]) or '(none)'}",
        "",
        body,
    ]
    user = "\n".join(lines)
    if settings.redact:
        user = redact(user)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --- answer parsing ----------------------------------------------------------------------

class BadAnswer(ValueError):
    pass


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.I)
_CTRL = re.compile(r"[\x00-\x1f\x7f]+")


def sanitise_reason(text: str, limit: int = 200) -> str:
    text = _CTRL.sub(" ", str(text))
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def parse_answer(body: Any) -> tuple[str, float, str]:
    """(verdict, confidence, reason) from a chat-completions response body."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BadAnswer("response has no choices[0].message.content") from exc
    if not isinstance(content, str):
        raise BadAnswer("message content is not text")
    content = _FENCE.sub("", content.strip())
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise BadAnswer(f"answer is not JSON: {sanitise_reason(content, 60)!r}") from exc
    if not isinstance(data, dict):
        raise BadAnswer("answer is not a JSON object")
    verdict = str(data.get("verdict", "")).strip().lower()
    if verdict not in _VERDICT_SYMBOL:
        raise BadAnswer(f"unknown verdict {sanitise_reason(verdict, 30)!r}")
    try:
        confidence = float(data.get("confidence", 0.5))
    except (TypeError, ValueError) as exc:
        raise BadAnswer("confidence is not a number") from exc
    if confidence != confidence:  # NaN
        raise BadAnswer("confidence is not a number")
    confidence = min(1.0, max(0.0, confidence))
    reason = sanitise_reason(data.get("reason", "")) or "no reason given"
    return verdict, confidence, reason


# --- budget and cache --------------------------------------------------------------------

class TokenBucket:
    """`rate_per_minute` requests per minute, bursting up to one minute's worth."""

    def __init__(self, rate_per_minute: float, clock: Any = time.monotonic) -> None:
        self.capacity = max(1.0, rate_per_minute)
        self.rate = rate_per_minute / 60.0
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AnswerCache:
    """LRU of (verdict, confidence, reason) by prompt hash, with a time to live."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._d: OrderedDict[str, tuple[float, tuple[str, float, str]]] = OrderedDict()

    def get(self, key: str) -> tuple[str, float, str] | None:
        hit = self._d.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.ttl:
            del self._d[key]
            return None
        self._d.move_to_end(key)
        return hit[1]

    def put(self, key: str, value: tuple[str, float, str]) -> None:
        if self.size <= 0:
            return
        self._d[key] = (time.monotonic(), value)
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)


class Unavailable(Exception):
    """The LLM gave no usable answer; the message says why (never contains the key)."""


# --- the check ---------------------------------------------------------------------------

class LlmCheck(Check):
    name = "llm"
    family = "llm"
    symbols = SYMBOLS
    needs_network = True  # it talks to an HTTP endpoint (loopback by default)
    stage = 2  # after tier 1 (stage 0) and tier 2 (stage 1) so their scores can be read

    def __init__(self, settings: LlmSettings, redis: Any = None) -> None:
        self.settings = settings
        # A little slack over our own deadline so the pipeline never pre-empts us: we
        # always report LLM_UNAVAILABLE ourselves, with the reason.
        self.timeout = settings.timeout + 1.0
        self.bucket = TokenBucket(settings.rate_per_minute)
        self.cache = AnswerCache(settings.cache_size, settings.cache_ttl)
        self.redis = redis if settings.redis_cache else None
        self.requests_sent = 0
        self._sem: asyncio.Semaphore | None = None
        # Built here, not on first use: making the TLS context costs tens of milliseconds of
        # blocking work, which must not eat into a message's timeout.
        # trust_env=False: proxy variables must not reroute mail content elsewhere.
        self._client: httpx.AsyncClient | None = httpx.AsyncClient(trust_env=False)
        self.url = settings.endpoint.rstrip("/") + "/chat/completions"

    # Why ask: returns a short phrase for the reason, or None to stay quiet.
    def why_ask(self, result: ScanResult) -> str | None:
        s = self.settings
        if s.ask_when == "always":
            return "configured to ask about all mail"
        if s.ask_when in ("uncertain_or_bec", "bec"):
            bec = [x.name for x in result.symbols if x.category is Category.BEC and x.score > 0]
            if bec:
                return f"BEC-suspect ({', '.join(bec[:3])})"
        if s.ask_when in ("uncertain_or_bec", "uncertain"):
            t1, t2 = result.facts.content, result.facts.deep
            # The most informative reading first: both tiers together, tier 2, tier 1. The
            # name goes into the reason an administrator reads.
            for key, p in (("deep_combined_probability", t2.combined_bad if t2 else None),
                           ("deep_probability", t2.p_bad if t2 else None),
                           ("ml_spam_probability", t1.p_bad if t1 else None)):
                if p is not None:
                    lo, hi = s.band
                    if lo <= p <= hi:
                        return f"uncertain ({key} {p:.2f})"
                    return None  # the most informative score is confident
        return None

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        why = self.why_ask(result)
        if why is None:
            return
        messages = build_messages(msg, self.settings)
        key = hashlib.sha256(json.dumps([self.settings.model, messages], sort_keys=True)
                             .encode()).hexdigest()
        try:
            answer = self.cache.get(key) or await self._redis_get(key)
            if answer is None:
                answer = await asyncio.wait_for(self._ask(messages), self.settings.timeout)
                self.cache.put(key, answer)
                await self._redis_put(key, answer)
        except asyncio.TimeoutError:
            result.add("LLM_UNAVAILABLE", reason=f"LLM gave no answer within "
                       f"{self.settings.timeout:g}s; asked because {why}")
            return
        except Unavailable as exc:
            result.add("LLM_UNAVAILABLE", reason=f"LLM unavailable: {exc}; asked because {why}")
            return
        verdict, confidence, reason = answer
        label = "phishing" if verdict == "phish" else verdict
        result.add(_VERDICT_SYMBOL[verdict], factor=max(0.1, confidence),
                   reason=f"LLM second opinion ({self.settings.model}, asked because {why}): "
                   f"{label}, confidence {confidence:.2f}: {reason}")

    async def _ask(self, messages: list[dict[str, str]]) -> tuple[str, float, str]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.settings.max_concurrency)
        async with self._sem:
            # The budget is spent when a request is about to leave, not while queueing.
            if not self.bucket.take():
                raise Unavailable(f"rate budget of {self.settings.rate_per_minute:g} "
                                  "requests/minute spent")
            if self._client is None:
                raise Unavailable("the check is closed")
            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.settings.api_key_env, "") if self.settings.api_key_env else ""
            if key:
                headers["Authorization"] = f"Bearer {key}"
            payload: dict[str, Any] = {"model": self.settings.model, "messages": messages,
                                       "temperature": 0, "stream": False}
            if self.settings.json_mode:
                payload["response_format"] = {"type": "json_object"}
            self.requests_sent += 1
            try:
                resp = await self._client.post(self.url, json=payload, headers=headers,
                                               timeout=self.settings.timeout)
            except httpx.HTTPError as exc:
                raise Unavailable(f"{type(exc).__name__} talking to {self.url}") from None
            if resp.status_code != 200:
                raise Unavailable(f"HTTP {resp.status_code} from {self.url}")
            try:
                body = resp.json()
            except ValueError:
                raise Unavailable("response body is not JSON") from None
            try:
                return parse_answer(body)
            except BadAnswer as exc:
                raise Unavailable(str(exc)) from None

    async def _redis_get(self, key: str) -> tuple[str, float, str] | None:
        if self.redis is None:
            return None
        try:
            raw = await asyncio.wait_for(self.redis.get(f"{self.settings.redis_prefix}{key}"), 0.2)
            if raw:
                v, c, r = json.loads(raw)
                return str(v), float(c), str(r)
        except Exception as exc:  # a cache must never break the check
            log.warning("llm redis cache read failed: %s", type(exc).__name__)
        return None

    async def _redis_put(self, key: str, value: tuple[str, float, str]) -> None:
        if self.redis is None:
            return
        try:
            await asyncio.wait_for(self.redis.set(f"{self.settings.redis_prefix}{key}", json.dumps(value),
                                                  ex=max(1, int(self.settings.cache_ttl))), 0.2)
        except Exception as exc:
            log.warning("llm redis cache write failed: %s", type(exc).__name__)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("llm", LlmSettings)
    if not settings.enabled:
        return []
    return [LlmCheck(settings, redis=ctx.redis)]
