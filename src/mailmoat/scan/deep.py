"""Tier 2: a sentence-transformer model for mail the fast model is not all but certain of.

Tier 1 (`content`, stage 0) leaves its P(spam or phish) in `result.facts.content`. When that lies
in `[deep] band` (default 0.001–0.9999), this check embeds the subject and the
start of the body with all-MiniLM-L6-v2 fine-tuned for mail (the bundled head file carries
the encoder's low-rank adapter, merged into the published weights at load; onnxruntime on an
int8 graph built at first use, or numpy; no torch; see `mailmoat.ml.deep.engine`) and scores
the embedding with the head trained with it. It says how spam-like the message reads and
which known pattern it is closest to, and leaves its reading in `result.facts.deep` for
tier 3 and the evidence gate.
With `combine = "mean"` (the default) it moves the content verdict to the one the two tiers
earn together: the mean of their log-odds (`combined_probabilities`).

Cost control: the encoder runs in one dedicated worker thread with BLAS capped to
`threads`, so the event loop and the other checks keep going; a message that cannot be
scored within `timeout_ms` gets `DEEP_FAIL` (weight 0) and goes on without tier 2.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field

from mailmoat.config import Section
from mailmoat.message.model import ParsedMessage
from mailmoat.ml.scoring import ContentSettings, content_score
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import ModelFacts

log = logging.getLogger(__name__)

_G = "deep"

SYMBOLS: dict[str, SymbolSpec] = {
    "DEEP_SPAM": SymbolSpec(3.0, "The deep text model finds the message spam-like.",
                            Category.SPAM, _G),
    "DEEP_PHISH": SymbolSpec(4.0, "The deep text model finds the message phishing-like.",
                             Category.PHISHING, _G),
    "DEEP_HAM": SymbolSpec(-2.0, "The deep text model finds the message reads like "
                           "legitimate mail.", Category.CLEAN, _G),
    "DEEP_MEAN_RAISES": SymbolSpec(1.0, "With `combine = \"mean\"`: both tiers together (the "
                                   "mean of their log-odds) earn a stricter content verdict "
                                   "than tier 1 alone; the factor is the difference in score.",
                                   Category.SPAM, _G),
    "DEEP_MEAN_LOWERS": SymbolSpec(-1.0, "With `combine = \"mean\"`: both tiers together (the "
                                   "mean of their log-odds) earn a milder content verdict than "
                                   "tier 1 alone; the factor is the difference in score.",
                                   Category.CLEAN, _G),
    "DEEP_FAIL": SymbolSpec(0.0, "The deep model could not score the message in its time "
                            "budget, or failed; the message was judged without it.",
                            Category.POLICY, _G),
}


class DeepSettings(Section):
    mode: Literal["band", "all", "off"] = Field(
        "band", description="band: only mail whose tier-1 probability is in `band`; "
        "all: every message; off: never")
    band: tuple[float, float] = Field(
        (0.001, 0.9999), description="uncertain band of tier 1's ml_spam_probability, "
        "inclusive: with combine = mean, every message but those tier 1 is all but certain "
        "of (docs/deep.md); (0.2, 0.8) suits combine = vote")
    when_no_tier1: Literal["skip", "run"] = Field(
        "skip", description="in band mode, what to do when tier 1 left no probability "
        "(content check disabled or failed): skip, or treat the message as uncertain")
    timeout_ms: int = Field(250, ge=10, description="time budget per message, queueing "
                            "for the model included")
    threads: int = Field(1, ge=1, description="BLAS threads the encoder may use")
    head_path: str = Field("", description="trained head (.npz); empty: the bundled one")
    model_dir: str = Field("", description="all-MiniLM-L6-v2 files; empty: the ones "
                           "bundled with mailmoat")
    engine: Literal["auto", "onnx", "numpy"] = Field(
        "auto", description="auto: onnxruntime when installed (graph built from the bundled "
        "weights at first use and cached), else numpy; onnx: onnxruntime, required; numpy: "
        "the plain numpy encoder")
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto", description="ONNX graph to build: int8 (weights quantised per channel, "
        "faster) or fp32 (same as numpy); auto: what the head was trained on")
    onnx_path: str = Field("", description="a graph of your own (python -m "
                           "mailmoat.ml.deep.onnx_export) for the onnx engines; empty: built "
                           "automatically into graph_dir")
    graph_dir: str = Field("", description="folder for the automatically built graph; "
                           "empty: the user cache (~/.cache/mailmoat), or <data_dir>/models "
                           "when that cannot be written")
    wait_for_load: bool = Field(True, description="building the scanner waits for the model "
                                "(once per process) so the first messages get tier 2 too")
    load_timeout: float = Field(60.0, gt=0, description="seconds to wait for the model to load")
    min_tokens: int = Field(16, ge=0, description="texts with fewer word pieces (subject + "
                            "body) are not scored: the training corpora hold almost no ham that "
                            "short, so the model reads any short note as spam")
    threshold: float = Field(0.5, gt=0, lt=1, description="deep probability at or above "
                             "which DEEP_SPAM/DEEP_PHISH fire; below it DEEP_HAM")
    combine: Literal["vote", "mean"] = Field(
        "mean", description="mean: the content verdict becomes the one both tiers earn "
        "together, at the mean of their log-odds (DEEP_MEAN_RAISES/LOWERS carry the "
        "difference); vote: tier 2 adds its own symbol (DEEP_SPAM/PHISH/HAM). The mean has "
        "fewer false positives and more detection, most of all on mail unlike the training "
        "corpora (docs/deep.md)")

    def covers(self, p_bad: float) -> bool:
        """Does tier 2 run on a message tier 1 gave this P(spam or phish)? (`mode` off
        builds no check at all.)"""
        lo, hi = self.band
        return self.mode == "all" or lo <= p_bad <= hi


class DeepModel:
    """Encoder + head, loaded once per process and shared by every scanner."""

    _cache: dict[tuple[str, ...], DeepModel] = {}
    _lock = threading.Lock()

    def __init__(self, head_path: str = "", model_dir: str = "", threads: int = 1,
                 engine: str = "auto", precision: str = "auto", onnx_path: str = "",
                 graph_dir: str = "", fallback_dir: str = "") -> None:
        from mailmoat.ml.deep.engine import head_precision, open_encoder
        from mailmoat.ml.deep.head import Head, default_head_path

        started = time.monotonic()
        self.head = Head.load(head_path or None)
        if precision == "auto":
            precision = head_precision(self.head.meta)
        self.encoder = open_encoder(engine, precision, max_tokens=self.head.max_tokens,
                                    threads=threads, model_dir=model_dir or None,
                                    onnx_path=onnx_path or None, graph_dir=graph_dir or None,
                                    fallback_dir=fallback_dir or None,
                                    head_path=head_path or default_head_path())
        self.engine = self.encoder.engine
        trained_on = str(self.head.meta.get("engine", "numpy"))
        same = {"numpy", "onnx-fp32"}  # identical embeddings (to ~1e-7)
        known = self.engine in same | {"onnx-int8"}  # not a graph of the admin's own
        if known and trained_on != self.engine and not {trained_on, self.engine} <= same:
            log.warning("deep model: the head was trained on %s embeddings but runs on %s; "
                        "its scores shift slightly (see docs/deep.md)", trained_on, self.engine)
        self.score("warm-up: first calls pay for lazy set-up in BLAS and the tokenizer")
        log.info("deep model loaded in %.1f s: engine %s, %d word pieces", time.monotonic()
                 - started, self.engine, self.head.max_tokens)

    @classmethod
    def get(cls, head_path: str = "", model_dir: str = "", threads: int = 1,
            engine: str = "auto", precision: str = "auto", onnx_path: str = "",
            graph_dir: str = "", fallback_dir: str = "") -> DeepModel:
        """The shared model, loading it (a second or two, ~100 MB) on first use; with an
        ONNX engine the first start of a machine also builds the graph (10-30 s, once).
        `fallback_dir` is not part of the key: wherever it is cached, the graph is the same."""
        key = (head_path, model_dir, str(threads), engine, precision, onnx_path, graph_dir)
        with cls._lock:
            model = cls._cache.get(key)
            if model is None:
                model = cls._cache[key] = cls(head_path, model_dir, threads, engine, precision,
                                              onnx_path, graph_dir, fallback_dir)
            return model

    @classmethod
    def preload(cls, head_path: str = "", model_dir: str = "", threads: int = 1,
                engine: str = "auto", precision: str = "auto", onnx_path: str = "",
                graph_dir: str = "", fallback_dir: str = "") -> Future[DeepModel]:
        """Start loading in the model's worker thread, so building a scanner stays fast and
        the first message waits (within its budget) only for what is left of the load."""
        return _EXECUTOR.submit(cls.get, head_path, model_dir, threads, engine, precision,
                                onnx_path, graph_dir, fallback_dir)

    def score(self, text: str, threshold: float = 0.5, min_tokens: int = 0) -> Any:
        """The head's prediction, or the number of word pieces when under `min_tokens`."""
        ids = self.encoder.token_ids([text])
        pieces = len(ids[0]) - 2  # without [CLS] and [SEP]
        if pieces < min_tokens:
            return pieces
        return self.head.predict(self.encoder.embed_ids(ids)[0], threshold)


