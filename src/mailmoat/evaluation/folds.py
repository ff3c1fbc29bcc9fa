"""The grouped k-fold cross-validation every model evaluation shares.

StratifiedGroupKFold on the `group` column (copies and near-copies of one mail stay on one
side), shuffled with seed 0: `python -m mailmoat.ml.deep.finetune prepare` stores the very
same split, so tier 1 and tier 2 are scored out-of-fold on the same folds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from mailmoat.evaluation.paths import results_dir
from mailmoat.ml.corpus import Sample
from mailmoat.ml.train import TrainParams, fit


def oof_probabilities(samples: Sequence[Sample], X: sp.csr_matrix, y: np.ndarray, folds: int,
                      params: TrainParams, log: Callable[[str], None]) -> np.ndarray:
    """Tier 1's (ham, spam, phish) probabilities of every sample from a model that never saw
    its group."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.array([s.group for s in samples])
    P = np.zeros((len(samples), 3))
    skf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    for k, (tr, te) in enumerate(skf.split(X, y, groups)):
        assert not set(groups[tr]) & set(groups[te])
        t = time.perf_counter()
        m = fit(X[tr], y[tr], params)
        P[te] = m.predict_matrix(X[te])
        log(f"  fold {k + 1}/{folds}: train {len(tr)}, test {len(te)}, {time.perf_counter() - t:.0f}s")
    return P


def add_cv_args(ap: argparse.ArgumentParser) -> None:
    """The options every cross-validating program shares (accuracy, deep_cv, network_cv,
    bench/pipeline_accuracy.py)."""
    ap.add_argument("--corpus")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(results_dir()))
