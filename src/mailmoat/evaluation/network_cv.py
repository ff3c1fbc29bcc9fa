"""Non-linear alternatives to tier 1, out-of-fold: is the linear model what limits us?

    nice python -m mailmoat.evaluation.network_cv [--corpus /tmp/corpus] [--scores FILE]
        [--hidden 32] [--epochs 4] [--seeds 1] [--neighbours 10]

Trains, on the same grouped 5-fold split as the other evaluations (`folds`) and on the same hashed tier-1
features, a network with one hidden layer (ReLU, dropout 0.2, softmax over ham/spam/phish,
ham weighted 3x like tier 1) by Adam whose first-layer rows are updated only where a batch
has features (lazy Adam: the layer has a row per feature bucket, ~520,000). Plain numpy, no
torch. Reports the trade-off curve of P(spam or phish) — detection at FP ≤ 0.05/0.1/0.2 %,
FP at 99/99.5 % detection — for tier 1 alone, the network alone and both (mean of
log-odds), on the two design halves (tune, test; `corpus.half`) and on all mail.
Also the k nearest training messages' vote (`--neighbours`, default 10; cosine over the same
buckets, idf-weighted), alone and as a third opinion.
With `--scores` (bench/pipeline_accuracy.py --deep-run ... --dump-scores FILE) also tier 1 +
tier 2 as the gateway combines them, and all three.

Not part of the gateway: a measurement of what a non-linear model over the same features
would change. Writes bench/results/network_cv.md (or under --out).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from mailmoat.evaluation.corpus import group_id, open_corpus
from mailmoat.evaluation.folds import add_cv_args, oof_probabilities
from mailmoat.evaluation.report import command, write_report
from mailmoat.ml.corpus import design_half
from mailmoat.ml.train import TrainParams, build_matrix, featurize, labels_to_y

FP_POINTS = (0.0005, 0.001, 0.002)
DETECTION_POINTS = (0.99, 0.995)


def train_network(X: sp.csr_matrix, y: np.ndarray, hidden: int, epochs: int, seed: int,
                  lr: float = 3e-3, batch: int = 64, ham_weight: float = 3.0,
                  dropout: float = 0.2) -> tuple[np.ndarray, ...]:
    """(W1, b1, W2, b2) of a one-hidden-layer network fitted by Adam, W1 lazily."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    W1 = (rng.standard_normal((d, hidden)) * 0.05).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    W2 = (rng.standard_normal((hidden, 3)) / np.sqrt(hidden)).astype(np.float32)
    b2 = np.zeros(3, np.float32)
    m1, v1, t1 = np.zeros_like(W1), np.zeros_like(W1), np.zeros(d, np.int64)
    dense = [b1, W2, b2]
    md, vd = [np.zeros_like(p) for p in dense], [np.zeros_like(p) for p in dense]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    weight = np.where(y == 0, ham_weight, 1.0).astype(np.float32)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            bi = order[s:s + batch]
            Xb, yb, wb = X[bi], y[bi], weight[bi]
            z = Xb @ W1 + b1
            h = np.maximum(z, 0)
            keep = (rng.random(h.shape) >= dropout).astype(np.float32) / (1 - dropout)
            hd = h * keep
            logits = hd @ W2 + b2
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            g = p.copy()
            g[np.arange(len(bi)), yb] -= 1
            g *= (wb / wb.sum())[:, None]
            dh = (g @ W2.T) * keep * (z > 0)
            grads = [dh.sum(0), hd.T @ g, g.sum(0)]
            rows = np.unique(Xb.indices)
            gW1 = np.asarray(Xb[:, rows].T @ dh)
            step += 1
            for p_, g_, m_, v_ in zip(dense, grads, md, vd):
                m_ *= beta1
                m_ += (1 - beta1) * g_
                v_ *= beta2
                v_ += (1 - beta2) * g_ * g_
                p_ -= lr * (m_ / (1 - beta1 ** step)) / (np.sqrt(v_ / (1 - beta2 ** step)) + eps)
            tr = t1[rows] + 1
            t1[rows] = tr
            mr = m1[rows] * beta1 + (1 - beta1) * gW1
            vr = v1[rows] * beta2 + (1 - beta2) * gW1 * gW1
            m1[rows], v1[rows] = mr, vr
            W1[rows] -= lr * (mr / (1 - beta1 ** tr)[:, None]) / (np.sqrt(vr / (1 - beta2 ** tr)[:, None]) + eps)
    return W1, b1, W2, b2