# One encoder at a time per process: tier 2 must never take every core from the gateway.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmoat-deep")


def _after_fork_in_child() -> None:
    """A forked child inherits the executor object but not its thread: work submitted to it
    would wait for ever (every message a DEEP_FAIL after its budget). Give the child its own
    executor and let it load its own model (the parent's may hold dead runtime threads)."""
    global _EXECUTOR
    _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmoat-deep")
    DeepModel._lock = threading.Lock()
    DeepModel._cache.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DeepCheck(Check):
    name = "deep"
    family = "deep"
    symbols = SYMBOLS
    stage = 1  # after tier 1, whose probability decides whether we run

    def __init__(self, settings: DeepSettings, model: Future[DeepModel],
                 content: ContentSettings | None = None) -> None:
        self.settings = settings
        self.content = content or ContentSettings()  # thresholds for combine = "mean"
        self.model = model  # loads in the background; see DeepModel.preload
        self.budget = settings.timeout_ms / 1000.0
        self.timeout = self.budget + 1.0  # we report our own overrun, with the reason

    def why_run(self, result: ScanResult) -> str | None:
        """Why tier 2 reads this message, in words (None: it does not)."""
        s = self.settings
        tier1 = result.facts.content
        p = tier1.p_bad if tier1 is not None else None
        if s.mode == "all":
            return "every message is read" if p is None else \
                f"every message is read (the content model: {_pct(p)} likely spam or phishing)"
        if p is None:
            return "the content model gave no reading" if s.when_no_tier1 == "run" else None
        lo, hi = s.band
        return (f"the content model was not sure ({_pct(p)} likely spam or phishing; "
                f"[deep] band {lo:g}–{hi:g})") if s.covers(p) else None

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        why = self.why_run(result)
        if why is None:
            return
        from mailmoat.ml.deep.text import message_text

        text = message_text(msg)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            model = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.model)),
                                           self.budget)
            left = self.budget - (loop.time() - started)
            job = loop.run_in_executor(_EXECUTOR, model.score, text, self.settings.threshold,
                                       self.settings.min_tokens)
            pred = await asyncio.wait_for(job, max(left, 0.001))
        except asyncio.TimeoutError:
            what = "score the message" if self.model.done() else "finish loading"
            result.add("DEEP_FAIL", reason=f"the deep model did not {what} within "
                       f"{self.settings.timeout_ms} ms; the message was judged without it")
            return
        if isinstance(pred, int):  # too short to judge: no vote (docs/deep.md)
            return
        p = pred.p_bad
        t1 = result.facts.content
        result.facts.deep = ModelFacts(
            p_bad=round(p, 4), p_spam=round(pred.p_spam, 4), p_phish=round(pred.p_phish, 4),
            # Tier 2 is a second opinion, not a replacement: on held-out mail both together
            # beat either alone (docs/deep.md), so this is what tier 3 reads.
            combined_bad=round(combined_bad(t1.p_bad, p), 4) if t1 is not None else None)
        # The reason says what the model read, in words; why it ran (the band) is no news to
        # an administrator reading the message's page, except when tier 1 said nothing.
        pattern = f"it reads most like '{pred.pattern}'"
        if why == "the content model gave no reading":
            pattern += f"; {why}"
        tier1 = (t1.p_spam, t1.p_phish) if t1 is not None else None
        hit = tier2_symbol(pred.p_spam, pred.p_phish, tier1, self.settings, self.content)
        if hit is None:
            return
        name, factor = hit
        if name.startswith("DEEP_MEAN_"):
            assert tier1 is not None
            self._add_mean(result, name, factor, tier1, pred, pattern)
        elif name == "DEEP_PHISH":
            result.add(name, factor=factor, reason=(
                f"the deep model reads this as {_pct(pred.p_phish)} likely phishing "
                f"({_pct(p)} spam or phishing); {pattern}"))
        elif name == "DEEP_SPAM":
            result.add(name, factor=factor, reason=(
                f"the deep model reads this as {_pct(p)} likely spam or phishing, mostly spam; "
                f"{pattern}"))
        else:
            result.add(name, factor=factor, reason=(
                f"the deep model reads this as legitimate mail (only {_pct(p)} likely spam or "
                f"phishing); {pattern}"))

    def _add_mean(self, result: ScanResult, name: str, factor: float,
                  tier1: tuple[float, float], pred: Any, context: str) -> None:
        t1s, t1p = tier1
        both = combined_probabilities(t1s, t1p, pred.p_spam, pred.p_phish)
        kind = "phishing" if both[1] > both[0] else "spam"
        result.add(name, factor=factor, reason=(
            f"the deep model reads this as {_pct(pred.p_bad)} likely spam or phishing, the "
            f"content model as {_pct(t1s + t1p)}; together {_pct(sum(both))} (mostly {kind}), "
            f"which earns a content score of {content_score(*both, self.content):g} "
            f"instead of {content_score(t1s, t1p, self.content):g}; {context}"))


