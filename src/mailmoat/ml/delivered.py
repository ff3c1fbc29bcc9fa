"""A sample of recently delivered mail: the counter-examples a spam report must not blame.

A spam report may teach the model the words and links of the reported message
(mailmoat.ml.learn), but words are shared: a report that blamed "invoice" or "meeting" would
flag the next good mail that uses them, and a filter must not get worse the more its users
report. So the gateway keeps which tier-1 feature buckets its recently delivered mail used
(one record per message it accepted for every recipient: its bucket numbers, no text), and a report moves only buckets that none of that mail used —
nor mail released from the quarantine (the lesson memory's ham). Then no message in the
sample reads any differently after the report; what moves are the words the deployment's
good mail does not use.

Delivered mail that nobody reported may still be spam; it protects its own words, so a
missed campaign makes reports of it teach less, never more. Delivered near-copies of the
reported message are not counter-examples (`COPY_JACCARD`): the campaign's earlier copies were
delivered too, and their words are what the report is about.

The file is append-only (one `write` per record, O_APPEND, so several processes may add to
it) and is rewritten to its newest `MAX_RECORDS` once it grows past `COMPACT_BYTES`. A record
cut short by a crash ends the readable part; records appended by another process while a
compaction rewrites the file can be lost — it is a sample.
"""

from __future__ import annotations

import os
import random
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.ml.features import vector_of
from mailmoat.ml.filelock import locked
from mailmoat.policy.types import Action

SAMPLE_NAME = "delivered-sample.bin"
MAX_RECORDS = 5000
COMPACT_BYTES = 32 << 20
# Jaccard similarity of two messages' bucket sets at or above which a delivered message
# counts as a copy of the reported one (a campaign's variants share most of their tokens;
# two different messages rarely share half).
COPY_JACCARD = 0.5
_HEAD = struct.Struct("<I")  # number of buckets


@dataclass(frozen=True)
class Sample:
    buckets: list[np.ndarray]  # sorted unique uint32 bucket numbers, one array per message

    def protected(self, idx: np.ndarray, extra: list[np.ndarray] | None = None) -> np.ndarray:
        """The buckets of `idx` that some sampled message (or one of `extra`) uses, leaving
        out the sampled copies of the message `idx` itself."""
        own = np.unique(idx).astype(np.uint32)
        rows = [*self.buckets, *(extra or [])]
        if not rows or not len(own):
            return own[:0]
        lens = np.array([len(b) for b in rows])
        flat = np.concatenate(rows)
        owner = np.repeat(np.arange(len(rows)), lens)
        hit = np.isin(flat, own)
        shared = np.bincount(owner[hit], minlength=len(rows))
        copy = shared / np.maximum(len(own) + lens - shared, 1) >= COPY_JACCARD
        return np.unique(flat[hit & ~copy[owner]])


def sample_path(model_dir: Path) -> Path:
    return model_dir / SAMPLE_NAME


def _record(idx: np.ndarray) -> bytes:
    b = np.unique(idx).astype("<u4")
    return _HEAD.pack(len(b)) + b.tobytes()


def append(path: Path, idx: np.ndarray, compact_now: bool = True) -> bool:
    """Add one delivered message's buckets (cheap: one appended write, no fsync). True when
    the file has grown past COMPACT_BYTES (and, with `compact_now`, was compacted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, _record(idx))
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size <= COMPACT_BYTES:
        return False
    if compact_now:
        compact(path)
    return True


def read(path: Path, newest: int | None = None) -> Sample:
    """The newest `newest` records (default MAX_RECORDS; empty when there is no file)."""
    newest = MAX_RECORDS if newest is None else newest
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Sample([])
    buckets: list[np.ndarray] = []
    pos = 0
    while pos + _HEAD.size <= len(data):
        (n,) = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + 4 * n
        if end > len(data):
            break  # cut short by a crash: the rest is unreadable
        buckets.append(np.frombuffer(data, dtype="<u4", count=n, offset=pos + _HEAD.size))
        pos = end
    return Sample(buckets[-newest:])


def compact(path: Path) -> None:
    """Rewrite the file with its newest MAX_RECORDS records."""
    with locked(path):
        s = read(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(_record(b) for b in s.buckets))
        os.replace(tmp, path)


class DeliveredSampler:
    """The gateway's verdict hook: samples the mail it accepts for every recipient.

    Also mail it accepted with a middling content score: borderline newsletters are what
    reports would otherwise push over the threshold (an ad-hoc variant of bench/feedback.py
    that sampled only mail below `[content] low` flagged more ham on trec06c; docs/ml.md).
    `rate` is the share kept (a busy site keeps a longer stretch of time in MAX_RECORDS
    with a lower one). The append is one small write on the event loop; the rare compaction
    runs on a thread of its own."""

    def __init__(self, path: Path, rate: float, seed: int | None = None) -> None:
        self.path = path
        self.rate = rate
        self._random = random.Random(seed)
        self._compacting = threading.Lock()

    def offer_outcome(self, outcome: Any) -> bool:
        """Sample `outcome` (a ScanOutcome) if it qualifies; True when it was kept."""
        verdicts = list(outcome.per_recipient.values()) or [outcome.verdict]
        if any(v.action is not Action.ACCEPT for v in verdicts) \
                or self._random.random() >= self.rate:
            return False
        idx, _, _ = vector_of(outcome.message)
        if append(self.path, idx, compact_now=False) and self._compacting.acquire(blocking=False):
            def run() -> None:
                try:
                    compact(self.path)
                finally:
                    self._compacting.release()
            threading.Thread(target=run, name="mailmoat-sample-compact", daemon=True).start()
        return True
