"""The lesson memory: near-copies of reported or released mail, and only those."""

from __future__ import annotations

import numpy as np

from mailmoat.ml import lessons
from mailmoat.ml.learn import delta_path, learn
from mailmoat.ml.lessons import Match, adjustment, lessons_path, read, remember
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

PUMP = ("Dear investor, shares of Greenleaf Biotech (GRLB) are about to explode after the FDA "
        "news this week. Analysts expect the stock to triple before Friday. Buy now while it "
        "trades under one dollar and watch your portfolio grow. This is the opportunity of the "
        "year, act today before the market opens.")


def pump(sender: str, greeting: str = "Dear investor") -> bytes:
    return make_email(subject="GRLB alert: the opportunity of the year",
                      body=PUMP.replace("Dear investor", greeting), sender=sender)


def content_score(outcome) -> float:
    return sum(s.score for s in outcome.result.symbols if s.group in ("content", "deep"))


async def test_reported_spam_catches_its_near_copies_from_other_senders(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)}, deep={"mode": "off"})
    reported = pump("Stock Tips <tips@alerts-one.test>")
    learn(cfg, reported, "spam", actor="alice@example.test")
    # The next wave: another sending domain, a changed greeting; same campaign.
    copy = await scan_bytes(pump("Market Desk <desk@news-two.test>", "Hello friend"), cfg)
    sym = copy.result.get("LEARNED_SPAM")
    assert sym is not None and content_score(copy) + sym.score >= lessons.SPAM_FLOOR
    assert copy.verdict.action.value != "accept"
    assert "reported as spam" in sym.reason and "alice@example.test" in sym.reason
    # Unrelated mail is untouched.
    other = await scan_bytes(make_email(subject="Minutes", body="The board met on Tuesday "
                                        "and approved the budget for the garden project."), cfg)
    assert not symbol_names(other) & {"LEARNED_SPAM", "LEARNED_HAM", "LEARNED_PHISH"}


PHARMACY = ("Cheap meds online! Buy viagra, cialis and other pills at our online pharmacy "
            "with no prescription needed. Lowest prices, discreet shipping worldwide, order now "
            "and save 80 percent on all medications.")


async def test_released_mail_withdraws_the_content_verdict_for_its_copies(tmp_path):
    # A (legitimate, say) pharmacy newsletter the model flags; released as not spam, its
    # next issue from another sending domain gets its content verdict withdrawn.
    cfg = make_config(storage={"data_dir": str(tmp_path)}, deep={"mode": "off"})
    issue1 = make_email(subject="This week's offers", body=PHARMACY,
                        sender="Pharmacy News <news@pharma-one.test>")
    before = await scan_bytes(issue1, cfg)
    assert content_score(before) > 0  # the model reads it as spam
    learn(cfg, issue1, "ham", actor="admin")
    issue2 = make_email(subject="This week's offers", body=PHARMACY.replace("80", "75"),
                        sender="Pharmacy News <news@pharma-mailer.test>")
    again = await scan_bytes(issue2, cfg)
    sym = again.result.get("LEARNED_HAM")
    assert sym is not None and "released as not spam" in sym.reason
    assert content_score(again) > 0 and content_score(again) + sym.score == 0


def test_memory_keeps_the_newest_and_finds_the_nearest(tmp_path, monkeypatch):
    monkeypatch.setattr(lessons, "MAX_LESSONS", 3)
    path = tmp_path / "lessons.npz"
    for k in range(5):
        remember(path, np.array([k, 100 + k, 200]), np.array([1.0, 1.0, 0.2]), 10, "spam",
                 f"sha{k}", "2026-11-28", "t")
    mem = read(path, 10)
    assert mem.sha256 == ["sha2", "sha3", "sha4"]
    hit = mem.nearest(np.array([4, 104, 200]), np.array([0.5, 0.5, 0.1]))
    assert hit is not None and hit.sha256 == "sha4" and hit.similarity == 1.0
    assert mem.nearest(np.array([0, 100]), np.array([1.0, 1.0])) is None  # forgotten
    assert mem.nearest(np.array([7, 8]), np.array([1.0, 1.0])) is None  # nothing similar


def test_adjustment_raises_to_the_floor_and_withdraws():
    spam = Match(0.9, "spam", "s", "t", "a")
    assert adjustment(spam, 3.0) == ("LEARNED_SPAM", 4.0)
    assert adjustment(spam, 12.0) is None  # already stricter than the floor
    assert adjustment(Match(0.9, "phish", "s", "t", "a"), -2.0) == ("LEARNED_PHISH", 9.0)
    ham = Match(0.9, "ham", "s", "t", "a")
    assert adjustment(ham, 7.0) == ("LEARNED_HAM", -7.0)
    assert adjustment(ham, -2.0) is None


def test_domain_lessons_stay_in_their_scope(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    learn(cfg, pump("Stock Tips <tips@alerts-one.test>"), "spam", actor="t", domain="example.test")
    assert lessons_path(delta_path(cfg, "example.test")).exists()
    assert not lessons_path(delta_path(cfg)).exists()


async def test_content_and_lessons_extract_the_features_once(tmp_path, monkeypatch):
    from mailmoat.ml import features

    cfg = make_config(storage={"data_dir": str(tmp_path)}, deep={"mode": "off"})
    learn(cfg, pump("Stock Tips <tips@alerts-one.test>"), "spam", actor="t")
    calls = []
    real = features.extract
    monkeypatch.setattr(features, "extract", lambda msg: calls.append(msg) or real(msg))
    out = await scan_bytes(pump("Market Desk <desk@news-two.test>"), cfg)
    assert out.result.get("LEARNED_SPAM") is not None  # both checks read the features
    assert len(calls) == 1
