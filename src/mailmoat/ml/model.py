"""The tier-1 model: a linear softmax over hashed tokens, stored as a small .npz file.

Inference is plain numpy: gather the weight rows of the message's buckets, add, softmax. No
scikit-learn at scan time, so loading is a file read and a predict is a few microseconds on
top of feature extraction. Only the buckets that training gave weight are stored (as
float16), which keeps the bundled file to a few MB.

A deployment's own learning (`mailmoat learn`, the console's report buttons) never touches
the bundled file: it is kept as a sparse *delta* in `data_dir/model/content-delta.npz` and
added on load, so a newer bundled model still carries the local lessons.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.errors import MailmoatError
from mailmoat.ml.features import (
    FEATURE_VERSION,
    Features,
    Vector,
    describe_token,
    explainable,
    vectorize,
)

CLASSES: tuple[str, ...] = ("ham", "spam", "phish")
BUNDLED_NAME = "content-model.npz"


class ModelError(MailmoatError):
    """A model file is missing, corrupt or was built for other features."""


def bundled_model_path() -> Path:
    return Path(str(resources.files("mailmoat") / "data" / "model" / BUNDLED_NAME))


@dataclass(frozen=True)
class Contribution:
    token: str
    kind: str  # "phrase", "URL domain", …
    words: str  # plain words: "'click here'", "xyz.biz"
    weight: float  # towards the class that was explained (negative: against)


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # ham, spam, phish; sums to 1
    contributions: tuple[Contribution, ...] = ()  # strongest first, for the explained class
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def p_bad(self) -> float:
        return self.probabilities["spam"] + self.probabilities["phish"]

    @property
    def p_phish(self) -> float:
        return self.probabilities["phish"]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class ContentModel:
    """Weights (n_buckets × classes) and intercepts; see module docstring."""

    def __init__(self, weights: np.ndarray, intercept: np.ndarray, n_bits: int,
                 meta: dict[str, Any] | None = None, classes: tuple[str, ...] = CLASSES) -> None:
        if weights.shape != (1 << n_bits, len(classes)):
            raise ModelError(f"weights shape {weights.shape} does not fit {n_bits} bits")
        self.weights = weights.astype(np.float32, copy=False)
        self.intercept = intercept.astype(np.float32, copy=False)
        self.n_bits = n_bits
        self.classes = classes
        self.meta: dict[str, Any] = dict(meta or {})

    # -- prediction -------------------------------------------------------------------------
    def logits(self, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
        return vals @ self.weights[idx] + self.intercept

    def predict(self, feats: Features, explain: int = 0, bias: float = 0.0,
                vector: Vector | None = None) -> Prediction:
        """Class probabilities; with `explain` > 0 also the strongest tokens for the verdict.

        `bias` is added to the spam and phish logits (a per-domain adjustment: negative
        makes the model more lenient, positive stricter). `vector`: `vectorize(feats,
        self.n_bits)` when the caller already has it (`features.vector_of`).
        """
        idx, vals, toks = vector if vector is not None else vectorize(feats, self.n_bits)
        rows = self.weights[idx] if len(idx) else np.zeros((0, len(self.classes)), np.float32)
        z = vals @ rows + self.intercept if len(idx) else self.intercept.copy()
        if bias:
            z = z + np.array([0.0] + [bias] * (len(self.classes) - 1), dtype=np.float32)
        p = softmax(z.astype(np.float64))
        probs = {c: float(p[i]) for i, c in enumerate(self.classes)}
        contribs: tuple[Contribution, ...] = ()
        if explain and len(idx):
            top = int(np.argmax(p))
            if top == 0:  # explain "ham": tokens pushing away from the likelier bad class
                other = 1 + int(np.argmax(p[1:]))
                c = vals * (rows[:, 0] - rows[:, other])
            else:
                c = vals * (rows[:, top] - rows[:, 0])
            # Up to `explain` phrases and up to `explain // 2 + 1` other features (sender,
            # URLs, structure): phrases are what an administrator reads first, but a URL
            # domain often weighs more than any single word.
            order = np.argsort(-c)[: explain * 8]
            phrases: list[Contribution] = []
            others: list[Contribution] = []
            seen: set[tuple[str, str]] = set()
            for i in order:
                if c[i] <= 0:
                    break
                kind, words = describe_token(toks[i])
                if kind == "subject spelling" or (kind, words) in seen or not explainable(toks[i]):
                    continue  # character trigrams are real evidence but unreadable
                seen.add((kind, words))
                bucket_ = phrases if kind in ("phrase", "subject word") else others
                if len(bucket_) < (explain if bucket_ is phrases else explain // 2 + 1):
                    bucket_.append(Contribution(toks[i], kind, words, float(c[i])))
            out = sorted(phrases + others, key=lambda x: -x.weight)
            contribs = tuple(out)
        return Prediction(probs, contribs, feats.notes)

    def predict_matrix(self, X: Any) -> np.ndarray:
        """Probabilities for a CSR matrix of shape (n, n_buckets)."""
        return softmax(np.asarray(X @ self.weights, dtype=np.float64) + self.intercept)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the non-zero rows as float16 to a compressed .npz (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nz = np.flatnonzero(np.any(self.weights != 0, axis=1)).astype(np.int32)
        meta = dict(self.meta, feature_version=FEATURE_VERSION, classes=list(self.classes))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, rows=nz, values=self.weights[nz].astype(np.float16),
                            intercept=self.intercept, n_bits=np.int32(self.n_bits),
                            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ContentModel:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                n_bits = int(z["n_bits"])
                meta = json.loads(bytes(z["meta"]).decode())
                classes = tuple(meta.get("classes", CLASSES))
                weights = np.zeros((1 << n_bits, len(classes)), dtype=np.float32)
                weights[z["rows"]] = z["values"].astype(np.float32)
                intercept = z["intercept"].astype(np.float32)
        except FileNotFoundError as exc:
            raise ModelError(f"model file not found: {path}") from exc
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a mailmoat content model ({exc})") from exc
        if meta.get("feature_version") != FEATURE_VERSION:
            raise ModelError(f"{path}: built for feature version {meta.get('feature_version')}, "
                             f"this mailmoat extracts version {FEATURE_VERSION}; retrain it")
        return cls(weights, intercept, n_bits, meta, classes)

    def copy(self) -> ContentModel:
        return ContentModel(self.weights.copy(), self.intercept.copy(), self.n_bits,
                            dict(self.meta), self.classes)


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))
