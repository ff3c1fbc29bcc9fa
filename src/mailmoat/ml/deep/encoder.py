"""all-MiniLM-L6-v2 sentence embeddings in plain numpy: no torch at run time.

The weights ship with mailmoat (`mailmoat/data/deep/minilm/`: the published model's
safetensors cast to float16, its config.json and tokenizer.json; Apache-2.0, see NOTICE there).
We run the 6-layer BERT encoder ourselves: token + position + type embeddings, then six
blocks of multi-head self-attention and a GELU feed-forward network, each followed by a
residual layer norm; then mean pooling over real tokens and L2 normalisation, exactly as the
sentence-transformers pipeline of that model does (modules.json: Transformer → Pooling(mean)
→ Normalize). Everything is float32 and batched; BLAS threads are capped so one scan cannot
take every core of the gateway.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.special import erf

__all__ = ["MiniLMEncoder", "default_model_dir", "EMBED_DIM"]

EMBED_DIM = 384

# Tokenising is not free (a few ms for 2,000 characters on a slow core) and the encoder keeps
# only the first max_tokens word pieces, so a long text is first tokenised up to a word
# boundary before CUT_CHARS_PER_TOKEN characters per piece; only when that prefix yields
# fewer pieces than max_tokens is the whole text tokenised. The tokenizer splits at
# whitespace first and never joins across it, so a prefix cut at whitespace gives a prefix of
# the same pieces: the result is the same either way (tests/deep/test_encoder.py checks it).
CUT_CHARS_PER_TOKEN = 12


def default_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files that ship inside the mailmoat package."""
    return Path(__file__).resolve().parents[2] / "data" / "deep" / "minilm"


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's "gelu" is the exact erf form; scipy's erf keeps float32.
    return 0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0))))


class _Layer:
    __slots__ = ("wqkv", "bqkv", "wo", "bo", "ln1g", "ln1b", "wi", "bi", "wo2", "bo2",
                 "ln2g", "ln2b")

    def __init__(self, w: dict[str, np.ndarray], i: int) -> None:
        p = f"encoder.layer.{i}."
        a = p + "attention."
        # One fused (H, 3H) projection for query, key and value: one matmul instead of three.
        self.wqkv = np.ascontiguousarray(np.concatenate(
            [w[a + f"self.{n}.weight"].T for n in ("query", "key", "value")], axis=1))
        self.bqkv = np.concatenate([w[a + f"self.{n}.bias"] for n in ("query", "key", "value")])
        self.wo = np.ascontiguousarray(w[a + "output.dense.weight"].T)
        self.bo = w[a + "output.dense.bias"]
        self.ln1g, self.ln1b = w[a + "output.LayerNorm.weight"], w[a + "output.LayerNorm.bias"]
        self.wi = np.ascontiguousarray(w[p + "intermediate.dense.weight"].T)
        self.bi = w[p + "intermediate.dense.bias"]
        self.wo2 = np.ascontiguousarray(w[p + "output.dense.weight"].T)
        self.bo2 = w[p + "output.dense.bias"]
        self.ln2g, self.ln2b = w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]


