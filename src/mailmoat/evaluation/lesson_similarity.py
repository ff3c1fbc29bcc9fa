"""How similar legitimate mail gets to spam, for choosing `[content] lesson_similarity`.

    nice python -m mailmoat.evaluation.lesson_similarity [--corpus /tmp/corpus] [--workers 2]

A near-copy of one reported spam must not be an ordinary legitimate message. For each
corpus with both ham and spam except trec07p (the first replay of `feedback`), every
ham message's highest cosine similarity to any spam message of
the same corpus, on the tier-1 feature vectors the lesson memory compares; printed as
quantiles and the maximum. A threshold above the maximum would have matched no ham to a
spam lesson even if every spam of the corpus had been reported.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp

from mailmoat.evaluation.corpus import open_corpus
from mailmoat.ml.train import TrainParams, build_matrix, featurize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="extracted corpora (default: /tmp/corpus)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    _, samples = open_corpus(args.corpus)
    X = build_matrix(featurize(samples, workers=args.workers), TrainParams().n_bits).tocsr()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    Xn = sp.diags(1.0 / norms) @ X
    corp = np.array([s.corpus for s in samples])
    ham = np.array([s.label == "ham" for s in samples])
    print("| corpus | ham | spam | ham's nearest spam, cosine: median / 90% / 99% / 99.9% / max |")
    print("|---|---|---|---|")
    for c in ("spamassassin", "csdmc2010", "trec06c"):
        h, s = np.flatnonzero((corp == c) & ham), np.flatnonzero((corp == c) & ~ham)
        best = np.asarray((Xn[h] @ Xn[s].T).max(axis=1).todense()).ravel()
        q = np.quantile(best, [0.5, 0.9, 0.99, 0.999])
        print(f"| {c} | {len(h)} | {len(s)} | " + " / ".join(f"{v:.3f}" for v in q)
              + f" / **{best.max():.3f}** |")


if __name__ == "__main__":
    main()
