"""The ONNX export computes the same embeddings as the numpy encoder (needs `onnx`)."""

from __future__ import annotations

import numpy as np
import pytest

from mailmoat.ml.deep.encoder import MiniLMEncoder

pytest.importorskip("onnx", reason="the onnx package is only needed to export")


def test_exported_graph_matches_numpy(tmp_path):
    from mailmoat.ml.deep.onnx_export import export

    path = export(tmp_path / "minilm.onnx", int8=False)
    texts = ["The weather is lovely today.", "Verify your account now " * 40, "",
             "会议 明天 下午"]
    ref = MiniLMEncoder(max_tokens=128).encode(texts)
    got = MiniLMEncoder(max_tokens=128, onnx_path=path).encode(texts)
    assert np.abs(ref - got).max() < 1e-4
