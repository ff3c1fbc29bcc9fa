"""Fine-tuning: the torch network it trains is the network the gateway runs, and its
exported adapter + head reproduce the trained model's probabilities in the numpy engine.

The training half needs torch (the `finetune` extra, which CI installs); preparing the data
needs only the gateway's own dependencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mailmoat.ml.deep import finetune as ft
from mailmoat.ml.deep.adapter import is_adapter_key
from mailmoat.ml.deep.encoder import MiniLMEncoder, default_model_dir
from mailmoat.ml.deep.head import Head
from tests.conftest import make_email

TEXTS = ["Verify your account now or it will be suspended. Click the link to confirm.",
         "Can we move our meeting to Thursday afternoon? The agenda is attached.",
         "会议 明天 下午 三点 在 二楼", "Cheap meds without prescription, best prices online today"]


def write_corpus(root: Path, per_label: int = 6) -> None:
    """A tiny corpus in the shared layout: .eml files and an index with groups."""
    lines = ["path\tlabel\tcorpus\tsha256\tgroup"]
    bodies = {"ham": TEXTS[1], "spam": TEXTS[3], "phish": TEXTS[0]}
    for label, body in bodies.items():
        for i in range(per_label):
            rel = f"{label}/tiny/{i}.eml"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(make_email(subject=f"{label} {i}", body=f"{body} {i}"))
            lines.append(f"{rel}\t{label}\ttiny\t{label}{i}\t{label}-g{i}")
    (root / "index-tiny.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_prepare_tokenises_as_the_gateway_and_keeps_groups_whole(tmp_path):
    write_corpus(tmp_path / "c")
    out = tmp_path / "data.npz"
    ft.prepare(tmp_path / "c", out, max_tokens=32, folds=3, workers=1,
               weights_out=tmp_path / "w.safetensors")
    z = np.load(out)
    assert z["ids"].shape == (18, 32) and int(z["max_tokens"]) == 32
    assert sorted(set(z["y"].tolist())) == [0, 1, 2]
    enc = MiniLMEncoder(max_tokens=32)
    from mailmoat.message.parse import parse_message
    from mailmoat.ml.deep.text import message_text

    first = message_text(parse_message((tmp_path / "c" / str(z["path"][0])).read_bytes()))
    assert z["ids"][0, :z["lengths"][0]].tolist() == enc.token_ids([first])[0]
    for g in set(z["group"].tolist()):  # a group never straddles folds
        assert len(set(z["fold"][z["group"] == g].tolist())) == 1
    assert (tmp_path / "w.safetensors").stat().st_size > 40_000_000  # fp16 of 22.7 M


def test_trained_adapter_reproduces_the_torch_model_in_numpy(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    w = {k: torch.from_numpy(v.astype(np.float32))
         for k, v in load_file(str(default_model_dir() / "model.safetensors")).items()}
    import json

    cfg = json.loads((default_model_dir() / "config.json").read_text())
    tc = ft.TrainConfig(rank=4, epochs=1, batch=2, lora_dropout=0.0)
    enc = MiniLMEncoder(max_tokens=32)
    ids = enc.token_ids(TEXTS)
    arr = np.zeros((len(ids), 32), np.uint16)
    for i, r in enumerate(ids):
        arr[i, :len(r)] = r
    lengths = np.array([len(r) for r in ids], np.uint8)
    y = np.array([2, 0, 0, 1])
    model = ft.train_one(w, cfg, arr, lengths, y, np.arange(4), tc, "cpu")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 50_000 < trainable < 400_000  # adapters, biases, norms, head: not the 22.7 M
    assert any(float(m.b.detach().abs().max()) > 0 for m in model.modules() if type(m).__name__ == "LoRALinear")
    p_torch = ft.predict(model, arr, lengths, np.arange(4), "cpu")
    arrays = ft.export_adapter(model, tc)
    adapter = {k: v for k, v in arrays.items() if is_adapter_key(k)}
    head = Head([(arrays["head_W"], arrays["head_b"])], np.zeros((1, 384), np.float32), ["ham"],
                ["x"], {"max_tokens": 32}, adapter)
    tuned = MiniLMEncoder(max_tokens=32, adapter=adapter)
    p_numpy = head.proba(tuned.embed_ids(ids))
    # the adapter is stored in float16: close, not bit-equal
    assert np.abs(p_numpy - p_torch).max() < 2e-3


def test_finetune_deep_command_trains_a_head_the_gateway_loads(tmp_path):
    """`mailmoat finetune-deep` on folders of one's own mail: validation numbers, a head file
    with its adapter, and the deep check scoring with it through `[deep] head_path`."""
    pytest.importorskip("torch")
    import typer
    from typer.testing import CliRunner

    from mailmoat.commands.deep import register
    from mailmoat.scan.deep import DeepModel

    for label, body in (("ham", TEXTS[1]), ("spam", TEXTS[3]), ("phish", TEXTS[0])):
        d = tmp_path / label
        d.mkdir()
        for i in range(10):
            (d / f"{i}.eml").write_bytes(make_email(subject=f"{label} note {i}",
                                                    body=f"{body} number {i} " * 3))
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    out = tmp_path / "mine.npz"
    res = CliRunner().invoke(app, ["finetune-deep", "--out", str(out), "--ham", str(tmp_path / "ham"),
                                   "--spam", str(tmp_path / "spam"), "--phish",
                                   str(tmp_path / "phish"), "--epochs", "1", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert '"held_out"' in res.output and "head_path" in res.output
    head = Head.load(out)
    assert head.adapter and head.meta["train_messages"] == 30
    assert head.meta["held_out"]["messages"] == 6  # one fold of five, by group
    # the int8 engine was compared with the training model on every message (a tiny, barely
    # trained model sits near 0.5, so the count of changed decisions is not pinned here)
    assert head.meta["engine_check"]["messages"] == 30
    model = DeepModel(head_path=str(out), engine="numpy")
    pred = model.score(TEXTS[0] + " " + TEXTS[0])
    assert 0.0 <= pred.p_bad <= 1.0 and pred.pattern


def test_finetune_deep_needs_two_labels(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "1.eml").write_bytes(make_email())
    with pytest.raises(SystemExit, match="at least two labels"):
        ft.finetune(tmp_path / "h.npz", sources={"ham": [str(tmp_path / "ham")]}, workers=1)


def test_input_digests_tell_which_texts_changed_since_a_run():
    # What a bench checks before pairing a run's tier-2 scores with today's texts.
    ids = np.array([[101, 7, 8, 102, 0], [101, 9, 102, 0, 0], [101, 9, 102, 0, 0]], np.uint16)
    lengths = np.array([4, 3, 3], np.uint8)
    before = ft.input_digests(ids, lengths)
    assert before.dtype == np.uint64 and before[1] == before[2] and before[0] != before[1]
    now = ids.copy()
    now[1, 1] = 10  # a parser fix changed one word piece of the second text
    now[2, 4] = 55  # beyond the text's length: padding, not read
    assert (ft.input_digests(now, lengths) != before).tolist() == [False, True, False]