def bad_logodds_of_network(X: sp.csr_matrix, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray,
                           b2: np.ndarray) -> np.ndarray:
    logits = np.maximum(X @ W1 + b1, 0) @ W2 + b2
    return np.logaddexp(logits[:, 1], logits[:, 2]) - logits[:, 0]


def neighbour_logodds(X: sp.csr_matrix, bad: np.ndarray, tr: np.ndarray, te: np.ndarray,
                      k: int = 10, ham_weight: float = 3.0, prior: float = 0.05,
                      chunk: int = 1000) -> np.ndarray:
    """Nearest neighbours as an opinion: for each test message, the k training messages
    most like it (cosine of idf-weighted features, X already restricted and normalised by
    `neighbour_space`), and log((similarity of the spam/phish among them + prior) /
    (ham_weight × similarity of the ham + prior))."""
    A = X[tr].T.tocsr()
    out = np.zeros(len(te))
    for s in range(0, len(te), chunk):
        S = (X[te[s:s + chunk]] @ A).toarray()
        idx = np.argpartition(-S, k, axis=1)[:, :k]
        sims = np.take_along_axis(S, idx, 1)
        is_bad = bad[tr][idx]
        out[s:s + chunk] = np.log(((sims * is_bad).sum(1) + prior)
                                  / (ham_weight * (sims * ~is_bad).sum(1) + prior))
    return out


def neighbour_space(X: sp.csr_matrix, max_df: float = 0.05) -> sp.csr_matrix:
    """X for `neighbour_logodds`: buckets seen in ≥ 2 and ≤ max_df of the messages (the
    others say little about which mail a message resembles), idf-weighted, rows L2-normed.
    Document frequencies are counted on all mail, labels unused."""
    from sklearn.preprocessing import normalize

    df = np.bincount(X.indices, minlength=X.shape[1])
    keep = np.flatnonzero((df >= 2) & (df <= max_df * X.shape[0]))
    idf = np.log(X.shape[0] / df[keep]).astype(np.float32)
    return normalize((X[:, keep] @ sp.diags(idf)).tocsr())