def _pct(p: float) -> str:
    """A probability as a percentage a person reads: whole numbers in the middle, two
    decimals near 0 and 100% (99.95% must not read as 100%)."""
    if 0.01 <= p <= 0.99:
        return f"{p * 100:.0f}%"
    if p > 0.9999:
        return "over 99.99%"
    if p < 0.0001:
        return "under 0.01%"
    return f"{p * 100:.2f}".rstrip("0").rstrip(".") + "%"


def tier2_symbol(t2_spam: float, t2_phish: float, tier1: tuple[float, float] | None,
                 settings: DeepSettings, content: ContentSettings | None = None
                 ) -> tuple[str, float] | None:
    """The symbol and factor the check adds once tier 2 has scored a message (None: the
    mean changes nothing): with `combine = "mean"` and tier 1's (spam, phish) probabilities,
    the adjustment to the mean's content verdict; otherwise tier 2's own vote. The benches
    score out-of-fold probabilities with it, so they count exactly what the check would."""
    if settings.combine == "mean" and tier1 is not None:
        return mean_adjustment(tier1[0], tier1[1], t2_spam, t2_phish, content)
    return deep_symbol(t2_spam, t2_phish, settings.threshold)


# How far a probability may go towards 0 or 1 in the mean of log-odds: one tier's extreme
# certainty (tier 1 reaches 1 - 1e-12) must not outvote any doubt of the other.
_CLIP = 1e-6


