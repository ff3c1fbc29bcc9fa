"""A fine-tuned head's encoder adapter: merged into the published weights by every engine,
part of the built graph's cache key, and refused when it does not fit the model."""

from __future__ import annotations

import numpy as np
import pytest

from mailmoat.ml.deep import engine as eng
from mailmoat.ml.deep.adapter import (
    LORA_A,
    LORA_B,
    SET,
    adapter_digest,
    apply_adapter,
    load_weights,
    read_adapter,
)
from mailmoat.ml.deep.encoder import MiniLMEncoder, default_model_dir
from mailmoat.ml.deep.head import Head

Q = "encoder.layer.0.attention.self.query"
TEXTS = ["Verify your account now or it will be suspended.", "Lunch on Thursday works for me.",
         "会议 明天 下午"]


def small_adapter(seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    """Low-rank updates of two matrices, a new bias and a new layer norm."""
    rng = np.random.default_rng(seed)
    ff = "encoder.layer.5.intermediate.dense"
    return {LORA_A + Q + ".weight": rng.normal(size=(4, 384)).astype(np.float16),
            LORA_B + Q + ".weight": (scale * rng.normal(size=(384, 4))).astype(np.float16),
            LORA_A + ff + ".weight": rng.normal(size=(4, 384)).astype(np.float16),
            LORA_B + ff + ".weight": (scale * rng.normal(size=(1536, 4))).astype(np.float16),
            SET + Q + ".bias": rng.normal(size=384).astype(np.float32) * 0.1,
            SET + "encoder.layer.3.output.LayerNorm.weight": np.full(384, 0.9, np.float32)}


def fitted_head(adapter: dict[str, np.ndarray]) -> Head:
    rng = np.random.default_rng(1)
    layers = [(rng.normal(size=(384, 3)).astype(np.float32), np.zeros(3, np.float32))]
    return Head(layers, rng.normal(size=(2, 384)).astype(np.float32), ["ham", "spam"],
                ["a", "b"], {"max_tokens": 64, "engine": "numpy"}, adapter)


def test_merge_is_w_plus_b_times_a_and_sets_replace():
    base = {Q + ".weight": np.ones((384, 384), np.float32), Q + ".bias": np.zeros(384, np.float32),
            "encoder.layer.5.intermediate.dense.weight": np.zeros((1536, 384), np.float32),
            "encoder.layer.3.output.LayerNorm.weight": np.ones(384, np.float32)}
    ad = small_adapter()
    got = apply_adapter(base, ad)
    want = 1.0 + ad[LORA_B + Q + ".weight"].astype(np.float32) @ ad[LORA_A + Q + ".weight"].astype(np.float32)
    assert np.allclose(got[Q + ".weight"], want, atol=1e-6)
    assert np.array_equal(got[Q + ".bias"], ad[SET + Q + ".bias"])
    assert np.all(got["encoder.layer.3.output.LayerNorm.weight"] == np.float32(0.9))
    assert np.all(base[Q + ".weight"] == 1.0)  # the input is left alone


@pytest.mark.parametrize("bad, message", [
    ({LORA_A + Q + ".weight": np.zeros((4, 384))}, "without its"),
    ({SET + "encoder.layer.9.output.dense.bias": np.zeros(384)}, "does not have"),
    ({SET + Q + ".bias": np.zeros(383)}, "does not match"),
    ({"head_W": np.zeros(3)}, "not an adapter key"),
])
def test_an_adapter_for_another_model_is_refused(bad, message):
    base = {Q + ".weight": np.ones((384, 384), np.float32), Q + ".bias": np.zeros(384, np.float32)}
    with pytest.raises(ValueError, match=message):
        apply_adapter(base, bad)


def test_digest_is_stable_and_content_based():
    assert adapter_digest({}) == ""
    assert adapter_digest(small_adapter(0)) == adapter_digest(small_adapter(0))
    assert adapter_digest(small_adapter(0)) != adapter_digest(small_adapter(1))


def test_head_file_keeps_its_adapter(tmp_path):
    ad = small_adapter()
    fitted_head(ad).save(tmp_path / "h.npz")
    back = Head.load(tmp_path / "h.npz")
    assert set(back.adapter) == set(ad) and set(read_adapter(tmp_path / "h.npz")) == set(ad)
    assert all(np.array_equal(back.adapter[k], ad[k]) for k in ad)


def test_numpy_encoder_runs_the_merged_network():
    mdir = default_model_dir()
    plain = MiniLMEncoder(mdir, max_tokens=64).encode(TEXTS)
    zero = {k: (np.zeros_like(v) if k.startswith(LORA_B) else v)
            for k, v in small_adapter().items() if not k.startswith(SET)}
    assert np.abs(MiniLMEncoder(mdir, max_tokens=64, adapter=zero).encode(TEXTS) - plain).max() < 1e-5
    tuned = MiniLMEncoder(mdir, max_tokens=64, adapter=small_adapter()).encode(TEXTS)
    assert np.abs(tuned - plain).max() > 1e-2  # the update reaches the output
    w = load_weights(mdir, small_adapter())
    assert w[Q + ".bias"].dtype == np.float32


def test_graph_carries_the_heads_adapter_and_its_own_cache_key(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ad = small_adapter()
    fitted_head(ad).save(tmp_path / "tuned.npz")
    fitted_head({}).save(tmp_path / "plain.npz")
    mdir = default_model_dir()
    assert eng.graph_path(tmp_path, False, mdir, tmp_path / "tuned.npz") != \
        eng.graph_path(tmp_path, False, mdir)
    enc = eng.open_encoder("onnx", "fp32", max_tokens=64, graph_dir=tmp_path / "g",
                           head_path=tmp_path / "tuned.npz")
    ref = MiniLMEncoder(mdir, max_tokens=64, adapter=ad).encode(TEXTS)
    assert np.abs(enc.encode(TEXTS) - ref).max() < 1e-4
    # a head without an adapter shares the plain graph (no second build)
    plain = eng.open_encoder("onnx", "fp32", max_tokens=64, graph_dir=tmp_path / "g",
                             head_path=tmp_path / "plain.npz")
    assert np.abs(plain.encode(TEXTS) - MiniLMEncoder(mdir, max_tokens=64).encode(TEXTS)).max() < 1e-4
    assert len(list((tmp_path / "g").glob("minilm-fp32-*.onnx"))) == 2
    # the numpy fallback merges the same adapter
    np_enc = eng.open_encoder("numpy", max_tokens=64, head_path=tmp_path / "tuned.npz")
    assert np.abs(np_enc.encode(TEXTS) - ref).max() < 1e-5


def test_a_graph_of_your_own_without_the_heads_adapter_is_warned_about(tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    fitted_head(small_adapter()).save(tmp_path / "tuned.npz")
    graph = eng.ensure_graph(tmp_path / "g", int8=False)  # exported without --head
    with caplog.at_level("WARNING"):
        eng.open_encoder("onnx", "fp32", max_tokens=64, onnx_path=graph,
                         head_path=tmp_path / "tuned.npz")
    assert "carries a fine-tuned encoder" in caplog.text
