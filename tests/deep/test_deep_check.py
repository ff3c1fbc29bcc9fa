"""Tier 2 check: runs on the uncertain band only, within its budget, with a named pattern."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from mailmoat.message.parse import parse_message
from mailmoat.ml.deep.head import PROTOTYPES, Head
from mailmoat.scan import deep
from mailmoat.scan.base import ScanResult
from mailmoat.scan.deep import SYMBOLS, DeepCheck, DeepModel, DeepSettings
from mailmoat.scan.facts import ModelFacts
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

PHISH = ("Dear user, your mailbox has exceeded its storage limit and you will stop receiving "
         "mail. Click here to verify your account and upgrade your quota immediately or it "
         "will be closed.")
HAM = ("Hi Bob, thanks for the notes from yesterday. I updated the release checklist and moved "
       "the code freeze to Friday; can you review the changelog before then? Cheers, Alice")


@pytest.fixture(scope="module")
def model_future():
    fut = DeepModel.preload()
    fut.result(timeout=120)
    return fut


def check(fut, **kw) -> DeepCheck:
    s = DeepSettings(**({"timeout_ms": 5000} | kw))
    return DeepCheck(s, fut)


def result_with(p: float | None) -> ScanResult:
    """A result whose tier 1 read the message as `p` spam (None: tier 1 gave no reading)."""
    r = ScanResult(specs=SYMBOLS)
    if p is not None:
        r.facts.content = ModelFacts(p_bad=p, p_spam=p, p_phish=0.0)
    return r


def msg(body: str, subject: str = "Hello"):
    return parse_message(make_email(subject=subject, body=body))


async def test_confident_tier1_is_not_rescored(model_future):
    c = check(model_future)  # default band 0.001-0.9999
    for p in (0.0, 0.0009, 0.99991, 1.0):
        r = result_with(p)
        await c.run(msg(PHISH), r)
        assert r.symbols == [] and r.facts.deep is None
    c = check(model_future, band=(0.2, 0.8))
    for p in (0.19, 0.81):
        r = result_with(p)
        await c.run(msg(PHISH), r)
        assert r.symbols == [] and r.facts.deep is None


async def test_uncertain_band_runs_and_names_pattern(model_future):
    c = check(model_future, combine="vote")
    r = result_with(0.5)
    await c.run(msg(PHISH, "Mailbox storage alert"), r)
    (sym,) = r.symbols
    assert sym.name in ("DEEP_PHISH", "DEEP_SPAM") and sym.score > 0
    assert r.facts.deep.p_bad >= 0.5
    # (the tier-2 probability is rounded to 4 places, which moves log-odds near 1 a little)
    both = r.facts.deep.combined_bad
    assert 0.5 < both <= r.facts.deep.p_bad
    assert both == pytest.approx(deep.combined_bad(0.5, r.facts.deep.p_bad), abs=5e-3)
    # In words: a percentage and the closest pattern, no tiers or bands.
    assert sym.reason.startswith("the deep model reads this as ") and "% likely " in sym.reason
    assert "it reads most like '" in sym.reason and "tier" not in sym.reason and "band" not in sym.reason
    names = {p[1] for p in PROTOTYPES}
    assert any(f"'{n}'" in sym.reason for n in names)


async def test_legitimate_mail_gets_ham_symbol(model_future):
    c = check(model_future, combine="vote")
    r = result_with(0.4)
    await c.run(msg(HAM, "Release checklist"), r)
    (sym,) = r.symbols
    assert sym.name == "DEEP_HAM" and sym.score < 0
    assert r.facts.deep.p_bad < 0.5


async def test_missing_tier1_probability(model_future):
    r = result_with(None)
    await check(model_future).run(msg(PHISH), r)
    assert r.symbols == []  # default: skip
    r = result_with(None)
    await check(model_future, when_no_tier1="run").run(msg(PHISH), r)
    assert "the content model gave no reading" in r.symbols[0].reason


async def test_mode_all_scores_confident_mail_too(model_future):
    r = result_with(0.99)
    await check(model_future, mode="all", combine="vote").run(msg(HAM), r)
    assert r.facts.deep is not None and len(r.symbols) == 1


async def test_busy_model_gives_fail_within_budget(model_future):
    # Occupy the model's single worker: the check must give up at its budget, not wait.
    gate = threading.Event()
    blocker = deep._EXECUTOR.submit(gate.wait, 10)
    try:
        r = result_with(0.5)
        started = time.perf_counter()
        await check(model_future, timeout_ms=100).run(msg(PHISH), r)
        elapsed = time.perf_counter() - started
    finally:
        gate.set()
        blocker.result()
    assert elapsed < 0.1 + 0.2
    (sym,) = r.symbols
    assert sym.name == "DEEP_FAIL" and sym.score == 0 and "within 100 ms" in sym.reason


async def test_end_to_end_through_scanner(model_future):
    outcome = await scan_bytes(make_email(subject="Mailbox storage alert", body=PHISH),
                               make_config(deep={"mode": "all", "timeout_ms": 10000, "combine": "vote"}))
    assert symbol_names(outcome) & {"DEEP_PHISH", "DEEP_SPAM"}
    assert outcome.result.timings["deep"] < 10


async def test_off_builds_nothing_and_bad_head_fails_visibly(tmp_path):
    assert deep.build(_ctx({"mode": "off"})) == []
    outcome = await scan_bytes(make_email(), make_config(
        deep={"mode": "all", "head_path": str(tmp_path / "missing.npz"), "timeout_ms": 3000}))
    fail = outcome.result.get("DEEP_FAIL")
    assert fail is not None and "missing.npz" in fail.reason


def _ctx(section):
    from mailmoat.scan.base import BuildContext

    return BuildContext(config=make_config(deep=section), network=False)


def test_head_roundtrip_and_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(384, 8)).astype(np.float32), np.zeros(8, np.float32)),
              (rng.normal(size=(8, 3)).astype(np.float32), np.zeros(3, np.float32))]
    protos = rng.normal(size=(3, 384)).astype(np.float32)
    head = Head(layers, protos, ["ham", "spam", "phish"], ["a", "b", "c"], {"max_tokens": 64})
    head.save(tmp_path / "h.npz")
    back = Head.load(tmp_path / "h.npz")
    x = rng.normal(size=(5, 384)).astype(np.float32)
    assert np.allclose(back.proba(x), head.proba(x), atol=1e-6)
    assert np.allclose(back.proba(x).sum(axis=1), 1.0)
    assert back.max_tokens == 64 and back.proto_name == ["a", "b", "c"]


def test_bundled_head_is_small_and_documented():
    head = Head.load()
    # fine-tuned: the encoder's low-rank adapter ships inside the head file (~1.4 MB)
    assert deep.default_head_size() < 3_000_000 and head.adapter
    assert head.meta["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(head.proto_name) == len(PROTOTYPES)
    # finalize checked the gateway's engine against the training model
    assert head.meta["engine_check"]["decisions_changed"] == 0
    assert head.meta["out_of_fold"]["accuracy"] > 0.98


def test_settings_validation():
    from mailmoat.errors import ConfigError

    with pytest.raises(ConfigError):
        make_config(deep={"mode": "sometimes"}).section("deep", DeepSettings)
    with pytest.raises(ConfigError):
        make_config(deep={"timeout_ms": 1}).section("deep", DeepSettings)


def test_event_loop_unused_by_encoder(model_future, monkeypatch):
    # The model runs in its own worker thread: the loop can serve other work meanwhile.
    # Timing-free (a sleep-based ticker missed a fast encode now and then): the encoder,
    # once started, waits for the loop to serve a ticker, which the loop can only do if the
    # encoder is not running on its own thread.
    import threading

    model = model_future.result()
    started, served, saw_loop_free = threading.Event(), threading.Event(), []
    score = model.score

    def score_once_the_loop_is_free(*args, **kwargs):
        started.set()
        saw_loop_free.append(served.wait(timeout=5))
        return score(*args, **kwargs)

    monkeypatch.setattr(model, "score", score_once_the_loop_is_free)

    async def main() -> None:
        async def ticker() -> None:
            while True:
                if started.is_set():
                    served.set()
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        await check(model_future).run(msg(HAM * 3), result_with(0.5))
        t.cancel()

    asyncio.run(main())
    assert saw_loop_free == [True]


async def test_onnx_engine_with_a_missing_graph_says_why(tmp_path):
    pytest.importorskip("onnxruntime")
    outcome = await scan_bytes(make_email(), make_config(deep={
        "mode": "all", "engine": "onnx", "onnx_path": str(tmp_path / "nope.onnx"),
        "timeout_ms": 3000}))
    fail = outcome.result.get("DEEP_FAIL")
    assert fail is not None and "nope.onnx" in fail.reason


async def test_short_text_gets_no_vote(model_future):
    # The corpora hold almost no ham this short, so the model would call it spam.
    c = check(model_future)
    r = result_with(0.5)
    await c.run(msg("See you at noon.", "Lunch"), r)
    assert not [s for s in r.symbols if s.name.startswith("DEEP_")]
    assert r.facts.deep is None
    # the limit is a setting; 0 scores everything
    r = result_with(0.5)
    await check(model_future, min_tokens=0).run(msg("See you at noon.", "Lunch"), r)
    assert r.facts.deep is not None


def test_reasons_keep_the_digits_near_certainty():
    assert deep._pct(0.5) == "50%" and deep._pct(0.97) == "97%" and deep._pct(0.9995) == "99.95%"
    assert deep._pct(0.9991) == "99.91%" and deep._pct(0.004) == "0.4%"
    assert deep._pct(1.0) == "over 99.99%" and deep._pct(0.0) == "under 0.01%"


def test_combined_probability_is_the_mean_of_the_tiers_log_odds():
    assert deep.combined_bad(0.5, 0.5) == pytest.approx(0.5)
    assert deep.combined_bad(0.9, 0.1) == pytest.approx(0.5)  # opposite and equally sure
    assert deep.combined_bad(0.9, 0.9) == pytest.approx(0.9)
    # odds 9 and 1/3: geometric mean sqrt(3), so P = sqrt(3) / (1 + sqrt(3))
    assert deep.combined_bad(0.9, 0.25) == pytest.approx(3 ** 0.5 / (1 + 3 ** 0.5))
    # one tier's extreme certainty is clipped, so the other's firm doubt still counts
    assert deep.combined_bad(1 - 1e-12, 1e-3) < 0.98 < deep.combined_bad(1 - 1e-12, 0.5)
    # spam vs phish keeps the proportion of both tiers' summed probabilities
    spam, phish = deep.combined_probabilities(0.1, 0.8, 0.3, 0.6)
    assert spam + phish == pytest.approx(deep.combined_bad(0.9, 0.9))
    assert phish / (spam + phish) == pytest.approx(1.4 / 1.8)


def test_mean_adjustment_turns_tier_ones_score_into_the_combined_one():
    from mailmoat.ml.scoring import content_score

    # tier 1 at 0.95 (CONTENT_SPAM_MEDIUM, +7), tier 2 at 0.05: together 0.50 earn nothing
    assert deep.mean_adjustment(0.95, 0.0, 0.05, 0.0) == ("DEEP_MEAN_LOWERS", 7.0)
    # tier 1 unsure at 0.60 (nothing), tier 2 at 0.99: together 0.92 earn MEDIUM (+7)
    assert deep.mean_adjustment(0.0, 0.6, 0.0, 0.99) == ("DEEP_MEAN_RAISES", 7.0)
    assert deep.mean_adjustment(0.5, 0.0, 0.5, 0.0) is None
    for t1, t2 in ((0.999, 0.2), (0.3, 0.97), (0.01, 0.6), (0.91, 0.99)):
        name, factor = deep.mean_adjustment(t1, 0.0, t2, 0.0) or ("", 0.0)
        delta = SYMBOLS[name].weight * factor if name else 0.0
        both = deep.combined_probabilities(t1, 0.0, t2, 0.0)
        assert content_score(t1, 0.0) + delta == pytest.approx(content_score(*both))


async def test_combine_mean_replaces_the_vote_with_the_consensus(model_future):
    r = result_with(0.95)  # tier 1: ham 0.05, spam 0.95, phish 0
    await check(model_future, mode="all", combine="mean").run(msg(HAM, "Release checklist"), r)
    (sym,) = r.symbols  # no DEEP_HAM vote on top
    assert sym.name == "DEEP_MEAN_LOWERS" and sym.score < 0
    assert "together" in sym.reason and "instead of 7" in sym.reason
    assert "the content model as 95%" in sym.reason
    # that is the default: the same message under default settings gets the same symbol
    r3 = result_with(0.95)
    await check(model_future).run(msg(HAM, "Release checklist"), r3)
    assert [(x.name, x.score) for x in r3.symbols] == [(sym.name, sym.score)]
    # without tier 1's reading there is nothing to average: the vote
    r2 = result_with(None)
    await check(model_future, combine="mean", when_no_tier1="run").run(
        msg(PHISH, "Mailbox storage alert"), r2)
    assert r2.symbols[0].name in ("DEEP_PHISH", "DEEP_SPAM")


def test_a_forked_child_gets_its_own_model_thread():
    """The executor's thread does not survive a fork; a child must not queue tier-2 work on
    a thread that does not exist (it would wait out every message's budget)."""
    import os

    from mailmoat.scan import deep

    deep._EXECUTOR.submit(lambda: None).result(timeout=5)  # the parent's thread exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether a job runs, then leave at once
        try:
            ok = deep._EXECUTOR.submit(lambda: 42).result(timeout=5) == 42
        except Exception:
            ok = False
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    answer = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert answer == b"1"
