"""Corpus loading: index files, plain folders, mbox files, path-header stripping."""

from __future__ import annotations

import mailbox

import pytest

from mailmoat.ml.corpus import (
    CorpusError,
    load_index,
    load_labelled,
    read_sample,
    strip_path_headers,
)
from tests.conftest import make_email
from tests.ml.synth import make_corpus


def test_load_index_prefixes_groups_and_resolves_paths(tmp_path):
    root = make_corpus(tmp_path, n=4, labels=("ham", "spam"))
    samples = load_index(root)
    assert len(samples) == 8 and {s.label for s in samples} == {"ham", "spam"}
    assert all(s.group.startswith("synth:") for s in samples)
    assert read_sample(samples[0]).startswith(b"From:") or b"Subject:" in read_sample(samples[0])
    assert load_index(root, ["other"]) == []


def test_load_index_errors_are_clear(tmp_path):
    with pytest.raises(CorpusError, match="no index"):
        load_index(tmp_path)
    (tmp_path / "index-x.tsv").write_text("path\tlabel\tcorpus\tsha256\tgroup\na.eml\tegg\tx\t0\tg\n")
    with pytest.raises(CorpusError, match="unknown label"):
        load_index(tmp_path)


def test_mbox_and_folder_sources(tmp_path):
    box = mailbox.mbox(str(tmp_path / "spam.mbox"))
    for i in range(3):
        box.add(make_email(subject=f"offer {i}", body=f"buy now {i}"))
    box.flush()
    box.close()
    (tmp_path / "hamdir").mkdir()
    (tmp_path / "hamdir" / "1.eml").write_bytes(make_email(subject="hi"))
    samples = load_labelled({"spam": [str(tmp_path / "spam.mbox")], "ham": [str(tmp_path / "hamdir")]})
    assert [s.label for s in samples].count("spam") == 3
    mb = [s for s in samples if s.label == "spam"][2]
    assert mb.path.endswith("#2") and b"offer 2" in read_sample(mb)
    with pytest.raises(CorpusError):
        load_labelled({"spam": [str(tmp_path / "missing")]})


def test_strip_path_headers_keeps_content_and_folded_lines():
    raw = (b"Received: from a\r\n\tby b\r\nX-Spam: yes\r\nSubject: keep me\r\n"
           b"ARC-Seal: i=1;\r\n  more\r\nFrom: a@b.test\r\n\r\nReceived: in the body stays\r\n")
    out = strip_path_headers(raw)
    assert out == b"Subject: keep me\r\nFrom: a@b.test\r\n\r\nReceived: in the body stays\r\n"
