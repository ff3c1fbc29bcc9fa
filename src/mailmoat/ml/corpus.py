"""Labelled mail for training and measuring: corpus folders, plain folders and mbox files.

The shared corpora come as `LABEL/CORPUS/NAME.eml` plus `index-CORPUS.tsv` files with the
columns `path, label, corpus, sha256, group`. Messages with the same `group` are copies or
near-copies of one mail; any split must keep a group on one side, or the measured numbers
are optimistic. `load_index(corpus_dir)` reads those files into `Sample`s; `load_labelled()`
turns plain folders or mbox files given on the command line into the same shape.

Other areas (the deep model, benchmarks) import `load_index`, `Sample` and `read_sample`.
"""

from __future__ import annotations

import csv
import hashlib
import mailbox
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mailmoat.errors import MailmoatError

LABELS: tuple[str, ...] = ("ham", "spam", "phish")

__all__ = [
    "LABELS",
    "PATH_HEADER_PREFIXES",
    "CorpusError",
    "Sample",
    "load_index",
    "load_labelled",
    "read_sample",
    "strip_path_headers",
]


class CorpusError(MailmoatError):
    """A corpus folder, index file or mbox could not be read."""


@dataclass(frozen=True)
class Sample:
    """One labelled message.

    `path` is the .eml file; for messages inside an mbox it is `file.mbox#N` (N counts from
    0) and `read_sample` knows how to get the bytes back. `group` names a set of copies or
    near-copies: keep it on one side of any split.
    """

    path: str
    label: str  # ham | spam | phish
    corpus: str
    group: str


def load_index(corpus_dir: str | Path, corpora: Iterable[str] | None = None) -> list[Sample]:
    """Read every `index-*.tsv` in `corpus_dir` (optionally only the named corpora).

    Paths in the index are relative to `corpus_dir`; the returned paths are absolute.
    Groups are prefixed with the corpus name, so equal group ids of two corpora never merge.
    Raises `CorpusError` when the folder has no index files or a row is malformed.
    """
    root = Path(corpus_dir)
    files = sorted(root.glob("index-*.tsv"))
    wanted = set(corpora) if corpora is not None else None
    if not files:
        raise CorpusError(f"{root}: no index-*.tsv files (expected an extracted corpus)")
    samples: list[Sample] = []
    for f in files:
        with f.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            for n, row in enumerate(reader, start=2):
                try:
                    label, corpus = row["label"], row["corpus"]
                    path, group = row["path"], row.get("group") or row["sha256"]
                except (KeyError, TypeError) as exc:
                    raise CorpusError(f"{f}:{n}: missing column {exc}") from exc
                if label not in LABELS:
                    raise CorpusError(f"{f}:{n}: unknown label {label!r}")
                if wanted is not None and corpus not in wanted:
                    continue
                samples.append(Sample(str(root / path), label, corpus, f"{corpus}:{group}"))
    return samples


def design_half(group: str) -> str:
    """"tune" or "test" for an index group id (as written in index-*.tsv, without the corpus
    prefix `load_index` adds): sha1 of it even or odd. Copies of one mail stay on one side,
    so rule checks designed on the tune half can be judged on the test half."""
    return "tune" if int(hashlib.sha1(group.encode()).hexdigest(), 16) % 2 == 0 else "test"


def load_labelled(sources: dict[str, list[str]]) -> list[Sample]:
    """Samples from plain folders (*.eml or any file, recursively) and mbox files per label.

    `sources` maps a label to paths. Each file is its own group, except that byte-identical
    messages share one (so duplicates never straddle a split).
    """
    samples: list[Sample] = []
    for label, paths in sources.items():
        if label not in LABELS:
            raise CorpusError(f"unknown label {label!r}")
        for p in paths:
            path = Path(p)
            corpus = path.stem if path.is_file() else path.name
            for sp, raw in _iter_messages(path):
                group = hashlib.sha256(raw).hexdigest()[:16]
                samples.append(Sample(sp, label, corpus or label, f"{label}:{group}"))
    return samples


def _iter_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                yield from _iter_messages(f)
        return
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if _is_mbox(path):
        for i, raw in enumerate(_mbox_messages(path)):
            yield f"{path}#{i}", raw
        return
    yield str(path), path.read_bytes()


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() in (".mbox", ".mbx"):
        return True
    with path.open("rb") as fh:
        return fh.read(5) == b"From "


def _mbox_messages(path: Path) -> Iterator[bytes]:
    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)
    finally:
        box.close()


def read_sample(sample: Sample | str) -> bytes:
    """The raw bytes of a sample (an .eml path or `file.mbox#N`)."""
    p = sample.path if isinstance(sample, Sample) else sample
    if "#" in p and not Path(p).exists():
        base, _, idx = p.rpartition("#")
        if idx.isdigit():
            for i, raw in enumerate(_mbox_messages(Path(base))):
                if i == int(idx):
                    return raw
            raise CorpusError(f"{base}: has no message #{idx}")
    try:
        return Path(p).read_bytes()
    except OSError as exc:
        raise CorpusError(f"{p}: {exc.strerror or exc}") from exc


# Headers written by the relays a message passed, not by its sender. The shared ham and the
# modern phishing passed very different paths (2002–2007 list servers vs Microsoft 365), so
# a model that read these would learn the era, not the intent. The features never read them;
# evaluations strip them anyway to prove it.
PATH_HEADER_PREFIXES: tuple[str, ...] = (
    "received", "return-path", "x-", "arc-", "authentication-results", "message-id",
    "dkim-signature", "delivered-to", "received-spf",
)


def strip_path_headers(raw: bytes) -> bytes:
    """Remove relay/path headers (see PATH_HEADER_PREFIXES) from the top-level header block."""
    sep = raw.find(b"\r\n\r\n")
    sep_len = 4
    alt = raw.find(b"\n\n")
    if alt != -1 and (sep == -1 or alt < sep):
        sep, sep_len = alt, 2
    if sep == -1:
        head, body = raw, b""
    else:
        head, body = raw[:sep + sep_len // 2], raw[sep + sep_len // 2:]
    out: list[bytes] = []
    keep = True
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        keep = not name.startswith(PATH_HEADER_PREFIXES)
        if keep:
            out.append(line)
    return b"".join(out) + body
