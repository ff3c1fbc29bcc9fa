"""Fill the embedding cache for a sample of the corpus (run with `nice`)."""
from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from mailmoat.ml.deep.cache import DEFAULT_CACHE, embed_rows
from mailmoat.ml.deep.corpus import read_index, sample_rows
from mailmoat.ml.deep.encoder import MiniLMEncoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/tmp/corpus")
    ap.add_argument("--per-cell", type=int, default=700)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = sample_rows(read_index(a.corpus), a.per_cell)
    random.Random(7).shuffle(rows)  # interleave cells so a partial cache covers all of them
    enc = MiniLMEncoder(max_tokens=a.max_tokens, threads=1)
    embed_rows(rows, enc.encode, root=Path(a.cache), max_tokens=a.max_tokens)


if __name__ == "__main__":
    main()
