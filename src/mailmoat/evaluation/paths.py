"""Where the evaluation programs find the checkout, its results and the shared corpora.

The programs read and write beside the source checkout they run from: `bench/results/` for
their reports, `../shared/corpus/` (beside the checkout) for the corpus archives. Installed
from a wheel, without a checkout around it, the working directory stands in for it.
"""

from __future__ import annotations

from pathlib import Path


def checkout() -> Path:
    """The source checkout this package runs from (editable install or PYTHONPATH=src),
    else the working directory."""
    root = Path(__file__).resolve().parents[3]  # src/mailmoat/evaluation/paths.py
    return root if (root / "pyproject.toml").is_file() and (root / "bench").is_dir() else Path.cwd()


def bench_dir() -> Path:
    return checkout() / "bench"


def results_dir() -> Path:
    """Where benchmarks and evaluation programs write their reports by default."""
    return bench_dir() / "results"


def shared_corpus() -> Path:
    """../shared/corpus beside the checkout: the corpus archives and the EICAR files."""
    return checkout().parent / "shared" / "corpus"
