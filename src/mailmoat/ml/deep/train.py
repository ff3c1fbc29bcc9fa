"""Train the tier-2 head: `python -m mailmoat.ml.deep.train --corpus /tmp/corpus --out
src/mailmoat/data/deep/head.npz`.

Steps: read the corpus index; take a reproducible stratified sample (up to --per-cell
messages per corpus and label, because the encoder needs ~90 ms per message on one core);
split by `group` (20 % of groups held out, stable hash, so a campaign or thread never sits on
both sides); embed with the cache in /tmp/mldeep-cache; fit a logistic regression and a small
MLP, pick the one with the lower log-loss on a validation fold carved (again by group) out
of the training side; report held-out numbers; write the head with its prototypes.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.ml.deep.cache import DEFAULT_CACHE, embed_rows
from mailmoat.ml.deep.corpus import IndexRow, is_test_group, read_index, sample_rows
from mailmoat.ml.deep.engine import open_named
from mailmoat.ml.deep.head import CLASSES, PROTOTYPES, Head

log = logging.getLogger("mailmoat.ml.deep.train")


def _xy(rows: list[IndexRow], cache: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([cache[r.sha256] for r in rows]).astype(np.float32)
    y = np.array([CLASSES.index(r.label) for r in rows])
    return x, y


def binary_report(p_bad: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    bad = y != 0
    pred = p_bad >= threshold
    return {"n": int(len(y)), "accuracy": round(float((pred == bad).mean()), 4),
            "fp": int((pred & ~bad).sum()), "fn": int((~pred & bad).sum()),
            "fp_rate": round(float((pred & ~bad).sum() / max(1, (~bad).sum())), 4),
            "fn_rate": round(float((~pred & bad).sum() / max(1, bad.sum())), 4)}


def _layers_of(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    # A fitted scikit-learn MLPClassifier or LogisticRegression (sklearn has no type stubs).
    if hasattr(model, "coefs_"):
        return [(w.astype(np.float32), b.astype(np.float32))
                for w, b in zip(model.coefs_, model.intercepts_, strict=True)]
    return [(model.coef_.T.astype(np.float32), model.intercept_.astype(np.float32))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="/tmp/corpus")
    ap.add_argument("--out", default="src/mailmoat/data/deep/head.npz")
    ap.add_argument("--per-cell", type=int, default=700, help="messages per (corpus, label)")
    ap.add_argument("--max-tokens", type=int, default=64,
                    help="word pieces the encoder reads (the live check reads as many)")
    ap.add_argument("--engine", choices=("onnx-int8", "onnx-fp32", "numpy"), default="onnx-int8",
                    help="compute the training embeddings as this engine does at scan time "
                    "(the head learns that engine's embeddings; onnx-fp32 = numpy)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--cached-only", action="store_true",
                    help="train on the sampled messages already in the cache, embed nothing")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier

    started = time.time()
    rows = sample_rows(read_index(a.corpus), a.per_cell)
    # onnx-*: the graph the gateway builds, cached in the same place (ml/deep/engine.py)
    enc = open_named(a.engine, max_tokens=a.max_tokens)
    if a.cached_only:
        from mailmoat.ml.deep.cache import load_cache

        cache = load_cache(Path(a.cache), a.max_tokens, a.engine)
        rows = [r for r in rows if r.sha256 in cache]
    else:
        # Interleave corpora and labels, so an interrupted run leaves a usable cache
        # (`--cached-only` then trains on what is there).
        order = list(rows)
        random.Random(7).shuffle(order)
        cache = embed_rows(order, enc.encode, root=Path(a.cache), max_tokens=a.max_tokens,
                           engine=a.engine)
    test = [r for r in rows if is_test_group(r.group)]
    train_all = [r for r in rows if not is_test_group(r.group)]
    val = [r for r in train_all if is_test_group(r.group + "/val")]
    fit = [r for r in train_all if not is_test_group(r.group + "/val")]
    log.info("sample %d: fit %d, validation %d, held-out test %d", len(rows), len(fit), len(val),
             len(test))
    xf, yf = _xy(fit, cache)
    xv, yv = _xy(val, cache)
    if set(yf.tolist()) | set(yv.tolist()) != {0, 1, 2}:
        raise SystemExit("the training side needs ham, spam and phish messages")
    candidates = {
        "logreg": lambda: LogisticRegression(C=10.0, max_iter=2000),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=300,
                                     early_stopping=True, random_state=0),
    }
    scores: dict[str, float] = {}
    if len(val) >= 50 and len(fit) >= 200:
        for name, make in candidates.items():
            m = make().fit(xf, yf)
            scores[name] = float(log_loss(yv, m.predict_proba(xv), labels=[0, 1, 2]))
            log.info("%s validation log-loss %.4f", name, scores[name])
        best = min(scores, key=scores.__getitem__)
    else:  # too little data to choose fairly or to early-stop an MLP
        best = "logreg"
    xt, yt = _xy(train_all, cache)
    model = candidates[best]().fit(xt, yt)
    layers = _layers_of(model)
    proto_emb = enc.encode([p[2] for p in PROTOTYPES])
    meta = {"model": "sentence-transformers/all-MiniLM-L6-v2", "max_tokens": a.max_tokens,
            "engine": a.engine,
            "head": best, "validation_log_loss": scores, "classes": list(CLASSES),
            "per_cell": a.per_cell, "train_messages": len(train_all),
            "command": "python -m mailmoat.ml.deep.train " + " ".join(argv or sys.argv[1:])}
    head = Head(layers, proto_emb, [p[0] for p in PROTOTYPES], [p[1] for p in PROTOTYPES], meta)
    if test:
        xh, yh = _xy(test, cache)
        p = head.proba(xh)
        meta["held_out"] = {"messages": len(test), "three_class_accuracy":
                            round(float((p.argmax(1) == yh).mean()), 4),
                            "spam_or_phish_vs_ham": binary_report(p[:, 1] + p[:, 2], yh)}
    head.meta = meta
    head.save(a.out)
    log.info("wrote %s (%s) in %.0fs; held-out: %s", a.out, best, time.time() - started,
             json.dumps(meta.get("held_out")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
