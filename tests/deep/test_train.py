"""Corpus index reading, the grouped split, and a tiny end-to-end training run."""

from __future__ import annotations

import numpy as np
import pytest

from mailmoat.ml.deep.corpus import is_test_group, read_index, sample_rows
from mailmoat.ml.deep.head import Head
from mailmoat.ml.deep.train import binary_report, main
from tests.conftest import make_email

TEXTS = {
    "ham": ["Minutes of the planning meeting {i}", "Lunch on Friday {i}?", "Patch review {i}",
            "Family photos {i}", "Project status report {i}", "Re: build failure {i}",
            "Agenda for the workshop {i}", "Notes from the call {i}"],
    "spam": ["Cheap pills online {i}", "You won the lottery {i}", "Huge discount sale {i}",
             "Work from home and earn {i}", "Replica watches {i}", "Hot stock tip {i}",
             "Lowest mortgage rates {i}", "Meet singles tonight {i}"],
    "phish": ["Verify your account {i}", "Your password expires {i}", "Unusual sign-in {i}",
              "Mailbox full, upgrade {i}", "Update bank details {i}", "Parcel fee due {i}",
              "Shared document, sign in {i}", "Payment declined {i}"],
}


def write_corpus(root):
    lines = ["path\tlabel\tcorpus\tsha256\tgroup"]
    for label, subjects in TEXTS.items():
        (root / label / "tiny").mkdir(parents=True)
        for i, subj in enumerate(subjects):
            rel = f"{label}/tiny/{i}.eml"
            (root / rel).write_bytes(make_email(subject=subj.format(i=i), body=subj.format(i=i)))
            lines.append(f"{rel}\t{label}\ttiny\t{label}{i:062d}\tg-{label}-{i}")
    (root / "index-tiny.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_read_index_and_sampling(tmp_path):
    write_corpus(tmp_path)
    rows = read_index(tmp_path)
    assert len(rows) == 24 and rows[0].path.is_file()
    sample = sample_rows(rows, per_cell=3)
    assert len(sample) == 9 and sample == sample_rows(rows, per_cell=3)  # reproducible


def test_read_index_rejects_unknown_label(tmp_path):
    (tmp_path / "index-x.tsv").write_text("path\tlabel\tcorpus\tsha256\tgroup\na\tmaybe\tx\ty\tz\n")
    with pytest.raises(ValueError, match="unknown label 'maybe'"):
        read_index(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_index(tmp_path / "nothing")


def test_grouped_split_is_stable_and_about_one_fifth():
    groups = [f"g{i}" for i in range(5000)]
    held = [g for g in groups if is_test_group(g)]
    assert 0.17 < len(held) / len(groups) < 0.23
    assert held == [g for g in groups if is_test_group(g)]


def test_binary_report_counts():
    y = np.array([0, 0, 1, 2, 2])
    rep = binary_report(np.array([0.9, 0.1, 0.8, 0.2, 0.7]), y)
    assert (rep["fp"], rep["fn"], rep["accuracy"]) == (1, 1, 0.6)


def test_train_tiny_corpus_writes_loadable_head(tmp_path):
    write_corpus(tmp_path / "corpus")
    out = tmp_path / "head.npz"
    assert main(["--corpus", str(tmp_path / "corpus"), "--out", str(out), "--per-cell", "8",
                 "--cache", str(tmp_path / "cache"), "--max-tokens", "32"]) == 0
    head = Head.load(out)
    assert head.max_tokens == 32 and head.meta["head"] == "logreg"
    assert head.meta["train_messages"] + head.meta.get("held_out", {}).get("messages", 0) == 24
    # The cache makes a rerun embed nothing new.
    chunks = sorted((tmp_path / "cache").rglob("chunk-*.npz"))
    assert main(["--corpus", str(tmp_path / "corpus"), "--out", str(out), "--per-cell", "8",
                 "--cache", str(tmp_path / "cache"), "--max-tokens", "32"]) == 0
    assert sorted((tmp_path / "cache").rglob("chunk-*.npz")) == chunks


def test_train_deep_command_registers():
    import typer
    from typer.testing import CliRunner

    from mailmoat.commands.deep import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    res = CliRunner().invoke(app, ["train-deep", "--help"])
    assert res.exit_code == 0 and "--per-cell" in res.output and "--cached-only" in res.output
