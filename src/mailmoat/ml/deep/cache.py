"""Embedding cache for training and benchmarks: sha256 of the message → 384-d vector.

Embedding tens of thousands of messages on a small CPU takes a long time, so every chunk is
written as soon as it is done (`chunk-NNNNN.npz` under a folder per max_tokens) and a rerun
picks up where the last one stopped. The cache lives outside the repository.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mailmoat.ml.deep.corpus import IndexRow

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/tmp/mldeep-cache")


def _cache_dir(root: Path, max_tokens: int) -> Path:
    return root / f"minilm-t{max_tokens}"


def load_cache(root: Path, max_tokens: int) -> dict[str, np.ndarray]:
    d = _cache_dir(root, max_tokens)
    out: dict[str, np.ndarray] = {}
    for f in sorted(d.glob("chunk-*.npz")):
        with np.load(f) as z:
            for sha, vec in zip(z["sha"], z["emb"], strict=True):
                out[str(sha)] = vec
    return out


def read_text(row: IndexRow) -> str:
    from mailmoat.message.parse import parse_message
    from mailmoat.ml.deep.text import message_text

    return message_text(parse_message(row.path.read_bytes()))


def embed_rows(rows: Sequence[IndexRow], encode: Callable[[list[str]], np.ndarray], *,
               root: Path = DEFAULT_CACHE, max_tokens: int, chunk: int = 64) -> dict[str, np.ndarray]:
    """Embeddings for `rows`, computing only what the cache lacks."""
    d = _cache_dir(root, max_tokens)
    d.mkdir(parents=True, exist_ok=True)
    cache = load_cache(root, max_tokens)
    todo = [r for r in rows if r.sha256 not in cache]
    seen: set[str] = set()
    todo = [r for r in todo if not (r.sha256 in seen or seen.add(r.sha256))]  # type: ignore[func-returns-value]
    n0 = len(list(d.glob("chunk-*.npz")))
    started = time.perf_counter()
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        vecs = encode([read_text(r) for r in part])
        np.savez(d / f"chunk-{n0 + i // chunk:05d}.npz",
                 sha=np.array([r.sha256 for r in part]), emb=vecs.astype(np.float32))
        for r, v in zip(part, vecs, strict=True):
            cache[r.sha256] = v
        done = i + len(part)
        rate = (time.perf_counter() - started) / done * 1000
        log.info("embedded %d/%d new messages (%.1f ms/message incl. parsing)", done, len(todo), rate)
    return cache