class MiniLMEncoder:
    """Text → 384-d unit vectors. Thread-safe; one instance per process is enough."""

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 128,
                 threads: int = 1, onnx_path: str | Path | None = None,
                 adapter: Mapping[str, np.ndarray] | None = None) -> None:
        from tokenizers import Tokenizer

        from mailmoat.ml.deep.adapter import load_weights

        mdir = Path(model_dir) if model_dir else default_model_dir()
        cfg = json.loads((mdir / "config.json").read_text(encoding="utf-8"))
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_tokens = max(8, min(int(max_tokens), int(cfg["max_position_embeddings"])))
        self.threads = threads
        tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        tok.enable_truncation(max_length=self.max_tokens)
        tok.no_padding()
        self.tokenizer = tok
        self._limiter = None
        self._lock = threading.Lock()
        self.session = None
        if onnx_path:
            # The same network exported by mailmoat.ml.deep.onnx_export, run by onnxruntime
            # on `threads` threads; the numpy weights are then not loaded at all.
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = max(1, threads)
            so.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(onnx_path), so,
                                                providers=["CPUExecutionProvider"])
            self.engine = "onnx"
            return
        self.engine = "numpy"
        w = load_weights(mdir, adapter)  # a fine-tuned head's adapter merged in
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"][: self.max_tokens].copy()
        self.type0 = w["embeddings.token_type_embeddings.weight"][0].copy()
        self.emb_g = w["embeddings.LayerNorm.weight"]
        self.emb_b = w["embeddings.LayerNorm.bias"]
        self.layers = [_Layer(w, i) for i in range(int(cfg["num_hidden_layers"]))]
        del w

    # -- public ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 embeddings, shape (len(texts), 384), in input order."""
        return self.embed_ids(self.token_ids(texts), batch_size) if texts else \
            np.zeros((0, self.hidden), dtype=np.float32)

    def embed_ids(self, ids: list[list[int]], batch_size: int = 32) -> np.ndarray:
        """Embeddings of already tokenised texts (`token_ids`)."""
        out = np.zeros((len(ids), self.hidden), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) small inside each batch.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with self._thread_cap():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                out[idx] = self._forward([ids[i] for i in idx])
        return out

    def token_count(self, text: str) -> int:
        return len(self.token_ids([text])[0])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each text, truncated to max_tokens (with [CLS] and [SEP])."""
        texts = [t if t.strip() else "empty" for t in texts]
        cut = self.max_tokens * CUT_CHARS_PER_TOKEN
        short = []
        for t in texts:
            at = max(t.rfind(c, 0, cut) for c in " \n\t\r") if len(t) > cut else -1
            short.append(t[:at] if at > 0 else t)
        ids = [e.ids for e in self._encode(short)]
        redo = [i for i, (s, t) in enumerate(zip(short, texts, strict=True))
                if s is not t and len(ids[i]) < self.max_tokens]
        if redo:  # the prefix was too short: tokenise those texts whole
            for i, e in zip(redo, self._encode([texts[i] for i in redo]), strict=True):
                ids[i] = e.ids
        return ids

    def _encode(self, texts: list[str]) -> list:  # type: ignore[type-arg]
        if len(texts) == 1:  # the scan path: no thread-pool hand-off in the tokenizer
            return [self.tokenizer.encode(texts[0])]
        return self.tokenizer.encode_batch(texts)

    # -- internals ------------------------------------------------------------------------

    def _thread_cap(self):  # type: ignore[no-untyped-def]
        if self.threads <= 0 or self.session is not None:
            import contextlib

            return contextlib.nullcontext()
        if self._limiter is None:
            from threadpoolctl import ThreadpoolController

            self._limiter = ThreadpoolController()
        return self._limiter.limit(limits=self.threads, user_api="blas")

    def _forward(self, batch_ids: list[list[int]]) -> np.ndarray:
        b = len(batch_ids)
        n = max(len(x) for x in batch_ids)
        ids = np.zeros((b, n), dtype=np.int64)
        mask = np.zeros((b, n), dtype=np.float32)
        for i, row in enumerate(batch_ids):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        if self.session is not None:
            bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
            (emb,) = self.session.run(None, {"input_ids": ids, "position_ids": np.arange(n),
                                             "attn_bias": bias, "mask": mask})
            return emb.astype(np.float32)
        h, nh = self.hidden, self.heads
        d = h // nh
        x = self.word[ids] + self.pos[:n] + self.type0
        x = _layer_norm(x, self.emb_g, self.emb_b, self.eps).reshape(b * n, h)
        # Padding keys get a large negative score so softmax gives them ~0 weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(d))
        for L in self.layers:
            qkv = (x @ L.wqkv + L.bqkv).reshape(b, n, 3, nh, d)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            sc = (q @ k) * scale + bias
            sc -= sc.max(axis=-1, keepdims=True)
            np.exp(sc, out=sc)
            sc /= sc.sum(axis=-1, keepdims=True)
            ctx = (sc @ v).transpose(0, 2, 1, 3).reshape(b * n, h)
            x = _layer_norm(x + ctx @ L.wo + L.bo, L.ln1g, L.ln1b, self.eps)
            ff = _gelu(x @ L.wi + L.bi) @ L.wo2 + L.bo2
            x = _layer_norm(x + ff, L.ln2g, L.ln2b, self.eps)
        x = x.reshape(b, n, h)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)
