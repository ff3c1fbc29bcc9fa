"""Cost of the lesson memory per scanned message, and of adding a lesson, at its size limit.

    PYTHONPATH=src python bench/lessons_speed.py [--lessons 5000] [--n 500]

Builds a memory of N lessons with `remember()` (random messages of 300 tokens, the size of
a typical message's feature vector), then times `nearest()` for messages that match one
lesson and for messages that match none (the usual case), and one more `remember()` at the
full size. Baseline in the same run: the row-by-row product the memory used before its
inverted index (`matrix @ x`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mailmoat.ml import lessons


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)) * 1000, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lessons", type=int, default=lessons.MAX_LESSONS)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    msgs = [(rng.choice(1 << 20, 300, replace=False), rng.uniform(0.02, 0.1, 300))
            for _ in range(args.lessons)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / lessons.LESSONS_NAME
        t = time.perf_counter()
        # Built in one write (remember() per lesson rewrites the file each time).
        m = sp.vstack([sp.csr_matrix((v / np.linalg.norm(v), (np.zeros(300, int), i)),
                                     shape=(1, 1 << 20)) for i, v in msgs], format="csr")
        n = len(msgs)
        np.savez_compressed(path, indptr=m.indptr, indices=m.indices, data=m.data.astype(np.float32),
                            n_bits=np.int32(20), labels=np.array(["spam"] * n),
                            sha256=np.array(["x"] * n), times=np.array(["t"] * n),
                            actors=np.array(["bench"] * n))
        build = time.perf_counter() - t
        t = time.perf_counter()
        mem = lessons.read(path, 20)
        load = time.perf_counter() - t
        hit, miss, rowwise = [], [], []
        for k in range(args.n):
            i, v = msgs[k % n]
            t = time.perf_counter()
            assert mem.nearest(i, v) is not None
            hit.append(time.perf_counter() - t)
            q = (rng.choice(1 << 20, 300, replace=False), rng.uniform(0.02, 0.1, 300))
            t = time.perf_counter()
            assert mem.nearest(*q) is None
            miss.append(time.perf_counter() - t)
            x = sp.csr_matrix((q[1], (np.zeros(300, int), q[0])), shape=(1, 1 << 20))
            t = time.perf_counter()
            (mem.matrix @ x.T).toarray()
            rowwise.append(time.perf_counter() - t)
        i, v = msgs[0]
        t = time.perf_counter()
        lessons.remember(path, i, v, 20, "spam", "y", "t", "bench")
        add = time.perf_counter() - t
    print(f"lessons {n}: build {build:.1f} s, load {load * 1000:.0f} ms; nearest, matching: "
          f"p50 {pct(hit, 50)} ms p99 {pct(hit, 99)} ms; not matching: p50 {pct(miss, 50)} ms "
          f"p99 {pct(miss, 99)} ms; row-by-row product (before): p50 {pct(rowwise, 50)} ms "
          f"p99 {pct(rowwise, 99)} ms; remember() at full size {add * 1000:.0f} ms")


if __name__ == "__main__":
    main()
