"""The numpy MiniLM encoder reproduces the published all-MiniLM-L6-v2 similarities."""

from __future__ import annotations

import numpy as np
import pytest

from mailmoat.ml.deep.encoder import MiniLMEncoder


@pytest.fixture(scope="module")
def enc() -> MiniLMEncoder:
    return MiniLMEncoder(max_tokens=128)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_matches_published_reference_similarities(enc):
    # sentence-transformers quick start (sbert.net / the library README), model
    # all-MiniLM-L6-v2: similarity matrix [[1, 0.6660, 0.1046], [0.6660, 1, 0.1411], ...].
    v = enc.encode(["The weather is lovely today.", "It's so sunny outside!",
                    "He drove to the stadium."])
    assert cos(v[0], v[1]) == pytest.approx(0.6660, abs=2e-3)
    assert cos(v[0], v[2]) == pytest.approx(0.1046, abs=2e-3)
    assert cos(v[1], v[2]) == pytest.approx(0.1411, abs=2e-3)
    # The Hugging Face model card's similarity widget: "That is a happy person" against
    # three others: 0.695, 0.943, 0.257.
    w = enc.encode(["That is a happy person", "That is a happy dog",
                    "That is a very happy person", "Today is a sunny day"])
    assert [round(cos(w[0], w[i]), 3) for i in (1, 2, 3)] == pytest.approx(
        [0.695, 0.943, 0.257], abs=2e-3)


def test_paraphrases_close_unrelated_far(enc):
    v = enc.encode(["Please verify your account password immediately.",
                    "Please confirm your account password now.",
                    "The quarterly budget meeting moved to Thursday.",
                    "A recipe for tomato soup with basil."])
    assert cos(v[0], v[1]) > 0.7  # a paraphrase of a phishing ask
    assert cos(v[0], v[2]) < 0.3 and cos(v[0], v[3]) < 0.3 and cos(v[2], v[3]) < 0.3


def test_paraphrase_pair_above_point_seven(enc):
    v = enc.encode(["How do I reset my password?", "How can I reset my password?"])
    assert cos(v[0], v[1]) > 0.7


def test_unit_length_and_batch_independent(enc):
    texts = ["short", "a somewhat longer sentence about invoices and payments " * 3, "",
             "中文 邮件 测试"]
    together = enc.encode(texts, batch_size=4)
    alone = np.stack([enc.encode([t])[0] for t in texts])
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Padding inside a batch must not change any message's embedding (attention mask).
    assert np.allclose(together, alone, atol=1e-5)
    assert together.dtype == np.float32 and together.shape == (4, 384)


def test_long_text_is_truncated(enc):
    assert enc.token_count("word " * 5000) == 128
    v = enc.encode(["word " * 5000])
    assert v.shape == (1, 384) and np.isfinite(v).all()


def test_empty_input(enc):
    assert enc.encode([]).shape == (0, 384)
