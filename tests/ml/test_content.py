"""The tier-1 content check: trained on a tiny corpus made here, and the bundled model."""

from __future__ import annotations

import pytest

from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.ml.corpus import load_index, strip_path_headers
from mailmoat.ml.features import extract
from mailmoat.ml.model import ContentModel, bundled_model_path
from mailmoat.ml.train import TrainParams, train
from tests.conftest import make_config, make_email, scan_bytes, symbol_names
from tests.ml.synth import make_corpus

SPAM = make_email(
    subject="Cheap VIAGRA pills - limited offer, 80% discount",
    body=("Buy cheap viagra and cialis online from our pharmacy. Lowest prices guaranteed, "
          "no prescription needed. Limited time offer: order today and get free pills! "
          "Click here to order now: http://cheap-pills.example.biz/order\n"
          "To unsubscribe click here.\n"),
    html=("<html><body><p>Buy <b>cheap viagra</b> and cialis online from our pharmacy. "
          "No prescription needed!</p><a href='http://cheap-pills.example.biz/order'>"
          "CLICK HERE TO ORDER NOW</a></body></html>"),
    sender="Pharmacy Deals <deals@cheap-pills.example.biz>")

HAM = make_email(
    subject="Re: notes from Tuesday's design review",
    body=("Hi Bob,\n\nthanks for the notes. I went through the patch again and I think the "
          "locking change is fine, but the test for the retry path still fails on my machine "
          "when the network is slow. Could you take another look before we merge it?\n\n"
          "Also, are we still meeting on Thursday at 10 to go over the release plan?\n\n"
          "Cheers,\nAlice\n"),
    sender="Alice Smith <alice@sender.test>")

ZH_SPAM = make_email(
    subject="代开发票",
    body=("您好！本公司长期代开全国各地增值税发票、普通发票，税点优惠，保证真票，"
          "可先验票后付款。欢迎来电咨询：联系电话 13800000000 联系人：王经理\n"),
    sender="王经理 <fapiao@invoice.example.cn>")

ZH_HAM = make_email(
    subject="Re: 周末一起去爬山吗",
    body=("好啊，我周六上午有空。我们九点在学校东门见面吧，记得带上水和外套，山上可能会比较冷。"
          "你问问小李要不要一起去，上次他说也想去看看。\n"),
    sender="张伟 <zhangwei@mails.tsinghua.edu.cn>")


def test_chinese_text_gives_character_ngrams():
    f = extract(parse_message(ZH_HAM, Envelope("", ())))
    assert "w:c:爬" in f.text or "s:c:爬" in f.text
    assert "s:c:爬山" in f.text  # bigram of a CJK run, no segmenter needed


def test_domains_are_read_with_the_private_suffixes():
    """The tokens read domains as mailmoat.domains does: a site under a hosting suffix is its
    own domain, two such sites are two domains, and an IP literal is a bare-IP link."""
    raw = make_email(
        subject="Shared files", sender="Files <files@corp.onmicrosoft.com>",
        body="Open https://evil.github.io/login and https://docs.github.io/guide and "
             "http://203.0.113.7/x and https://www.example.co.uk/a\n")
    f = extract(parse_message(raw, Envelope("", ())))
    uds = [t for t in f.meta if t.startswith("ud:")]
    assert uds == ["ud:evil.github.io", "ud:docs.github.io", "ud:<ip>", "ud:example.co.uk"]
    assert "ud:github.io" not in f.meta and "fd:corp.onmicrosoft.com" in f.meta
    assert "utld:github.io" in f.meta and "utld:co.uk" in f.meta
    assert "u_ip" in f.meta and "203.0.113.7" in f.notes["u_ip"]


def test_path_headers_do_not_change_features():
    raw = make_email(subject="Invoice", body="Please find the invoice attached.",
                     headers={"Received": "from mx1.example.net by mx2", "X-MS-Exchange-Organization-SCL": "1",
                              "Authentication-Results": "mx; spf=pass", "ARC-Seal": "i=1; a=rsa-sha256"})
    env = Envelope("", ())
    a, b = extract(parse_message(raw, env)), extract(parse_message(strip_path_headers(raw), env))
    assert a.text == b.text and a.meta == b.meta
    assert b"Received:" not in strip_path_headers(raw) and b"Invoice" in strip_path_headers(raw)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("corpus"))
    samples = load_index(root)
    model, report = train(samples, TrainParams(), cache_dir=None)
    path = model.save(tmp_path_factory.mktemp("model") / "m.npz")
    return path, report


def test_training_reports_grouped_holdout(tiny_model):
    _, report = tiny_model
    assert report is not None and report["overall"]["n"] > 0
    assert report["overall"]["auc"] > 0.95


