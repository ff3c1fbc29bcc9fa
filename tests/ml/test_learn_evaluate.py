"""Online learning (delta + audit) and the train/evaluate/learn commands."""

from __future__ import annotations

import hashlib
import json
import subprocess

from mailmoat.ml.learn import delta_path, learn, read_audit
from mailmoat.ml.model import bundled_model_path
from tests.conftest import mailmoat_cmd, make_config, make_email, scan_bytes, subprocess_env
from tests.ml.synth import make_corpus

NEWSLETTER = make_email(
    subject="Your weekly garden club newsletter",
    body=("Hello members,\n\nthis week we plant tulip bulbs in the community garden. Bring "
          "gloves. The seed swap is on Saturday.\n\nSee you there,\nthe garden club\n"),
    sender="Garden Club <news@gardenclub.test>")


async def test_learn_moves_the_score_and_writes_the_audit(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    bundled_before = hashlib.sha256(bundled_model_path().read_bytes()).hexdigest()
    before = (await scan_bytes(NEWSLETTER, cfg)).result.annotations["ml_spam_probability"]

    r = learn(cfg, NEWSLETTER, "spam", actor="admin@example.test")
    assert r.steps > 0 and r.after["spam"] > r.before["spam"] and r.after["spam"] >= 0.9
    after = (await scan_bytes(NEWSLETTER, cfg)).result.annotations["ml_spam_probability"]
    assert after > before and after >= 0.9
    assert delta_path(cfg).exists()
    assert hashlib.sha256(bundled_model_path().read_bytes()).hexdigest() == bundled_before

    audit = read_audit(cfg)
    assert audit[-1]["sha256"] == hashlib.sha256(NEWSLETTER).hexdigest()
    assert audit[-1]["label"] == "spam" and audit[-1]["actor"] == "admin@example.test"

    # Release and report as not spam: the lesson is undone for this message.
    learn(cfg, NEWSLETTER, "ham", actor="admin@example.test")
    again = (await scan_bytes(NEWSLETTER, cfg)).result.annotations["ml_spam_probability"]
    assert again < 0.1
    assert len(read_audit(cfg)) == 2


async def test_per_domain_lesson_applies_only_to_that_domain(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    base = (await scan_bytes(NEWSLETTER, cfg, rcpts=("eve@other.test",))).result.annotations
    learn(cfg, NEWSLETTER, "spam", actor="t", domain="example.test")
    mine = await scan_bytes(NEWSLETTER, cfg, rcpts=("bob@example.test",))
    other = await scan_bytes(NEWSLETTER, cfg, rcpts=("eve@other.test",))
    assert mine.result.annotations["ml_spam_probability"] >= 0.9
    assert other.result.annotations["ml_spam_probability"] == base["ml_spam_probability"]
    assert not delta_path(cfg).exists()


async def test_lesson_teaches_the_sender_not_the_words(tmp_path):
    """A report moves the sender's (and links') domains only: the same words from another
    sender are judged as before, another message from the reported sender is not."""
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    same_words = make_email(subject="Your weekly garden club newsletter",
                            body=NEWSLETTER.split(b"\n\n", 1)[1].decode(),
                            sender="Garden Friends <hello@tulipfriends.test>")
    same_sender = make_email(subject="Minutes of the annual meeting",
                             body="The treasurer presented the accounts; the board was re-elected.",
                             sender="Garden Club <news@gardenclub.test>")

    async def p(raw: bytes) -> float:
        return (await scan_bytes(raw, cfg)).result.annotations["ml_spam_probability"]

    before_words, before_sender = await p(same_words), await p(same_sender)
    learn(cfg, NEWSLETTER, "spam", actor="t")
    assert await p(NEWSLETTER) >= 0.9
    assert await p(same_words) == before_words
    assert await p(same_sender) > before_sender + 0.3


async def test_lesson_about_a_freemail_sender_without_links_teaches_nothing(tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    note = make_email(subject="lunch?", body="Are you free for lunch on Friday? Bob",
                      sender="Bob <bob.smith@gmail.com>")
    r = learn(cfg, note, "spam", actor="t")
    assert r.steps == 0 and r.after == r.before
    assert not delta_path(cfg).exists()
    assert read_audit(cfg)[-1]["steps"] == 0  # the lesson is still on record


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
