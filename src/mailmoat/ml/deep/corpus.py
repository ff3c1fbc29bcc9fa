"""A small reader for the corpus index files (`index-<corpus>.tsv`) and a grouped split.

Columns: path, label, corpus, sha256, group. Messages of one group (a thread, a campaign, a
sender) always land on the same side of the split, so the held-out numbers are not flattered
by near-duplicates seen in training.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IndexRow", "read_index", "is_test_group", "sample_rows", "LABELS"]

LABELS = ("ham", "spam", "phish")


@dataclass(frozen=True)
class IndexRow:
    path: Path
    label: str
    corpus: str
    sha256: str
    group: str


def read_index(corpus_dir: str | Path) -> list[IndexRow]:
    """All rows of every `index-*.tsv` under `corpus_dir`; paths made absolute."""
    root = Path(corpus_dir)
    files = sorted(root.glob("index-*.tsv"))
    if not files:
        raise FileNotFoundError(f"no index-*.tsv files in {root}")
    rows: list[IndexRow] = []
    for f in files:
        with f.open(encoding="utf-8", newline="") as fh:
            for rec in csv.DictReader(fh, delimiter="\t"):
                label = rec["label"].strip()
                if label not in LABELS:
                    raise ValueError(f"{f}: unknown label {label!r} for {rec['path']}")
                rows.append(IndexRow(root / rec["path"], label, rec["corpus"], rec["sha256"],
                                     rec["group"] or rec["sha256"]))
    return rows


def is_test_group(group: str, test_fraction: float = 0.2) -> bool:
    """Stable, seed-free assignment of a group to the held-out side."""
    h = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big")
    return (h % 10_000) < test_fraction * 10_000


def sample_rows(rows: Iterable[IndexRow], per_cell: int, seed: int = 13) -> list[IndexRow]:
    """Up to `per_cell` rows per (corpus, label), picked at random but reproducibly.

    Sampling rows (not groups) is safe for leakage because the split is by group afterwards.
    """
    cells: dict[tuple[str, str], list[IndexRow]] = defaultdict(list)
    for r in rows:
        cells[(r.corpus, r.label)].append(r)
    rng = random.Random(seed)
    out: list[IndexRow] = []
    for key in sorted(cells):
        cell = sorted(cells[key], key=lambda r: r.sha256)
        rng.shuffle(cell)
        out.extend(cell[:per_cell])
    return out