def _logodds(p: float) -> float:
    p = min(max(p, _CLIP), 1.0 - _CLIP)
    return math.log(p / (1.0 - p))


def combined_bad(t1_bad: float, t2_bad: float) -> float:
    """P(spam or phish) of both tiers together: the mean of their log-odds (the geometric
    mean of their odds). Out-of-fold it beat the mean of the probabilities at each operating
    point of bench/results/deep_cv.md (docs/deep.md, "Combining the tiers")."""
    return 1.0 / (1.0 + math.exp(-(_logodds(t1_bad) + _logodds(t2_bad)) / 2))


def combined_probabilities(t1_spam: float, t1_phish: float, t2_spam: float,
                           t2_phish: float) -> tuple[float, float]:
    """(spam, phish) of both tiers together: `combined_bad` split between spam and phish in
    the proportion of the two tiers' summed spam and phish probabilities."""
    bad = combined_bad(t1_spam + t1_phish, t2_spam + t2_phish)
    total = t1_spam + t1_phish + t2_spam + t2_phish
    share = (t1_phish + t2_phish) / total if total > 0 else 0.0
    return bad * (1.0 - share), bad * share


def mean_adjustment(t1_spam: float, t1_phish: float, t2_spam: float, t2_phish: float,
                    content: ContentSettings | None = None) -> tuple[str, float] | None:
    """`combine = "mean"`: the symbol and factor that turn the content check's score for
    tier 1's probabilities into its score for both tiers' together (`combined_probabilities`;
    None: no change). The content score is taken at the symbols' default weights. Shared
    with the benches."""
    before = content_score(t1_spam, t1_phish, content)
    after = content_score(*combined_probabilities(t1_spam, t1_phish, t2_spam, t2_phish),
                          content)
    delta = round(after - before, 3)
    if delta == 0:
        return None
    return ("DEEP_MEAN_RAISES", delta) if delta > 0 else ("DEEP_MEAN_LOWERS", -delta)


