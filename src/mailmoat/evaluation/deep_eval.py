"""What tier 2 adds over tier 1, on a grouped held-out split.

    nice python -m mailmoat.evaluation.deep_eval --corpus /tmp/corpus [--band 0.2 0.8]

Tier 1 here is a PROXY (`tier1_proxy`: HashingVectorizer over subject + body words and
bigrams → SGD logistic regression, trained on every training-side message of the index),
because the real tier 1 was trained on all of these corpora and would be scored in-sample.
The split
is the one the deep head was trained with (`mailmoat.ml.deep.corpus.is_test_group`, 20 % of
groups), so no group is on both sides. The test set is the held-out part of the stratified
sample the head was trained from (up to --per-cell messages per corpus and label) that
has a cached embedding (/tmp/mldeep-cache); the numbers are therefore on a class mix that is
not the corpus's natural one, and the script says how many messages of each label it used.

Reported: accuracy, false positives (ham called spam) and false negatives on the uncertain
band and overall, for tier 1 alone and tier 1 with tier 2 on the band (tier 2 replaces tier
1's probability there, which is what the live check's symbols do in effect; and the mean),
except on texts under --min-tokens word pieces, where the live check does not vote either.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from mailmoat.evaluation.tier1_proxy import tier1_text, train_tier1_proxy
from mailmoat.ml.deep.cache import DEFAULT_CACHE, load_cache
from mailmoat.ml.deep.corpus import is_test_group, read_index, sample_rows
from mailmoat.ml.deep.head import Head


def metrics(p: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    pred = p >= 0.5
    return {"n": int(len(p)), "accuracy": round(float((pred == bad).mean()), 4) if len(p) else 0,
            "fp": int((pred & ~bad).sum()), "fn": int((~pred & bad).sum())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/tmp/corpus")
    ap.add_argument("--head", default="")
    ap.add_argument("--per-cell", type=int, default=700)
    ap.add_argument("--band", type=float, nargs=2, default=(0.2, 0.8))
    ap.add_argument("--rebuild-proxy", action="store_true")
    ap.add_argument("--min-tokens", type=int, default=16, help="as [deep] min_tokens: tier 2 "
                    "does not vote on shorter texts (0: it votes on every text)")
    ap.add_argument("--other-engine", choices=("numpy", "onnx-fp32", "onnx-int8"), default="",
                    help="also embed the test set with this engine (same length; cached) and "
                    "score it with the same head: what a fallback engine costs")
    a = ap.parse_args()

    head = Head.load(a.head or None)
    if head.adapter:
        # This program scores cached embeddings of the published (frozen) encoder; a fine-tuned
        # head reads its own encoder's, and the bundled one was trained on every message.
        raise SystemExit("this head was fine-tuned with its encoder: evaluate it out-of-fold "
                         "with python -m mailmoat.evaluation.deep_cv (docs/deep.md); this "
                         "program is for heads on the frozen encoder "
                         "(python -m mailmoat.ml.deep.train --out FILE, then --head FILE)")
    engine = str(head.meta.get("engine", "numpy"))
    cache = load_cache(DEFAULT_CACHE, head.max_tokens, engine)
    test = [r for r in sample_rows(read_index(a.corpus), a.per_cell)
            if is_test_group(r.group) and r.sha256 in cache]
    vec, clf = train_tier1_proxy(a.corpus, a.rebuild_proxy)
    p1 = clf.predict_proba(vec.transform([tier1_text(r.path.read_bytes()) for r in test]))[:, 1]
    pr = head.proba(np.stack([cache[r.sha256] for r in test]))
    p2 = pr[:, 1] + pr[:, 2]
    bad = np.array([r.label != "ham" for r in test])
    is_modern = np.array([r.corpus == "modern_ham" for r in test])
    from sklearn.metrics import log_loss, roc_auc_score
    # The live check does not vote on texts under [deep] min_tokens word pieces (the corpora
    # hold almost no short ham); on the band, tier 1's probability then stands alone.
    min_tokens = a.min_tokens
    if min_tokens:
        from mailmoat.ml.deep.cache import texts_for
        from mailmoat.ml.deep.encoder import MiniLMEncoder

        tok = MiniLMEncoder(max_tokens=head.max_tokens)
        texts = texts_for(test)
        pieces = np.array([len(ids) - 2 for ids in tok.token_ids([texts[r.sha256] for r in test])])
    else:
        pieces = np.full(len(test), 10**6)
    votes = pieces >= min_tokens
    out: dict[str, object] = {
        "test_messages": len(test), "labels": dict(Counter(r.label for r in test)),
        "head": head.meta.get("head"), "engine": engine, "max_tokens": head.max_tokens,
        "tier1": "proxy: HashingVectorizer(1-2 grams)+SGD log-loss",
        "tier2_alone": metrics(p2, bad),
        # threshold-free, so one held-out list read wrongly at 0.5 weighs less
        "tier2_alone_roc_auc": round(float(roc_auc_score(bad, p2)), 4),
        "tier2_alone_log_loss": round(float(log_loss(bad, np.clip(p2, 1e-6, 1 - 1e-6))), 4),
        "tier2_alone_without_modern_ham": metrics(p2[~is_modern], bad[~is_modern]),
        "min_tokens": min_tokens, "tier2_abstains_on": int((~votes).sum()),
        "tier2_abstains_on_ham": int((~votes & ~bad).sum()),
    }
    for lo, hi in (tuple(a.band), (0.05, 0.95)):
        band = (p1 >= lo) & (p1 <= hi)
        replaced = np.where(band & votes, p2, p1)
        mean = np.where(band & votes, (p1 + p2) / 2, p1)
        out[f"band {lo:g}-{hi:g}"] = {
            "in_band": int(band.sum()), "band_share": round(float(band.mean()), 4),
            "tier2_abstains_in_band": int((band & ~votes).sum()),
            "on_band": {"tier1": metrics(p1[band], bad[band]),
                        "tier2": metrics(p2[band], bad[band]),
                        "mean_1_2": metrics(mean[band], bad[band])},
            "overall": {"tier1": metrics(p1, bad), "tier2_replaces_on_band": metrics(replaced, bad),
                        "mean_on_band": metrics(mean, bad)},
        }
    cells: dict[str, list[tuple[bool, bool]]] = {}
    for r, q1, q2, b in zip(test, p1, p2, bad, strict=True):
        cells.setdefault(f"{r.corpus}/{r.label}", []).append(((q1 >= 0.5) == b, (q2 >= 0.5) == b))
    out["accuracy_by_corpus"] = {k: {"n": len(v), "tier1": round(sum(x[0] for x in v) / len(v), 3),
                                     "tier2": round(sum(x[1] for x in v) / len(v), 3)}
                                 for k, v in sorted(cells.items())}
    if a.other_engine:
        from mailmoat.ml.deep.cache import embed_rows
        from mailmoat.ml.deep.engine import open_named

        name = a.other_engine
        enc = open_named(name, max_tokens=head.max_tokens)
        other = embed_rows(test, enc.encode, max_tokens=head.max_tokens, engine=name)
        eo = np.stack([other[r.sha256] for r in test])
        en = np.stack([cache[r.sha256] for r in test])
        po = head.proba(eo)
        q2 = po[:, 1] + po[:, 2]
        out["other_engine_check"] = {
            "engine": name, "messages": len(test),
            "cosine_to_head_engine_min": round(float((eo * en).sum(1).min()), 4),
            "cosine_to_head_engine_mean": round(float((eo * en).sum(1).mean()), 4),
            "tier2_head_engine": metrics(p2, bad), "tier2_other_engine": metrics(q2, bad),
            "decisions_changed": int(((q2 >= 0.5) != (p2 >= 0.5)).sum())}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