def test_training_records_its_messages_per_language(tiny_model):
    # The evidence gate reads these counts (scan/evidence.py): the synthetic corpus is
    # English, so every message is counted there or as too short to tell ("").
    from mailmoat.ml.model import ContentModel

    path, _ = tiny_model
    langs = ContentModel.load(path).meta["languages"]
    assert set(langs) <= {"en", ""} and langs["en"]["ham"] > 0
    n = sum(sum(by_class.values()) for by_class in langs.values())
    assert n == ContentModel.load(path).meta["n_train"]


async def test_check_emits_explained_symbols(tiny_model, tmp_path):
    path, _ = tiny_model
    cfg = make_config(content={"model_path": str(path)}, storage={"data_dir": str(tmp_path)})
    import random

    from tests.ml.synth import message

    spam = message("spam", random.Random(99), 999)
    out = await scan_bytes(spam, cfg)
    sym = next(s for s in out.result.symbols if s.name.startswith("CONTENT_SPAM"))
    assert sym.score > 0 and "spam-typical features" in sym.reason
    assert "'" in sym.reason  # quoted phrases of this message
    assert out.result.facts.content.p_bad > 0.7
    phish = await scan_bytes(message("phish", random.Random(98), 998), cfg)
    assert any(s.name.startswith("CONTENT_PHISH") for s in phish.result.symbols)
    assert phish.result.facts.content.p_phish > 0.5
    ham = await scan_bytes(message("ham", random.Random(97), 997), cfg)
    assert not any(s.name.startswith(("CONTENT_SPAM", "CONTENT_PHISH")) for s in ham.result.symbols)


def test_bundled_model_is_small_and_loads():
    p = bundled_model_path()
    assert p.exists() and p.stat().st_size < 8_000_000
    m = ContentModel.load(p)
    assert m.meta["corpora"] and m.classes == ("ham", "spam", "phish")


@pytest.mark.parametrize("raw,bad", [(SPAM, True), (HAM, False), (ZH_SPAM, True), (ZH_HAM, False)],
                         ids=["spam", "ham", "zh-spam", "zh-ham"])
async def test_bundled_model_separates_clear_cases(raw, bad, tmp_path):
    cfg = make_config(storage={"data_dir": str(tmp_path)})
    out = await scan_bytes(raw, cfg)
    p = out.result.facts.content.p_bad
    names = symbol_names(out)
    if bad:
        assert p > 0.9, (p, out.as_dict())
        assert any(n.startswith(("CONTENT_SPAM", "CONTENT_PHISH")) for n in names)
        assert out.verdict.action.value != "accept"
    else:
        assert p < 0.3, (p, out.as_dict())
        assert not any(n.startswith(("CONTENT_SPAM", "CONTENT_PHISH")) for n in names)
        assert out.verdict.action.value == "accept"


async def test_domain_bias_moves_the_probability(tmp_path):
    base = await scan_bytes(HAM, make_config(storage={"data_dir": str(tmp_path)}))
    cfg = make_config(storage={"data_dir": str(tmp_path)}, content={"domain_bias": {"example.test": 3.0}})
    biased = await scan_bytes(HAM, cfg)
    assert biased.result.facts.content.p_bad > base.result.facts.content.p_bad


async def test_link_text_mismatch_is_named_in_the_reason(tmp_path):
    raw = make_email(
        subject="Your account has been suspended - verify now",
        body="Dear customer, your PayPal account has been limited. Verify your identity "
             "within 24 hours or your account will be closed: https://www.paypal.com/verify\n",
        html=("<p>Dear customer, your PayPal account has been limited. Verify your identity "
              "within 24 hours or your account will be permanently closed.</p>"
              "<a href='http://203.0.113.7/paypal/login.php'>https://www.paypal.com/verify</a>"),
        sender="PayPal Service <service@paypa1-secure.example.top>")
    out = await scan_bytes(raw, make_config(storage={"data_dir": str(tmp_path)}))
    sym = next(s for s in out.result.symbols if s.name.startswith(("CONTENT_PHISH", "CONTENT_SPAM")))
    assert "link text shows www.paypal.com but points to 203.0.113.7" in sym.reason, sym.reason


def test_disabled_content_and_deep_checks_load_no_model(monkeypatch):
    """`[scan] disabled_checks` keeps a model family from loading at all (memory, start-up),
    not just from running."""
    from mailmoat.scan import content as content_family
    from mailmoat.scan import deep as deep_family
    from mailmoat.scan.base import BuildContext
    from mailmoat.scan.registry import build_checks

    def refuse(*_a, **_k):
        raise AssertionError("a disabled check loaded its model")

    monkeypatch.setattr(content_family, "ContentCheck", type(
        "Refuse", (content_family.ContentCheck,), {"__init__": refuse}))
    monkeypatch.setattr(deep_family.DeepModel, "preload", refuse)
    cfg = make_config(scan={"network": False, "disabled_checks": ["content", "deep"]})
    names = {c.name for c in build_checks(BuildContext(config=cfg, network=False))}
    assert {"gtube", "malformed"} <= names and not {"content", "deep"} & names
