"""Online learning (delta + audit) and the train/evaluate/learn commands."""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess

import pytest

import numpy as np

from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.ml import delivered
from mailmoat.ml import learn as learn_mod
from mailmoat.ml.features import N_FEATURES_BITS, extract, vectorize
from mailmoat.ml.learn import LESSON_LOGIT_CAP, delta_path, learn, model_dir, read_audit, read_delta
from mailmoat.ml.model import bundled_model_path
from tests.conftest import mailmoat_cmd, make_config, make_email, scan_bytes, subprocess_env
from tests.ml import synth
from tests.ml.synth import make_corpus

NEWSLETTER = make_email(
    subject="Your weekly garden club newsletter",
    body=("Hello members,\n\nthis week we plant tulip bulbs in the community garden. Bring "
          "gloves. The seed swap is on Saturday.\n\nSee you there,\nthe garden club\n"),
    sender="Garden Club <news@gardenclub.test>")


PHARMACY = ("Cheap meds online! Buy viagra, cialis and other pills at our online pharmacy "
            "with no prescription needed. Lowest prices, discreet shipping worldwide, order now "
            "and save 80 percent on all medications.")


async def test_report_is_audited_and_catches_the_message_again(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    bundled_before = hashlib.sha256(bundled_model_path().read_bytes()).hexdigest()
    first = await scan_bytes(NEWSLETTER, cfg)
    assert first.verdict.action.value == "accept"

    r = learn(cfg, NEWSLETTER, "spam", actor="admin@example.test")
    # With no delivered mail sampled yet a report moves no weight (it cannot tell the
    # words of good mail from the spam's); it is remembered whole.
    assert r.steps == 0 and r.after == r.before and not delta_path(cfg).exists()
    assert r.taught == () and read_audit(cfg)[-1]["taught"] == []
    again = await scan_bytes(NEWSLETTER, cfg)
    assert again.result.get("LEARNED_SPAM") is not None and again.verdict.action.value != "accept"
    assert hashlib.sha256(bundled_model_path().read_bytes()).hexdigest() == bundled_before

    audit = read_audit(cfg)
    assert audit[-1]["sha256"] == hashlib.sha256(NEWSLETTER).hexdigest()
    assert audit[-1]["label"] == "spam" and audit[-1]["actor"] == "admin@example.test"

    # Released and reported as not spam after all: the newer lesson wins for its copies.
    learn(cfg, NEWSLETTER, "ham", actor="admin@example.test")
    assert (await scan_bytes(NEWSLETTER, cfg)).verdict.action.value == "accept"
    assert len(read_audit(cfg)) == 2


def _vector(raw: bytes) -> np.ndarray:
    msg = parse_message(raw, Envelope(mail_from="", rcpt_tos=()))
    return vectorize(extract(msg), N_FEATURES_BITS)[0]


async def test_report_teaches_only_words_that_delivered_good_mail_does_not_use(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    rng = random.Random(3)
    sample = delivered.sample_path(model_dir(cfg))
    good = [synth.message("ham", rng, i) for i in range(learn_mod.MIN_COUNTER_EXAMPLES)]
    good.append(make_email(subject="Order of the day", body="Please order the lunch for the "
                           "team meeting today; the budget is in the shared report.",
                           sender="Ann <ann@work.test>"))
    for raw in good:
        delivered.append(sample, _vector(raw))
    spam = make_email(subject="Zorbex crystal healing", body="Zorbex crystals heal every "
                      "ailment. Order zorbex today and feel the crystal energy, zorbex "
                      "guaranteed!", sender="Zorbex <sales@zorbex-shop.test>")
    variant = make_email(subject="New zorbex crystals", body="The zorbex crystal energy is "
                         "back in stock.", sender="Shop <x@another-shop.test>")

    async def p_bad(raw: bytes) -> float:
        return float((await scan_bytes(raw, cfg)).result.facts.content.p_bad)

    before_good = [await p_bad(raw) for raw in good[-3:]]
    before_variant = await p_bad(variant)
    r = learn(cfg, spam, "spam", actor="t")
    assert r.steps > 0 and r.after["spam"] > r.before["spam"]
    # The audit says what was taught, in words: the campaign's, none that good mail uses.
    taught = {w.strip("'") for _, w, _ in r.taught}
    assert "zorbex" in taught and not taught & {"order", "today"}
    assert all(v > 0 for _, _, v in r.taught)
    assert read_audit(cfg)[-1]["taught"] == [list(t) for t in r.taught]
    rows, _ = read_delta(delta_path(cfg))
    used = np.unique(np.concatenate([_vector(raw) for raw in good]))
    # Nothing good mail uses moved ("order", "today", the sender is never blamed) ...
    assert not np.isin(rows, used).any()
    assert [await p_bad(raw) for raw in good[-3:]] == before_good
    # ... and what did move reaches the campaign's next variant from another sender.
    assert await p_bad(variant) > before_variant

    # Sampling turned off: what an earlier sample holds no longer licenses word learning.
    off = make_config(storage={"data_dir": str(tmp_path)},
                      content={"delivered_sample_rate": 0})
    assert learn(off, variant, "spam", actor="t").steps == 0


def test_what_a_report_may_move():
    own = {"example.test"}
    assert [learn_mod._movable(t, "spam", own) for t in (
        "w:zorbex", "w:b:crystal energy", "s:zorbex", "w:c:中文", "ud:zorbex.test", "up:promo",
    )] == [True] * 6
    # Never the sender, a single CJK character, the subject's spelling fragments, the
    # structure, or links to our own domains.
    assert not any(learn_mod._movable(t, "spam", own) for t in (
        "fd:zorbex.test", "w:c:中", "sc:zor", "ct:multipart/alternative", "ud:example.test"))
    assert learn_mod._movable("fd:zorbex.test", "ham", own)
    assert not learn_mod._movable("w:zorbex", "ham", own)
    # A release credits one tenant of a hosting suffix, never the suffix many unrelated
    # senders share: the features read corp.onmicrosoft.com as its own domain.
    for host in ("corp.onmicrosoft.com", "myblog.github.io"):
        msg = parse_message(make_email(sender=f"A <a@{host}>"), Envelope("", ()))
        assert "fd:" + host in extract(msg).meta
        assert learn_mod._movable("fd:" + host, "ham", own)
    for suffix in ("onmicrosoft.com", "github.io"):
        assert not learn_mod._movable("fd:" + suffix, "ham", own)


async def test_report_moves_no_words_of_released_mail(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    rng = random.Random(4)
    sample = delivered.sample_path(model_dir(cfg))
    for i in range(learn_mod.MIN_COUNTER_EXAMPLES):
        delivered.append(sample, _vector(synth.message("ham", rng, i)))
    newsletter = make_email(subject="Zorbex club news", body="The zorbex club meets on "
                            "Friday; crystal workshop at noon.", sender="Club <c@club.test>")
    learn(cfg, newsletter, "ham", actor="t")  # released from the quarantine
    spam = make_email(subject="Zorbex crystal healing", body="Zorbex crystals heal every "
                      "ailment, zorbex guaranteed!", sender="Zorbex <sales@zorbex-shop.test>")
    learn(cfg, spam, "spam", actor="t")
    rows, _ = read_delta(delta_path(cfg))
    assert not np.isin(rows, _vector(newsletter)).any()


async def test_release_teaches_the_sender_by_one_vote_and_not_the_words(tmp_path):
    """A release credits the sender's domain, by at most one logit per lesson; the same words
    from another sender are judged as before (by the model: the lesson memory is apart)."""
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    released = make_email(subject="This week's offers", body=PHARMACY,
                          sender="Pharmacy News <news@pharma-one.test>")
    same_sender = make_email(subject="Opening hours", body="Our shop is closed on Monday for "
                             "the holiday; orders placed online ship on Tuesday.",
                             sender="Pharmacy News <news@pharma-one.test>")
    same_words = make_email(subject="This week's offers", body=PHARMACY,
                            sender="Deals <deals@other-shop.test>")

    async def logit(raw: bytes) -> float:
        p = (await scan_bytes(raw, cfg)).result.facts.content.p_bad
        return math.log(p / (1 - p))

    before_sender, before_words = await logit(same_sender), await logit(same_words)
    r = learn(cfg, released, "ham", actor="t")
    assert r.steps > 0 and r.after["ham"] > r.before["ham"]
    moved = before_sender - await logit(same_sender)
    assert 0.2 < moved <= 2 * LESSON_LOGIT_CAP + 1e-6  # one vote: each class logit ≤ cap
    assert await logit(same_words) == pytest.approx(before_words)


async def test_lesson_about_a_freemail_sender_teaches_no_weight(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    note = make_email(subject="lunch?", body="Are you free for lunch on Friday? Bob",
                      sender="Bob <bob.smith@gmail.com>")
    r = learn(cfg, note, "ham", actor="t")
    assert r.steps == 0 and r.after == r.before
    assert not delta_path(cfg).exists()
    assert read_audit(cfg)[-1]["steps"] == 0  # the lesson is still on record


async def test_per_domain_lesson_applies_only_to_that_domain(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    released = make_email(subject="This week's offers", body=PHARMACY,
                          sender="Pharmacy News <news@pharma-one.test>")
    base = (await scan_bytes(released, cfg, rcpts=("eve@other.test",))).result.facts.content
    learn(cfg, released, "ham", actor="t", domain="example.test")
    mine = await scan_bytes(released, cfg, rcpts=("bob@example.test",))
    other = await scan_bytes(released, cfg, rcpts=("eve@other.test",))
    assert mine.result.facts.content.p_bad < base.p_bad
    assert other.result.facts.content.p_bad == base.p_bad
    assert not delta_path(cfg).exists()


def test_learn_rejects_unknown_label(tmp_path):
    import pytest

    with pytest.raises(ValueError):
        learn(make_config(storage={"data_dir": str(tmp_path)}), NEWSLETTER, "eggs")


def _write_config(tmp_path):
    p = tmp_path / "mailmoat.toml"
    p.write_text(f'[storage]\ndata_dir = "{tmp_path / "var"}"\n[scan]\nnetwork = false\n', encoding="utf-8")
    return p


def test_learn_cli(tmp_path):
    f = tmp_path / "n.eml"
    f.write_bytes(NEWSLETTER)
    cfgp = _write_config(tmp_path)
    r = subprocess.run(mailmoat_cmd("learn", "--spam", "--config", str(cfgp), str(f)),
                       env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "learned 1 message(s) as spam" in r.stdout
    lines = (tmp_path / "var" / "model" / "learn-audit.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["label"] == "spam"
    bad = subprocess.run(mailmoat_cmd("learn", "--spam", "--ham", str(f)), env=subprocess_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "exactly one" in bad.stderr


def test_evaluate_cli_prints_metrics(tmp_path):
    root = make_corpus(tmp_path / "c", n=6, labels=("ham", "spam"))
    out_json = tmp_path / "res.json"
    r = subprocess.run(mailmoat_cmd("evaluate", "--ham", str(root / "ham"), "--spam", str(root / "spam"),
                                    "--tier1-only", "--config", str(_write_config(tmp_path)),
                                    "--json", str(out_json)),
                       env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for word in ("accuracy", "FP rate", "FN rate", "phish recall", "ROC AUC", "messages/second", "**overall**"):
        assert word in r.stdout
    res = json.loads(out_json.read_text())
    assert res["overall"]["ham"] == 6 and res["overall"]["spam"] == 6


def test_train_cli_writes_model_and_report(tmp_path):
    root = make_corpus(tmp_path / "c", n=25)
    out = tmp_path / "m.npz"
    r = subprocess.run(mailmoat_cmd("train", "--corpus", str(root), "--out", str(out), "--cache", "none"),
                       env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "grouped 20% hold-out" in r.stdout and "ROC AUC" in r.stdout
    assert out.exists() and "model written" in r.stdout
