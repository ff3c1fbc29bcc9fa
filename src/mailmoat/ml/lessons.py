"""The lesson memory: every message taught by `learn()`, kept to recognise its near-copies.

A report moves only the model weights of words that good mail does not use
(mailmoat.ml.learn), and spam forges and changes its sender and its link domains. What a
campaign keeps is its text and structure: the next copy of a reported mail is a near-copy
of it. So every lesson's feature vector (the tier-1 tokens,
hashed and normalised) is kept here, and the `lessons` check compares each message with
them by cosine similarity: a near-copy of reported spam is raised to at least the tag level,
a near-copy of mail released as not spam has its content verdict withdrawn — the way
fuzzy-hash stores act on users' reports.

`SIMILARITY` (0.7, `[content] lesson_similarity`) is above every ham message's similarity
to its most similar spam in the training corpora (at most 0.648 in spamassassin, 0.474 in
csdmc2010 and trec06c: bench/lesson_similarity.py), so a near-copy of one reported spam is
not an ordinary legitimate message. The memory keeps the
newest `MAX_LESSONS`, one file per scope (global, or per recipient domain) beside the
learned delta: `data_dir/model/lessons.npz`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

LESSONS_NAME = "lessons.npz"
MAX_LESSONS = 5000
SIMILARITY = 0.7
# The content verdict a near-copy of reported spam is raised to: CONTENT_*_MEDIUM's weight,
# which alone reaches the default tag threshold.
SPAM_FLOOR = 7.0

_lock = threading.Lock()
_cache: dict[str, tuple[float, LessonMemory]] = {}


@dataclass(frozen=True)
class Match:
    similarity: float
    label: str
    sha256: str
    time: str
    actor: str


@dataclass
class LessonMemory:
    matrix: sp.csr_matrix  # one L2-normalised row per lesson
    labels: list[str]
    sha256: list[str]
    times: list[str]
    actors: list[str]

    def __post_init__(self) -> None:
        # Columns by token bucket: a message reads only the columns of its own tokens (an
        # inverted index): at 5,000 lessons 0.12 ms p50 for a message that matches none,
        # against 5.0 ms for the row-by-row product (bench/lessons_speed.py).
        self.by_token = self.matrix.tocsc()

    def nearest(self, idx: np.ndarray, vals: np.ndarray,
                at_least: float = SIMILARITY) -> Match | None:
        """The most similar lesson, if its cosine similarity reaches `at_least`."""
        if not len(self.labels) or not len(idx):
            return None
        tokens, where = np.unique(idx, return_inverse=True)  # colliding tokens add up
        x = np.bincount(where, weights=vals.astype(np.float64))
        norm = float(np.sqrt(x @ x))
        if norm == 0:
            return None
        sims = np.asarray(self.by_token[:, tokens] @ x).ravel() / norm
        # The newest of equally similar lessons: a later lesson about the same message (a
        # report undone by a release) supersedes the earlier one.
        best = len(sims) - 1 - int(np.argmax(sims[::-1]))
        if sims[best] < at_least:
            return None
        return Match(round(float(sims[best]), 3), self.labels[best], self.sha256[best],
                     self.times[best], self.actors[best])


def lessons_path(delta: Path) -> Path:
    """The memory kept beside a learned delta file (same scope)."""
    return delta.with_name(LESSONS_NAME)


def remember(path: Path, idx: np.ndarray, vals: np.ndarray, n_bits: int, label: str,
             sha256: str, when: str, actor: str) -> None:
    """Add one lesson (the caller holds the scope's lock), keeping the newest MAX_LESSONS."""
    mem = read(path, n_bits)
    row = sp.csr_matrix((vals.astype(np.float64), (np.zeros(len(idx), dtype=np.int64), idx)),
                        shape=(1, 1 << n_bits))
    row.sum_duplicates()
    norm = float(np.sqrt(row.multiply(row).sum())) or 1.0
    matrix = sp.vstack([mem.matrix, row / norm], format="csr")[-MAX_LESSONS:]
    keep = matrix.shape[0]
    labels = (mem.labels + [label])[-keep:]
    shas = (mem.sha256 + [sha256])[-keep:]
    times = (mem.times + [when])[-keep:]
    actors = (mem.actors + [actor])[-keep:]
    _write(path, LessonMemory(matrix, labels, shas, times, actors), n_bits)


def forget(path: Path, matches: Callable[[str, str, str], bool], n_bits: int) -> list[str]:
    """Drop every lesson for which `matches(sha256, time, actor)` holds (the caller holds the
    scope's lock); returns the sha256 of each dropped lesson."""
    mem = read(path, n_bits)
    hit = [matches(s, t, a) for s, t, a in zip(mem.sha256, mem.times, mem.actors)]
    if any(hit):
        keep = [i for i, h in enumerate(hit) if not h]
        _write(path, LessonMemory(mem.matrix[keep], [mem.labels[i] for i in keep],
                                  [mem.sha256[i] for i in keep], [mem.times[i] for i in keep],
                                  [mem.actors[i] for i in keep]), n_bits)
    return [s for s, h in zip(mem.sha256, hit) if h]


def _write(path: Path, mem: LessonMemory, n_bits: int) -> None:
    m = mem.matrix.tocsr()
    tmp = path.with_name(path.name + ".tmp.npz")
    # Uncompressed: at 5,000 lessons a write takes ~0.1 s instead of ~0.5 s.
    np.savez(tmp, indptr=m.indptr, indices=m.indices,
             data=m.data.astype(np.float32), n_bits=np.int32(n_bits),
             labels=np.array(mem.labels, dtype=str), sha256=np.array(mem.sha256, dtype=str),
             times=np.array(mem.times, dtype=str), actors=np.array(mem.actors, dtype=str))
    os.replace(tmp, path)


def read(path: Path, n_bits: int) -> LessonMemory:
    """The memory in `path` (empty when there is none), cached until the file changes."""
    try:
        mtime = path.stat().st_mtime_ns / 1e9
    except FileNotFoundError:
        return LessonMemory(sp.csr_matrix((0, 1 << n_bits)), [], [], [], [])
    with _lock:
        hit = _cache.get(str(path))
        if hit is not None and hit[0] == mtime:
            return hit[1]
    with np.load(path, allow_pickle=False) as z:
        size = 1 << int(z["n_bits"])
        matrix = sp.csr_matrix((z["data"].astype(np.float64), z["indices"], z["indptr"]),
                               shape=(len(z["indptr"]) - 1, size))
        mem = LessonMemory(matrix, z["labels"].tolist(), z["sha256"].tolist(),
                           z["times"].tolist(), z["actors"].tolist())
    with _lock:
        _cache[str(path)] = (mtime, mem)
    return mem


def adjustment(match: Match, content_part: float) -> tuple[str, float] | None:
    """The symbol and score a near-copy earns, given what the content tiers gave the
    message (`content_part`): reported spam or phishing raises it to at least SPAM_FLOOR;
    mail released as not spam has a positive content verdict withdrawn. None: no change.
    Shared with bench/feedback.py."""
    if match.label == "ham":
        return ("LEARNED_HAM", -round(content_part, 3)) if content_part > 0 else None
    name = "LEARNED_PHISH" if match.label == "phish" else "LEARNED_SPAM"
    raise_by = round(SPAM_FLOOR - content_part, 3)
    return (name, raise_by) if raise_by > 0 else None
