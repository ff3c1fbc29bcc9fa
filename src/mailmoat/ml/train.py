"""Training the tier-1 model: samples → parsed once → tokens → sparse matrix → softmax fit.

Tokens are cached per message (keyed by the file's bytes and the feature version) so repeated
training and cross-validation do not parse the corpus again. The fit is multinomial
logistic regression, one-vs-rest, by stochastic gradient descent (scikit-learn
`SGDClassifier(loss="log_loss")`: seconds for 30,000 messages, where L-BFGS took minutes on
the shared machine for no better ranking); the three logits are read through a softmax.
Hyper-parameters are fixed in `TrainParams` (chosen once on a grouped hold-out, never on
the cross-validation test folds);
buckets seen in fewer than `min_df` training messages get no weight, which keeps the model
small and stops it memorising one-off tokens.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from mailmoat.message.language import language_of
from mailmoat.message.model import Envelope
from mailmoat.message.parse import parse_message
from mailmoat.ml.corpus import Sample, read_sample, strip_path_headers
from mailmoat.ml.features import N_FEATURES_BITS, TOKEN_VERSION, Features, extract, vectorize
from mailmoat.ml.model import CLASSES, ContentModel

DEFAULT_CACHE = Path(os.environ.get("MAILMOAT_ML_CACHE", "/tmp/mlfast-cache"))

Tokens = tuple[list[str], list[str]]  # (text block, meta block)
Progress = Callable[[int], None]


@dataclass(frozen=True)
class TrainParams:
    """Fixed a priori (never tuned on test folds)."""

    alpha: float = 1e-6  # L2 strength; blocks are L2-normalised, so this is scale-free
    min_df: int = 2
    epochs: int = 15
    seed: int = 0
    n_bits: int = N_FEATURES_BITS
    ham_weight: float = 3.0  # sample weight of ham: a false positive costs more than a miss


def message_tokens(raw: bytes, strip: bool = False) -> Tokens:
    if strip:
        raw = strip_path_headers(raw)
    msg = parse_message(raw, Envelope(mail_from="", rcpt_tos=()))
    f = extract(msg)
    return f.text, f.meta


def _tokens_job(args: tuple[list[str], bool]) -> list[Tokens]:
    paths, strip = args
    os.nice(5) if hasattr(os, "nice") else None
    return [message_tokens(read_sample(p), strip) for p in paths]


def featurize(samples: Sequence[Sample], *, strip: bool = False, cache_dir: Path | None = DEFAULT_CACHE,
              workers: int = 1, progress: Progress | None = None) -> list[Tokens]:
    """Tokens of every sample, in order; cached on disk per corpus when `cache_dir` is set."""
    out: list[Tokens | None] = [None] * len(samples)
    cache: dict[str, Tokens] = {}
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256("\n".join(s.path for s in samples).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"v{TOKEN_VERSION}" / f"{'strip' if strip else 'raw'}-{key}.pkl"
        if cache_file.exists():
            try:
                with cache_file.open("rb") as fh:
                    cache = pickle.load(fh)
            except Exception:
                cache = {}
    todo = []
    for i, s in enumerate(samples):
        hit = cache.get(s.path)
        if hit is not None:
            out[i] = hit
            if progress:
                progress(1)
        else:
            todo.append(i)
    chunk = 200
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_tokens_job, [([samples[i].path for i in c], strip) for c in chunks])
            for c, toks in zip(chunks, results):
                for i, t in zip(c, toks):
                    out[i] = t
                if progress:
                    progress(len(c))
    else:
        for c in chunks:
            for i in c:
                out[i] = message_tokens(read_sample(samples[i]), strip)
            if progress:
                progress(len(c))
    if cache_file is not None and todo:
        cache.update({samples[i].path: out[i] for i in todo})  # type: ignore[misc]
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(cache, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cache_file)
    return out  # type: ignore[return-value]


def _languages(paths: list[str]) -> list[str]:
    return [language_of(parse_message(read_sample(p), Envelope(mail_from="", rcpt_tos=())))
            for p in paths]


def _languages_job(paths: list[str]) -> list[str]:
    os.nice(5) if hasattr(os, "nice") else None  # a pool worker: the caller stays as it is
    return _languages(paths)


def language_counts(samples: Sequence[Sample], workers: int = 1) -> dict[str, dict[str, int]]:
    """How many messages of each class the training set holds per language
    (`mailmoat.message.language`; "" where the text is too short to say). Stored with the
    model: the evidence gate does not let the content verdict hold mail in a language of
    which the model saw too little legitimate mail to know what it looks like."""
    paths = [s.path for s in samples]
    chunks = [paths[i:i + 500] for i in range(0, len(paths), 500)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            langs = [lang for part in pool.map(_languages_job, chunks) for lang in part]
    else:
        langs = _languages(paths)
    counts: dict[str, dict[str, int]] = {}
    for s, lang in zip(samples, langs):
        by_class = counts.setdefault(lang, {})
        by_class[s.label] = by_class.get(s.label, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -sum(kv[1].values())))


def build_matrix(tokens: Sequence[Tokens], n_bits: int = N_FEATURES_BITS) -> sp.csr_matrix:
    indptr = [0]
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for text, meta in tokens:
        idx, vals, _ = vectorize(Features(text, meta), n_bits)
        idx_parts.append(idx)
        val_parts.append(vals)
        indptr.append(indptr[-1] + len(idx))
    X = sp.csr_matrix((np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32),
                       np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64),
                       np.asarray(indptr)), shape=(len(tokens), 1 << n_bits), dtype=np.float32)
    X.sum_duplicates()
    return X


def labels_to_y(labels: Sequence[str]) -> np.ndarray:
    return np.array([CLASSES.index(lb) for lb in labels], dtype=np.int64)


def fit(X: sp.csr_matrix, y: np.ndarray, params: TrainParams = TrainParams(),
        meta: dict[str, Any] | None = None) -> ContentModel:
    """Fit the softmax model on rows of X; returns a ContentModel (dense weights)."""
    from sklearn.linear_model import SGDClassifier

    present = np.unique(y)
    df = np.bincount(X.indices, minlength=X.shape[1])
    keep = np.flatnonzero(df >= params.min_df)
    Xk = X[:, keep]
    sw = np.where(y == 0, params.ham_weight, 1.0)
    clf = SGDClassifier(loss="log_loss", alpha=params.alpha, max_iter=params.epochs, tol=None,
                        random_state=params.seed)
    clf.fit(Xk, y, sample_weight=sw)
    weights = np.zeros((X.shape[1], len(CLASSES)), dtype=np.float32)
    intercept = np.full(len(CLASSES), -30.0, dtype=np.float32)  # classes never seen: ~0
    coef = clf.coef_
    if len(present) == 2:  # binary fit: one coefficient row for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        icpt = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
    else:
        icpt = clf.intercept_
    for j, cls_id in enumerate(clf.classes_):
        weights[keep, cls_id] = coef[j]
        intercept[cls_id] = icpt[j]
    m = dict(meta or {})
    m.update(params=asdict(params), n_train=int(X.shape[0]),
             n_train_per_class={CLASSES[c]: int((y == c).sum()) for c in present})
    return ContentModel(weights, intercept, params.n_bits, m)


@dataclass
class Report:
    """Metrics of a model on held-out samples (see `evaluate.metrics`)."""

    rows: list[dict[str, Any]] = field(default_factory=list)


def grouped_holdout(samples: Sequence[Sample], test_size: float = 0.2,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices with every group on one side (about `test_size` of groups held out)."""
    rng = np.random.default_rng(seed)
    groups = sorted({s.group for s in samples})
    rng.shuffle(groups)  # type: ignore[arg-type]
    held = set(groups[: max(1, int(len(groups) * test_size))])
    test = np.array([i for i, s in enumerate(samples) if s.group in held], dtype=np.int64)
    train = np.array([i for i, s in enumerate(samples) if s.group not in held], dtype=np.int64)
    return train, test


