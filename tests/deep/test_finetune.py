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

    w = {k: torch.from_numpy(v) for k, v in load_file(str(default_model_dir() / "model.safetensors")).items()}
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
