"""Embedding cache for training and benchmarks: sha256 of the message → 384-d vector.

Embedding tens of thousands of messages on a small CPU takes a long time, so every chunk is
written as soon as it is done (`chunk-NNNNN.npz` under a folder per max_tokens and engine,
because int8 ONNX embeddings differ slightly from float32 ones) and a rerun picks up where
the last one stopped. The cache lives outside the repository.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mailmoat.ml.deep.corpus import IndexRow

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/tmp/mldeep-cache")


def _cache_dir(root: Path, max_tokens: int, engine: str = "numpy") -> Path:
    # numpy and onnx-fp32 compute the same embeddings (to ~1e-7) and share a folder.
    return root / (f"minilm-t{max_tokens}" + ("-int8" if engine == "onnx-int8" else ""))


def load_cache(root: Path, max_tokens: int, engine: str = "numpy") -> dict[str, np.ndarray]:
    d = _cache_dir(root, max_tokens, engine)
    out: dict[str, np.ndarray] = {}
    for f in sorted(d.glob("chunk-*.npz")):
        with np.load(f) as z:
            for sha, vec in zip(z["sha"], z["emb"], strict=True):
                out[str(sha)] = vec
    return out


def read_text(row: IndexRow) -> str:
    from mailmoat.ml.deep.text import text_of

    return text_of(row.path.read_bytes())


def texts_for(rows: Sequence[IndexRow], root: Path = DEFAULT_CACHE) -> dict[str, str]:
    """What the model reads of each row (`message_text`), parsed once and kept in the cache
    folder, so embedding the same sample with another engine or length parses nothing."""
    from mailmoat.ml.deep.text import MAX_CHARS

    path = root / f"texts-c{MAX_CHARS}.json"
    known: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    todo = [r for r in rows if r.sha256 not in known]
    for i, r in enumerate(todo, 1):
        known[r.sha256] = read_text(r)
        if i % 1000 == 0:
            log.info("parsed %d/%d messages", i, len(todo))
    if todo:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known), encoding="utf-8")
        tmp.replace(path)
    return {r.sha256: known[r.sha256] for r in rows}


def embed_rows(rows: Sequence[IndexRow], encode: Callable[[list[str]], np.ndarray], *,
               root: Path = DEFAULT_CACHE, max_tokens: int, chunk: int = 64,
               engine: str = "numpy") -> dict[str, np.ndarray]:
    """Embeddings for `rows`, computing only what the cache lacks."""
    d = _cache_dir(root, max_tokens, engine)
    d.mkdir(parents=True, exist_ok=True)
    cache = load_cache(root, max_tokens, engine)
    todo = [r for r in rows if r.sha256 not in cache]
    seen: set[str] = set()
    todo = [r for r in todo if not (r.sha256 in seen or seen.add(r.sha256))]  # type: ignore[func-returns-value]
    texts = texts_for(todo, root)
    n0 = len(list(d.glob("chunk-*.npz")))
    started = time.perf_counter()
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        vecs = encode([texts[r.sha256] for r in part])
        np.savez(d / f"chunk-{n0 + i // chunk:05d}.npz",
                 sha=np.array([r.sha256 for r in part]), emb=vecs.astype(np.float32))
        for r, v in zip(part, vecs, strict=True):
            cache[r.sha256] = v
        done = i + len(part)
        rate = (time.perf_counter() - started) / done * 1000
        log.info("embedded %d/%d new messages (%.1f ms/message)", done, len(todo), rate)
    return cache
