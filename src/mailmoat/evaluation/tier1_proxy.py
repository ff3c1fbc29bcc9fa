"""A stand-in for tier 1 that was never trained on the held-out messages.

The bundled tier-1 model was trained on every corpus message, so scoring corpus mail with it
is in-sample. Where a program needs tier 1's probability on held-out mail (the content-stage
latency benchmark, bench/content_latency.py, and `deep_eval`), it uses this proxy instead:
HashingVectorizer over subject, sender domain and body words and bigrams → SGD logistic
regression, trained on every training-side message of the deep split
(`mailmoat.ml.deep.corpus.is_test_group`) and cached beside the deep embeddings.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from mailmoat.message.parse import parse_message
from mailmoat.ml.deep.cache import DEFAULT_CACHE
from mailmoat.ml.deep.corpus import is_test_group, read_index

PROXY_PATH = DEFAULT_CACHE / "tier1-proxy.joblib"


def tier1_text(raw: bytes) -> str:
    """What the proxy reads of a message."""
    m = parse_message(raw)
    return f"{m.subject}\n{m.from_domain}\n{m.body_text[:20000]}"


def train_tier1_proxy(corpus: str, rebuild: bool = False) -> tuple[Any, Any]:
    """(vectorizer, classifier) trained on all training-side messages; cached as joblib."""
    import joblib
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import SGDClassifier

    if PROXY_PATH.exists() and not rebuild:
        vec, clf = joblib.load(PROXY_PATH)
        return vec, clf
    rows = [r for r in read_index(corpus) if not is_test_group(r.group)]
    vec = HashingVectorizer(n_features=2**20, ngram_range=(1, 2), alternate_sign=False,
                            norm="l2")
    started = time.time()
    texts = [tier1_text(r.path.read_bytes()) for r in rows]
    y = np.array([0 if r.label == "ham" else 1 for r in rows])
    clf = SGDClassifier(loss="log_loss", alpha=1e-6, max_iter=20, tol=None, random_state=0)
    clf.fit(vec.transform(texts), y)
    print(f"tier-1 proxy trained on {len(rows)} training-side messages in "
          f"{time.time() - started:.0f}s", file=sys.stderr)
    PROXY_PATH.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache yet
    joblib.dump((vec, clf), PROXY_PATH)
    return vec, clf