def train(samples: Sequence[Sample], params: TrainParams = TrainParams(), *, validate: bool = True,
          strip: bool = False, workers: int = 1, cache_dir: Path | None = DEFAULT_CACHE,
          progress: Progress | None = None, status: Callable[[str], None] | None = None,
          ) -> tuple[ContentModel, dict[str, Any] | None]:
    """Featurise, optionally validate on a grouped 20 % hold-out, then fit on everything.

    Returns the final model and the hold-out metrics (None without `validate`).
    """
    say = status or (lambda _m: None)
    t0 = time.perf_counter()
    tokens = featurize(samples, strip=strip, workers=workers, cache_dir=cache_dir, progress=progress)
    X = build_matrix(tokens, params.n_bits)
    y = labels_to_y([s.label for s in samples])
    report = None
    if validate and len({s.group for s in samples}) >= 5:
        from mailmoat.ml.evaluate import metrics

        tr, te = grouped_holdout(samples)
        say(f"validating: fit on {len(tr)} messages, test on {len(te)} held-out messages "
            f"(groups never straddle the split)")
        m = fit(X[tr], y[tr], params)
        P = m.predict_matrix(X[te])
        report = metrics([samples[i] for i in te], P)
    say(f"fitting the final model on all {len(samples)} messages")
    corpora: dict[str, dict[str, int]] = {}
    for s in samples:
        corpora.setdefault(s.corpus, {}).setdefault(s.label, 0)
        corpora[s.corpus][s.label] += 1
    model = fit(X, y, params, meta={"corpora": corpora, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "path_headers_stripped": strip})
    say("counting the training messages per language")
    model.meta["languages"] = language_counts(samples, workers)
    model.meta["train_seconds"] = round(time.perf_counter() - t0, 1)
    return model, report