def logodds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def curve(z: np.ndarray, bad: np.ndarray, mask: np.ndarray) -> list[float]:
    """Detection (%) at each FP_POINTS, then FP (%) at each DETECTION_POINTS."""
    ham, spam = np.sort(z[mask & ~bad])[::-1], np.sort(z[mask & bad])
    out = []
    for fp in FP_POINTS:
        k = int(np.floor(fp * len(ham)))
        above = ham[k] if k < len(ham) else -np.inf  # flag strictly above the k+1-th ham
        out.append(100 * float((spam > above).mean()))
    for det in DETECTION_POINTS:
        t = spam[int(np.floor((1 - det) * len(spam)))]
        out.append(100 * float((ham >= t).mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_cv_args(ap)
    ap.add_argument("--scores", help="bench/pipeline_accuracy.py --dump-scores output (adds tier 2)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1, help="networks averaged (log-odds)")
    ap.add_argument("--neighbours", type=int, default=10,
                    help="k of the nearest-neighbour opinion (the same folds' training mail)")
    args = ap.parse_args()
    started = time.perf_counter()
    root, samples = open_corpus(args.corpus)
    X = build_matrix(featurize(samples, workers=args.workers))
    y = labels_to_y([s.label for s in samples])
    P1 = oof_probabilities(samples, X, y, args.folds, TrainParams(), print)

    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.array([s.group for s in samples])
    net, knn = np.zeros(len(y)), np.zeros(len(y))
    space = neighbour_space(X)
    skf = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=0)
    for k, (tr, te) in enumerate(skf.split(X, y, groups)):
        t = time.perf_counter()
        knn[te] = neighbour_logodds(space, y != 0, tr, te, args.neighbours)
        keep = np.flatnonzero(np.bincount(X[tr].indices, minlength=X.shape[1]) >= 2)
        Xtr, Xte = X[tr][:, keep].tocsr(), X[te][:, keep].tocsr()
        for seed in range(args.seeds):
            net[te] += bad_logodds_of_network(Xte, *train_network(Xtr, y[tr], args.hidden,
                                                                  args.epochs, seed)) / args.seeds
        print(f"  network fold {k + 1}/{args.folds}: {time.perf_counter() - t:.0f}s", flush=True)

    bad = y != 0
    half = np.array([design_half(group_id(g)) for g in groups])
    l1 = logodds(P1[:, 1] + P1[:, 2])
    rows = [("tier 1 (linear)", l1), ("network", net), ("tier 1 + network", (l1 + net) / 2),
            (f"{args.neighbours} nearest neighbours", knn),
            ("tier 1 + neighbours", (l1 + knn) / 2)]
    if args.scores:
        d = np.load(args.scores, allow_pickle=False)
        if [str(p) for p in d["path"]] != [s.path for s in samples]:
            raise SystemExit(f"{args.scores} holds other messages (sampled or another index)")
        if not np.allclose(d["p1"], P1, atol=1e-6):
            raise SystemExit(f"{args.scores}: its tier-1 scores differ from this run's")
        l2, voted = logodds(d["p2"][:, 1] + d["p2"][:, 2]), d["voted"]
        rows += [("tier 1 + tier 2 (gateway)", np.where(voted, (l1 + l2) / 2, l1)),
                 ("tier 1 + tier 2 + network", np.where(voted, (l1 + l2 + net) / 3, (l1 + net) / 2)),
                 ("tier 1 + tier 2 + neighbours",
                  np.where(voted, (l1 + l2 + knn) / 3, (l1 + knn) / 2))]
    head = ("| model | mail | det. @FP≤0.05% | @FP≤0.1% | @FP≤0.2% | FP @99% det. | FP @99.5% det. |\n"
            "|---|---|---|---|---|---|---|")
    lines = [head]
    for name, z in rows:
        for part, mask in (("tune half", half == "tune"), ("test half", half == "test"),
                           ("all", np.ones(len(z), dtype=bool))):
            c = curve(z, bad, mask)
            lines.append(f"| {name} | {part} | " + " | ".join(f"{v:.2f}%" if i < 3 else f"{v:.3f}%"
                                                          for i, v in enumerate(c)) + " |")
    cmd = "nice " + command("mailmoat.evaluation.network_cv")
    md = "\n".join([
        "# A one-hidden-layer network and nearest neighbours over the tier-1 features (out-of-fold)", "",
        (f"Command: `{cmd}` (corpus: {root}; {len(y)} messages; "
         f"{time.perf_counter() - started:.0f} s on a shared 2-core machine). Network: "
         f"{args.hidden} hidden units, {args.epochs} epochs, {args.seeds} seed(s). Neighbours: "
         f"the {args.neighbours} training messages most like each test message (cosine of "
         "idf-weighted buckets seen in 2 to 5 % of the mail), their similarity-weighted "
         "vote, ham ×3. Same "
         f"{args.folds}-fold grouped split and features as `mailmoat.evaluation.accuracy`; "
         "scores are the log-odds of P(spam or phish), combined by their mean. Halves as "
         "`mailmoat.evaluation.phishing_families` splits (by group)."), "", "\n".join(lines), ""])
    write_report(args.out, "network_cv", md)
    print(md)


if __name__ == "__main__":
    main()
