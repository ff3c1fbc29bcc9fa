"""Finding the shared corpora and splitting them the way every evaluation does."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from mailmoat.evaluation.paths import shared_corpus
from mailmoat.ml.corpus import Sample, design_half, load_index

# Where docs/benchmarks.md says to extract the corpora.
EXTRACTED = Path(tempfile.gettempdir()) / "corpus"


def open_corpus(arg: str | None, nice: int = 10) -> tuple[Path, list[Sample]]:
    """Every corpus program's start: lower our priority (the gateway's tests and benches
    share the machine), find the extracted corpora (`corpus_dir`) and read their index."""
    if hasattr(os, "nice"):
        os.nice(nice)
    root = corpus_dir(arg)
    return root, load_index(root)


def corpus_dir(arg: str | None) -> Path:
    """`arg` if it exists, else /tmp/corpus if extracted there, else the archives of
    ../shared/corpus extracted into a new temporary folder."""
    if arg and Path(arg).exists():
        return Path(arg)
    if (EXTRACTED / "index-trec07p.tsv").exists():
        return EXTRACTED
    tmp = Path(tempfile.mkdtemp(prefix="mailmoat-corpus-"))
    for archive in sorted(shared_corpus().glob("*.tar.xz")):
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
    return tmp


def half(sample: Sample) -> str:
    """The sample's design half, "tune" or "test" (`design_half` of the index's own group id,
    i.e. without the "corpus:" prefix). Rule checks are designed on the misses of the tune
    half and judged on the test half."""
    return design_half(group_id(sample.group))


def group_id(group: str) -> str:
    """A sample's group as the index writes it (`Sample.group` is "corpus:group")."""
    return group.split(":", 1)[1] if ":" in group else group
