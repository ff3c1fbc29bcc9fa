"""Engine selection, the ONNX graph built once and cached, the numpy fallback, and the
tokeniser's prefix cut (same word pieces as tokenising the whole text)."""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import pytest

from mailmoat.ml.deep import engine as eng
from mailmoat.ml.deep.encoder import CUT_CHARS_PER_TOKEN, MiniLMEncoder
from mailmoat.ml.deep.head import Head

TEXTS = ["The weather is lovely today.", "Verify your account now " * 40, "",
         "会议 明天 下午 " * 30]


@pytest.fixture(scope="module")
def numpy_enc() -> MiniLMEncoder:
    return MiniLMEncoder(max_tokens=64)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """fp32 and int8 graphs built once for this module (10-30 s each on a slow core)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    d = tmp_path_factory.mktemp("graphs")
    return {"dir": d, "fp32": eng.ensure_graph(d, int8=False),
            "int8": eng.ensure_graph(d, int8=True)}


# -- tokeniser -------------------------------------------------------------------------------


def test_prefix_cut_gives_the_same_word_pieces(numpy_enc):
    enc = MiniLMEncoder(max_tokens=16)  # cut after 16 * 12 = 192 characters
    cut = 16 * CUT_CHARS_PER_TOKEN
    texts = [
        "word " * 100,                       # cut, enough pieces in the prefix
        "a " * 95 + "supercalifragilistic " * 5,  # the cut lands next to a long word
        "x" * 1000,                          # no whitespace: tokenised whole
        "会议明天下午" * 100,                  # CJK without spaces
        "https://e.test/" + "q" * 400 + " end",  # one long token then a space past the cut
        " " * 300 + "late start",            # whitespace only before the cut
        "short text",
        "   ",
        "Ünïcödé wörds, café; naïve — résumé! " * 20,
    ]
    full = [enc.tokenizer.encode(t if t.strip() else "empty").ids for t in texts]
    assert enc.token_ids(texts) == full  # batch path
    assert [enc.token_ids([t])[0] for t in texts] == full  # single-message path
    # and the long texts really were cut before tokenising
    seen: list[int] = []
    real = enc._encode
    enc._encode = lambda ts: (seen.extend(len(t) for t in ts), real(ts))[1]  # type: ignore[method-assign]
    enc.token_ids(["word " * 20_000])
    assert seen and max(seen) <= cut


def test_encode_unchanged_by_the_cut(numpy_enc):
    long = "Please confirm the wire transfer details today. " * 300  # ~14 KB
    a = numpy_enc.encode([long])[0]
    ids = numpy_enc.tokenizer.encode(long).ids
    with numpy_enc._thread_cap():
        b = numpy_enc._forward([ids])[0]
    assert np.abs(a - b).max() < 1e-6


# -- cached graph ----------------------------------------------------------------------------


def test_graph_built_once_then_reused(graphs, monkeypatch):
    d = graphs["dir"]
    assert graphs["fp32"].parent == d and graphs["fp32"].name.startswith("minilm-fp32-")
    assert graphs["int8"].name.startswith("minilm-int8-") and graphs["int8"] != graphs["fp32"]
    # int8 keeps the weight matrices in one byte: about a quarter of the file
    assert graphs["int8"].stat().st_size < graphs["fp32"].stat().st_size / 3

    def no_export(*a, **k):
        raise AssertionError("the cached graph should have been reused")

    monkeypatch.setattr(eng, "_export_in_child", no_export)
    assert eng.ensure_graph(d, int8=True) == graphs["int8"]
    assert not list(d.glob(".*.tmp"))  # nothing half-written left behind


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path):
    pytest.importorskip("onnxruntime")
    from mailmoat.ml.deep.encoder import default_model_dir

    bad = tmp_path / "model"
    bad.mkdir()
    shutil.copy(default_model_dir() / "config.json", bad / "config.json")
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match="building the ONNX graph failed"):
        eng.ensure_graph(tmp_path / "graphs", int8=False, model_dir=bad)
    assert [p.name for p in (tmp_path / "graphs").iterdir()] == [".minilm-export.lock"]


def test_graph_name_changes_with_onnxruntime_version(graphs, monkeypatch):
    import onnxruntime

    before = eng.graph_path(graphs["dir"], True)
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    assert eng.graph_path(graphs["dir"], True) != before
    # the fp32 graph does not depend on the quantiser
    assert eng.graph_path(graphs["dir"], False) == graphs["fp32"]


def test_auto_engine_builds_into_graph_dir_and_matches_numpy(graphs, numpy_enc, tmp_path):
    shutil.copy(graphs["fp32"], tmp_path / graphs["fp32"].name)  # a cache from an earlier start
    enc = eng.open_encoder("auto", "fp32", max_tokens=64, graph_dir=tmp_path)
    assert enc.engine == "onnx-fp32" and enc.session is not None
    assert np.abs(enc.encode(TEXTS) - numpy_enc.encode(TEXTS)).max() < 1e-4


def test_int8_engine_is_close_to_numpy(graphs, numpy_enc):
    enc = eng.open_encoder("onnx", "int8", max_tokens=64, graph_dir=graphs["dir"])
    assert enc.engine == "onnx-int8"
    cos = (enc.encode(TEXTS) * numpy_enc.encode(TEXTS)).sum(axis=1)
    assert cos.min() > 0.95


def test_user_cache_unwritable_falls_back_to_data_dir(graphs, tmp_path, monkeypatch):
    blocked = tmp_path / "home-cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setattr(eng, "user_cache_dir", lambda: blocked / "mailmoat")
    data_models = tmp_path / "data" / "models"
    data_models.mkdir(parents=True)
    shutil.copy(graphs["int8"], data_models / graphs["int8"].name)
    assert eng.cached_graph(True, None, data_models) == data_models / graphs["int8"].name
    with pytest.raises(OSError):
        eng.cached_graph(True, None, None)


# -- fallback --------------------------------------------------------------------------------


def test_auto_falls_back_to_numpy_without_onnxruntime(monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="mailmoat.ml.deep.engine"):
        enc = eng.open_encoder("auto", "int8", max_tokens=32, graph_dir=tmp_path)
    assert enc.engine == "numpy" and enc.session is None
    assert "using the numpy encoder" in caplog.text and "onnxruntime" in caplog.text
    assert not list(tmp_path.iterdir())
    with pytest.raises(ImportError):
        eng.open_encoder("onnx", "int8", max_tokens=32, graph_dir=tmp_path)


def test_auto_falls_back_when_the_graph_cannot_be_built(monkeypatch, caplog, tmp_path):
    pytest.importorskip("onnxruntime")

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(eng, "ensure_graph", broken)
    with caplog.at_level(logging.WARNING, logger="mailmoat.ml.deep.engine"):
        enc = eng.open_encoder("auto", "fp32", max_tokens=32, graph_dir=tmp_path)
    assert enc.engine == "numpy" and "disk full" in caplog.text
    with pytest.raises(RuntimeError, match="disk full"):
        eng.open_encoder("onnx", "fp32", max_tokens=32, graph_dir=tmp_path)


def test_numpy_engine_never_touches_onnxruntime(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert eng.open_encoder("numpy", max_tokens=32, graph_dir=tmp_path).engine == "numpy"
    with pytest.raises(ValueError):
        eng.open_encoder("tpu")


def test_precision_follows_the_head():
    assert eng.head_precision({"engine": "onnx-int8"}) == "int8"
    assert eng.head_precision({"engine": "numpy"}) == "fp32"
    assert eng.head_precision({}) == "fp32"  # heads from before engines were recorded


def test_deep_model_defaults_to_the_heads_engine(graphs, monkeypatch):
    """The gateway's default (`engine = auto`, `precision = auto`) runs the bundled head on
    the engine it was trained for, from the cached graph."""
    from mailmoat.scan.deep import DeepModel

    head = Head.load()
    monkeypatch.setattr(eng, "user_cache_dir", lambda: graphs["dir"])
    model = DeepModel()
    # onnxruntime is installed here, so auto runs it at the head's precision
    assert model.engine == ("onnx-int8" if head.meta.get("engine") == "onnx-int8" else "onnx-fp32")
    assert model.encoder.max_tokens == head.max_tokens
    assert 0.0 <= model.score("Your mailbox is full, verify your account").p_bad <= 1.0


def test_engine_other_than_the_heads_is_logged(caplog):
    from mailmoat.scan.deep import DeepModel

    head = Head.load()
    if head.meta.get("engine") != "onnx-int8":
        pytest.skip("the bundled head is not an int8 one")
    with caplog.at_level(logging.INFO, logger="mailmoat.scan.deep"):
        model = DeepModel(engine="numpy")
    assert model.engine == "numpy"
    assert "trained on onnx-int8 embeddings but runs on numpy" in caplog.text
    assert f"engine numpy, {head.max_tokens} word pieces" in caplog.text
