"""`unlearn`: taking back one lesson (its weight change and its lesson-memory entry)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import time

import numpy as np
import pytest

from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.ml import delivered
from mailmoat.ml import learn as learn_mod
from mailmoat.ml.features import N_FEATURES_BITS, extract, vectorize
from mailmoat.ml.learn import (
    LessonFilter,
    delta_path,
    expire_lessons,
    learn,
    model_dir,
    read_audit,
    read_delta,
    unlearn,
)
from mailmoat.ml.lessons import lessons_path
from mailmoat.ml.lessons import read as read_lessons
from tests.conftest import mailmoat_cmd, make_config, make_email, scan_bytes, subprocess_env
from tests.ml import synth

ZORBEX = make_email(subject="Zorbex crystal healing", body="Zorbex crystals heal every ailment. "
                    "Order zorbex today and feel the crystal energy, zorbex guaranteed!",
                    sender="Zorbex <sales@zorbex-shop.test>")
QUILTOP = make_email(subject="Quiltop herbal tea", body="Quiltop tea soothes aches. "
                     "Brew quiltop leaves tonight for herbal calm, quiltop promised!",
                     sender="Quiltop <hello@quiltop-tea.test>")


def _vector(raw: bytes) -> np.ndarray:
    return vectorize(extract(parse_message(raw, Envelope(mail_from="", rcpt_tos=()))),
                     N_FEATURES_BITS)[0]


def _with_sample(tmp_path, **content):
    """A deployment that has sampled enough delivered mail for reports to move words."""
    cfg = make_config(storage={"data_dir": str(tmp_path)}, content=content)
    rng = random.Random(5)
    sample = delivered.sample_path(model_dir(cfg))
    for i in range(learn_mod.MIN_COUNTER_EXAMPLES):
        delivered.append(sample, _vector(synth.message("ham", rng, i)))
    return cfg


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


async def _p_bad(raw: bytes, cfg) -> float:
    return float((await scan_bytes(raw, cfg)).result.facts.content.p_bad)


async def test_unlearn_takes_back_one_lesson_and_keeps_the_other(tmp_path):
    cfg = _with_sample(tmp_path)
    before = await _p_bad(ZORBEX, cfg)
    assert learn(cfg, ZORBEX, "spam", actor="a").steps > 0
    rows_a, _ = read_delta(delta_path(cfg))
    b = learn(cfg, QUILTOP, "spam", actor="a")
    assert b.steps > 0
    with_both = await _p_bad(QUILTOP, cfg)

    r = unlearn(cfg, _sha(ZORBEX), actor="admin")
    assert (r.changes, r.lessons) == (1, 1) and r.rows == len(rows_a)
    # Zorbex reads as it did before any lesson (no weight, no near-copy match) ...
    assert await _p_bad(ZORBEX, cfg) == pytest.approx(before, abs=1e-6)
    assert (await scan_bytes(ZORBEX, cfg)).result.get("LEARNED_SPAM") is None
    # ... and the other lesson keeps exactly what it moved.
    assert await _p_bad(QUILTOP, cfg) == pytest.approx(with_both, abs=1e-6)
    assert (await scan_bytes(QUILTOP, cfg)).verdict.action.value != "accept"
    rows, _ = read_delta(delta_path(cfg))
    assert len(rows) and not np.isin(rows, rows_a).any()
    assert read_lessons(lessons_path(delta_path(cfg)), N_FEATURES_BITS).sha256 == [_sha(QUILTOP)]
    last = read_audit(cfg)[-1]
    assert last["undo"] is True and last["which"]["sha256"] == _sha(ZORBEX)
    assert last["messages"] == [_sha(ZORBEX)] and last["actor"] == "admin"

    # Taken back already: nothing left to take back.
    with pytest.raises(LookupError):
        unlearn(cfg, _sha(ZORBEX))
    # The last lesson taken back: no delta file is left, the model is the bundled one.
    unlearn(cfg, _sha(QUILTOP))
    assert not delta_path(cfg).exists()
    assert not list((delta_path(cfg).parent / learn_mod.CHANGES_DIR).iterdir())


async def test_unlearn_of_a_lesson_that_moved_no_weight(tmp_path):
    # No delivered mail sampled: a report (here, a mistaken one) is only remembered whole
    # (steps 0), and its near-copies are raised by the lesson memory.
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    club = make_email(subject="Garden club: tulip planting on Saturday",
                      body="Hello members, this week we plant tulip bulbs in the community "
                      "garden. Bring gloves; the seed swap follows.",
                      sender="Garden Club <news@gardenclub.test>")
    assert (await scan_bytes(club, cfg)).verdict.action.value == "accept"
    assert learn(cfg, club, "spam").steps == 0
    assert (await scan_bytes(club, cfg)).result.get("LEARNED_SPAM") is not None
    r = unlearn(cfg, _sha(club))
    assert (r.changes, r.lessons, r.rows) == (0, 1, 0)
    after = await scan_bytes(club, cfg)
    assert after.result.get("LEARNED_SPAM") is None and after.verdict.action.value == "accept"


async def test_unlearn_everything_an_account_taught(tmp_path):
    """An account that reported good mail as spam (careless, or taken over to poison the
    filter): everything it taught goes, what others taught stays."""
    cfg = _with_sample(tmp_path)
    club = make_email(subject="Garden club: tulip planting on Saturday",
                      body="Hello members, this week we plant tulip bulbs in the community "
                      "garden. Bring gloves; the seed swap follows.",
                      sender="Garden Club <news@gardenclub.test>")
    before = await _p_bad(club, cfg)
    learn(cfg, club, "spam", actor="mallory@example.test")
    learn(cfg, ZORBEX, "spam", actor="mallory@example.test")
    learn(cfg, QUILTOP, "spam", actor="alice@example.test")
    assert (await scan_bytes(club, cfg)).verdict.action.value != "accept"
    with_alice = await _p_bad(QUILTOP, cfg)

    r = unlearn(cfg, LessonFilter(taught_by="mallory@example.test"), actor="admin")
    assert sorted(r.messages) == sorted([_sha(club), _sha(ZORBEX)]) and r.lessons == 2
    assert await _p_bad(club, cfg) == pytest.approx(before, abs=1e-6)
    assert (await scan_bytes(club, cfg)).verdict.action.value == "accept"
    assert await _p_bad(QUILTOP, cfg) == pytest.approx(with_alice, abs=1e-6)
    mem = read_lessons(lessons_path(delta_path(cfg)), N_FEATURES_BITS)
    assert mem.actors == ["alice@example.test"]

    # Lessons older than a time: none of alice's is older than 2000, all are before 2100.
    with pytest.raises(LookupError):
        unlearn(cfg, LessonFilter(taught_before="2000-01-01"))
    assert unlearn(cfg, LessonFilter(taught_before="2100-01-01")).messages == [_sha(QUILTOP)]
    assert not delta_path(cfg).exists()


def test_old_lessons_expire_in_every_scope(tmp_path):
    cfg = _with_sample(tmp_path)
    learn(cfg, ZORBEX, "spam")
    learn(cfg, QUILTOP, "spam", domain="example.test")
    assert expire_lessons(cfg, 0) == 0  # 0: kept until taken back by hand
    assert expire_lessons(cfg, 30) == 0  # taught just now: not 30 days old
    assert expire_lessons(cfg, 30, now=time.time() + 31 * 86400) == 2
    assert not delta_path(cfg).exists() and not delta_path(cfg, "example.test").exists()
    assert read_audit(cfg)[-1]["actor"] == "retention"


async def test_the_gateways_retention_purge_expires_lessons(tmp_path):
    from mailmoat.app import build

    # 1e-5 days is under a second: the lesson below is past it once the clock has ticked.
    cfg = _with_sample(tmp_path, lesson_max_age_days=1e-5)
    learn(cfg, ZORBEX, "spam")
    gw = build(cfg)
    try:
        await asyncio.sleep(2.0)  # lesson times have whole seconds: the cutoff must pass one
        await gw.purge()
    finally:
        await gw.stop()
    assert not delta_path(cfg).exists()
    assert read_lessons(lessons_path(delta_path(cfg)), N_FEATURES_BITS).sha256 == []


def test_unlearn_is_per_scope_and_checks_its_argument(tmp_path):
    cfg = _with_sample(tmp_path)
    learn(cfg, ZORBEX, "spam", domain="example.test")
    with pytest.raises(LookupError):
        unlearn(cfg, _sha(ZORBEX))  # the global scope learned nothing about it
    assert unlearn(cfg, _sha(ZORBEX), domain="example.test").changes == 1
    assert not delta_path(cfg, "example.test").exists()
    with pytest.raises(ValueError):
        unlearn(cfg, "not-a-hash")
    with pytest.raises(ValueError):
        LessonFilter()  # no criterion: would take back everything by accident
    with pytest.raises(ValueError):
        LessonFilter(taught_before="last tuesday")
    assert LessonFilter(taught_before="2026-11-01").taught_before == "2026-11-01T00:00:00Z"
    assert LessonFilter(taught_before="2026-11-01T13:00:00+01:00").taught_before == "2026-11-01T12:00:00Z"


def test_unlearn_cli(tmp_path):
    f = tmp_path / "z.eml"
    f.write_bytes(ZORBEX)
    cfgp = tmp_path / "mailmoat.toml"
    cfgp.write_text(f'[storage]\ndata_dir = "{tmp_path / "var"}"\n[scan]\nnetwork = false\n',
                    encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(mailmoat_cmd(*args), env=subprocess_env(), capture_output=True,
                              text=True, timeout=60, check=False)

    learned = run("learn", "--spam", "--config", str(cfgp), str(f))
    assert learned.returncode == 0 and _sha(ZORBEX) in learned.stdout
    undone = run("unlearn", "--config", str(cfgp), _sha(ZORBEX))
    assert undone.returncode == 0, undone.stderr
    assert "1 lesson-memory entry dropped" in undone.stdout
    run("learn", "--spam", "--actor", "mallory", "--config", str(cfgp), str(f))
    by = run("unlearn", "--taught-by", "mallory", "--config", str(cfgp))
    assert by.returncode == 0 and "(1 message(s))" in by.stdout, by.stderr
    nothing = run("unlearn", "--config", str(cfgp))
    assert nothing.returncode == 2 and "say which lessons" in nothing.stderr
    again = run("unlearn", "--config", str(cfgp), _sha(ZORBEX))
    assert again.returncode == 2 and "no lesson" in again.stderr