def deep_symbol(p_spam: float, p_phish: float, threshold: float = 0.5) -> tuple[str, float]:
    """The symbol and factor tier 2 emits for these probabilities: the factor grows with
    the distance from `threshold` (0.1 … 1)."""
    p = p_spam + p_phish
    if p >= threshold:
        factor = min(1.0, max(0.1, (p - threshold) / (1 - threshold)))
        return ("DEEP_PHISH" if p_phish >= p_spam else "DEEP_SPAM"), round(factor, 3)
    return "DEEP_HAM", round(min(1.0, max(0.1, (threshold - p) / threshold)), 3)


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("deep", DeepSettings)
    if settings.mode == "off" or ctx.disabled(DeepCheck.name):
        return []
    head = ctx.config.resolve_path(settings.head_path) if settings.head_path else ""
    mdir = ctx.config.resolve_path(settings.model_dir) if settings.model_dir else ""
    # A model that cannot load (package missing, bad head file) surfaces as DEEP_FAIL with
    # the reason on every message it should have scored, and once in the log.
    onnx_path = str(ctx.config.resolve_path(settings.onnx_path)) if settings.onnx_path else ""
    graph_dir = str(ctx.config.resolve_path(settings.graph_dir)) if settings.graph_dir else ""
    model = DeepModel.preload(str(head), str(mdir), settings.threads, settings.engine,
                              settings.precision, onnx_path, graph_dir,
                              str(ctx.config.data_dir / "models"))
    model.add_done_callback(_log_load_failure)
    if settings.wait_for_load:
        # Judge the first messages like every later one: wait here (about a second, once
        # per process) rather than let the first messages through without tier 2.
        try:
            model.result(timeout=settings.load_timeout)
        except Exception:  # logged by the callback; each message then says DEEP_FAIL
            pass
    return [DeepCheck(settings, model, ctx.config.section("content", ContentSettings))]


def default_head_size() -> int:
    from mailmoat.ml.deep.head import default_head_path

    return default_head_path().stat().st_size


def _log_load_failure(fut: Future[DeepModel]) -> None:
    exc = fut.exception()
    if exc is not None:
        log.error("deep model failed to load: %s: %s", type(exc).__name__, exc)

