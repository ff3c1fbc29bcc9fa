"""Fine-tune tier 2 end to end: all-MiniLM-L6-v2 with low-rank adapters, plus its head.

A classifier on *frozen* sentence embeddings read mail at 0.878 held-out accuracy
(docs/deep.md): the embedding was made for sentence similarity, not for telling a phish from
a newsletter. Fine-tuning moves the encoder itself. To keep what ships small, only low-rank
updates of every weight matrix (LoRA, rank 16: `TrainConfig`), the biases and the layer norms are
trained (~0.7 M of 22.7 M parameters), with a linear head on the same mean-pooled,
L2-normalised embedding the gateway computes; `mailmoat.ml.deep.adapter` merges the update
into the published weights at load time, so the numpy and ONNX engines run it unchanged and
at the same speed.

Three steps (the middle one wants a GPU: a few minutes there, hours on two CPU cores):

    # 1. CPU: parse every indexed message once, tokenise what tier 2 reads, fix the folds
    python -m mailmoat.ml.deep.finetune prepare --corpus /tmp/corpus --out /tmp/ft/data.npz \
        --weights-out /tmp/ft/minilm-fp16.safetensors
    # 2. torch (pip install -e '.[finetune]'): out-of-fold scores of a grouped k-fold (the
    #    same folds as bench/accuracy.py), the source and era tests, and the final adapter
    python -m mailmoat.ml.deep.finetune train --data /tmp/ft/data.npz \
        --weights /tmp/ft/minilm-fp16.safetensors --out /tmp/ft/run
    # 3. CPU: the head file the gateway loads (adapter + head + prototype embeddings)
    python -m mailmoat.ml.deep.finetune finalize --run /tmp/ft/run --data /tmp/ft/data.npz \
        --out src/mailmoat/data/deep/head.npz

`mailmoat finetune-deep` runs all three on one machine for folders or mbox files of one's
own mail (`finetune()` below). Hyper-parameters are fixed (`TrainConfig`), chosen before any fold was scored; nothing here
looks at test folds to pick them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("mailmoat.ml.deep.finetune")

CLASSES = ("ham", "spam", "phish")
# What the source and era tests hold out (as bench/accuracy.py does for tier 1).
SOURCE_TEST = ("trec07p", "phishing_pot")
ERA_TEST = ("modern_ham",)


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 32.0
    lora_dropout: float = 0.1
    epochs: int = 3
    batch: int = 64
    lr: float = 5e-4          # adapters, biases, layer norms
    head_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.06      # share of the steps
    head_scale: float = 10.0  # the head reads 10 × the unit embedding (folded into W on export)
    seed: int = 0


# --- step 1: prepare (CPU, no torch) --------------------------------------------------------


def _text_of(path: str) -> str:
    from mailmoat.ml.corpus import read_sample
    from mailmoat.ml.deep.text import text_of

    try:
        return text_of(read_sample(path))
    except Exception:  # noqa: BLE001  (unparseable mail: the gateway quarantines it anyway)
        return ""


def prepare(corpus: Path | None, out: Path, max_tokens: int, folds: int, workers: int,
            weights_out: Path | None, sources: dict[str, list[str]] | None = None) -> None:
    """Write the training data: the indexed corpus under `corpus`, or the folders and mbox
    files of `sources` (label → paths, as `mailmoat train` takes them)."""
    from concurrent.futures import ProcessPoolExecutor

    from sklearn.model_selection import StratifiedGroupKFold

    from mailmoat.ml.corpus import load_index, load_labelled
    from mailmoat.ml.deep.encoder import MiniLMEncoder, default_model_dir

    samples = load_index(corpus) if corpus else load_labelled(sources or {})
    if len({s.label for s in samples}) < 2:
        raise SystemExit(f"need mail of at least two labels (ham and spam or phish), got "
                         f"{len(samples)} messages of {sorted({s.label for s in samples})}")
    started = time.time()
    with ProcessPoolExecutor(workers) as pool:
        texts = list(pool.map(_text_of, [s.path for s in samples], chunksize=64))
    log.info("parsed %d messages in %.0f s", len(texts), time.time() - started)
    mdir = default_model_dir()
    enc = MiniLMEncoder(mdir, max_tokens=max_tokens)  # the gateway's own tokenising path
    ids = enc.token_ids(texts)
    arr = np.zeros((len(ids), max_tokens), dtype=np.uint16)
    for i, row in enumerate(ids):
        arr[i, :len(row)] = row
    y = np.array([CLASSES.index(s.label) for s in samples], dtype=np.int8)
    groups = np.array([s.group for s in samples])
    fold = np.zeros(len(samples), dtype=np.int8)
    # Exactly the split of bench/accuracy.py's oof_probabilities (same samples, labels,
    # groups and seed), so tier 1's and tier 2's out-of-fold scores come from models that
    # never saw the same test fold.
    # (A small set of one's own mail may have fewer groups of a label than folds: fewer
    # folds then, and none at all below two.)
    folds = min(folds, min(len(set(groups[y == c])) for c in set(y.tolist())))
    if folds >= 2:
        skf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
        for k, (_, te) in enumerate(skf.split(np.zeros(len(y)), y.astype(np.int64), groups)):
            fold[te] = k
    rel = [str(Path(s.path).relative_to(corpus)) if corpus and s.path.startswith(str(corpus))
           else s.path for s in samples]
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = (mdir / "config.json").read_text(encoding="utf-8")
    np.savez_compressed(out, ids=arr, lengths=np.array([len(r) for r in ids], dtype=np.uint8),
                        y=y, fold=fold, corpus=np.array([s.corpus for s in samples]),
                        group=groups, path=np.array(rel), config=np.array(cfg),
                        max_tokens=np.array(max_tokens))
    log.info("wrote %s: %d messages, %d folds, %d word pieces", out, len(samples), folds,
             max_tokens)
    if weights_out:
        from safetensors.numpy import load_file, save_file

        w = load_file(str(mdir / "model.safetensors"))
        # fp16 halves what must travel to a training machine (86 → 43 MB); the adapter is
        # learned on top of these rounded weights, a change far below int8's at run time.
        save_file({k: v.astype(np.float16) for k, v in w.items()}, str(weights_out))
        log.info("wrote %s", weights_out)


# --- step 2: train (torch) ------------------------------------------------------------------


def _torch_model(weights: dict[str, Any], cfg: dict[str, Any], tc: TrainConfig) -> Any:
    """The encoder of encoder.py in torch, with LoRA on every linear layer."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    h, nh = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))

    def frozen(name: str) -> nn.Parameter:
        return nn.Parameter(weights[name].float().clone(), requires_grad=False)

    def trainable(name: str) -> nn.Parameter:
        return nn.Parameter(weights[name].float().clone())

    class LoRALinear(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name
            self.weight = frozen(name + ".weight")
            self.bias = trainable(name + ".bias")
            out_f, in_f = self.weight.shape
            self.a = nn.Parameter(torch.empty(tc.rank, in_f))
            nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
            self.b = nn.Parameter(torch.zeros(out_f, tc.rank))  # starts as the base model
            self.drop = nn.Dropout(tc.lora_dropout)
            self.scale = tc.alpha / tc.rank

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.weight, self.bias) + \
                (self.drop(x) @ self.a.t() @ self.b.t()) * self.scale

    class Norm(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name
            self.weight, self.bias = trainable(name + ".weight"), trainable(name + ".bias")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(x, (h,), self.weight, self.bias, eps)

    class Block(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            p = f"encoder.layer.{i}."
            self.q = LoRALinear(p + "attention.self.query")
            self.k = LoRALinear(p + "attention.self.key")
            self.v = LoRALinear(p + "attention.self.value")
            self.o = LoRALinear(p + "attention.output.dense")
            self.ln1 = Norm(p + "attention.output.LayerNorm")
            self.fi = LoRALinear(p + "intermediate.dense")
            self.fo = LoRALinear(p + "output.dense")
            self.ln2 = Norm(p + "output.LayerNorm")

        def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(b, n, nh, h // nh).transpose(1, 2)

            ctx = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)),
                                                 heads(self.v(x)), attn_mask=keep)
            x = self.ln1(x + self.o(ctx.transpose(1, 2).reshape(b, n, h)))
            return self.ln2(x + self.fo(F.gelu(self.fi(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word = frozen("embeddings.word_embeddings.weight")
            self.pos = frozen("embeddings.position_embeddings.weight")
            self.type0 = nn.Parameter(
                weights["embeddings.token_type_embeddings.weight"][0].float().clone(),
                requires_grad=False)
            self.ln = Norm("embeddings.LayerNorm")
            self.blocks = nn.ModuleList(Block(i) for i in range(int(cfg["num_hidden_layers"])))
            self.head = nn.Linear(h, len(CLASSES))

        def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            n = ids.shape[1]
            x = self.ln(self.word[ids] + self.pos[:n] + self.type0)
            keep = mask.bool()[:, None, None, :]  # padding keys get no attention
            for blk in self.blocks:
                x = blk(x, keep)
            m = mask[:, :, None].to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1e-9)
            return F.normalize(pooled, dim=-1)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids, mask) * tc.head_scale)

    return Encoder()


def _batches(idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [idx[s:s + size] for s in range(0, len(idx), size)]


def train_one(weights: dict[str, Any], cfg: dict[str, Any], ids: np.ndarray, lengths: np.ndarray,
              y: np.ndarray, train_idx: np.ndarray, tc: TrainConfig, device: str) -> Any:
    import torch
    from torch.nn import functional as F

    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = _torch_model(weights, cfg, tc).to(device)
    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    opt = torch.optim.AdamW([{"params": rest, "lr": tc.lr},
                             {"params": head, "lr": tc.head_lr}],
                            weight_decay=tc.weight_decay)
    steps = tc.epochs * math.ceil(len(train_idx) / tc.batch)
    warm = max(1, int(steps * tc.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    ids_t = torch.from_numpy(ids.astype(np.int64)).to(device)
    mask_t = (torch.arange(ids.shape[1])[None, :] < torch.from_numpy(lengths.astype(np.int64))[:, None]).float().to(device)
    y_t = torch.from_numpy(y.astype(np.int64)).to(device)
    model.train()
    use_bf16 = device.startswith("cuda")
    losses = []
    for _epoch in range(tc.epochs):
        for bi in _batches(rng.permutation(train_idx), tc.batch):
            b = torch.from_numpy(bi).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(ids_t[b], mask_t[b])
            loss = F.cross_entropy(logits.float(), y_t[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        log.info("  epoch %d/%d: mean loss of its last 50 steps %.4f", _epoch + 1, tc.epochs,
                 float(np.mean(losses[-50:])))
    model.train_losses = losses
    return model


def predict(model: Any, ids: np.ndarray, lengths: np.ndarray, idx: np.ndarray,
            device: str) -> np.ndarray:
    import torch

    model.eval()
    out = np.zeros((len(idx), len(CLASSES)), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(idx), 1024):
            bi = idx[s:s + 1024]
            n = int(lengths[bi].max())
            t = torch.from_numpy(ids[bi, :n].astype(np.int64)).to(device)
            m = (torch.arange(n)[None, :] < torch.from_numpy(lengths[bi].astype(np.int64))[:, None]).float().to(device)
            out[s:s + len(bi)] = torch.softmax(model(t, m).float(), -1).cpu().numpy()
    return out


def export_adapter(model: Any, tc: TrainConfig) -> dict[str, np.ndarray]:
    """The arrays `adapter.apply_adapter` merges, plus the head as `head_W`/`head_b`."""
    from mailmoat.ml.deep.adapter import LORA_A, LORA_B, SET

    out: dict[str, np.ndarray] = {}
    for mod in model.modules():
        kind = type(mod).__name__
        if kind == "LoRALinear":
            out[LORA_A + mod.name + ".weight"] = mod.a.detach().float().cpu().numpy().astype(np.float16)
            # the scale folded into B, so merging is W + B @ A
            out[LORA_B + mod.name + ".weight"] = (mod.b.detach().float().cpu().numpy()
                                                  * mod.scale).astype(np.float16)
            out[SET + mod.name + ".bias"] = mod.bias.detach().float().cpu().numpy()
        elif kind == "Norm":
            out[SET + mod.name + ".weight"] = mod.weight.detach().float().cpu().numpy()
            out[SET + mod.name + ".bias"] = mod.bias.detach().float().cpu().numpy()
    # logits = (scale · e) W^T + b  →  e (scale · W^T) + b, the Head's layout (in, out)
    out["head_W"] = (model.head.weight.detach().float().cpu().numpy().T * tc.head_scale)
    out["head_b"] = model.head.bias.detach().float().cpu().numpy()
    return out


def _load_weights_as_torch(path: Path) -> dict[str, Any]:
    """float32 torch tensors of a safetensors file: prepare's fp16 copy or the package's own."""
    import torch
    from safetensors.numpy import load_file

    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in load_file(str(path)).items()}


def input_digests(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit digest per message of the word pieces tier 2 read: stored beside a run's
    scores, so a bench can tell which messages' text has changed since (a parser fix, a new
    text extraction) and not pair an old score with a new text."""
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(row[:n].tobytes(), digest_size=8).digest(),
                                    "little") for row, n in zip(ids, lengths.astype(int))],
                    dtype=np.uint64)


def train(data: Path, weights_path: Path, out: Path, tc: TrainConfig, cv: bool,
          extra_tests: bool, final: bool, limit: int = 0, holdout: bool = False,
          only_folds: list[int] | None = None) -> None:
    """`cv`: every fold out-of-fold (scores.npz `oof`); `holdout`: fold 0 only, a quicker
    validation (`holdout_idx`/`holdout_p`); `extra_tests`: the source and era tests of the
    shared corpora; `final`: the model on every message (final.npz)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    z = np.load(data, allow_pickle=False)
    ids, lengths, y, fold = z["ids"], z["lengths"], z["y"].astype(np.int64), z["fold"]
    corpus = z["corpus"]
    cfg = json.loads(str(z["config"]))
    n = len(y) if not limit else min(limit, len(y))
    weights = _load_weights_as_torch(weights_path)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"config": asdict(tc), "device": device, "torch": torch.__version__,
                              "messages": n, "seconds": {}}
    if device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    all_idx = np.arange(n)
    results: dict[str, Any] = {"inputs": input_digests(ids[:n], lengths[:n])}

    def save() -> None:  # after every stage, so a run cut short keeps what it finished
        np.savez_compressed(out / "scores.npz", **results)
        (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")

    def run(name: str, tr: np.ndarray, te: np.ndarray) -> Any:
        t = time.time()
        model = train_one(weights, cfg, ids, lengths, y, tr, tc, device)
        p = predict(model, ids, lengths, te, device) if len(te) else None
        report["seconds"][name] = round(time.time() - t, 1)
        report.setdefault("final_loss", {})[name] = round(float(np.mean(model.train_losses[-50:])), 4)
        acc = _summary(p, y[te])["accuracy"] if p is not None else 0.0
        log.info("%s: train %d, test %d, %.0f s, ham-vs-rest accuracy %.4f", name, len(tr),
                 len(te), time.time() - t, acc)
        return model, p

    if cv:
        oof = np.full((n, len(CLASSES)), np.nan, dtype=np.float32)
        for k in sorted(set(fold[:n].tolist()) & set(only_folds or fold[:n].tolist())):
            tr, te = all_idx[fold[:n] != k], all_idx[fold[:n] == k]
            _, oof[te] = run(f"fold{k}", tr, te)
            results["oof"] = oof
            save()
    if holdout and not cv:
        tr, te = all_idx[fold[:n] != 0], all_idx[fold[:n] == 0]
        _, p = run("holdout", tr, te)
        results["holdout_idx"], results["holdout_p"] = te, p
        save()
    if extra_tests:
        for name, held_corpora in (("source", SOURCE_TEST), ("era", ERA_TEST)):
            held = np.isin(corpus[:n], held_corpora)
            _, p = run(f"{name}_test", all_idx[~held], all_idx[held])
            results[f"{name}_idx"] = all_idx[held]
            results[f"{name}_p"] = p
            save()
    if final:
        model, p = run("final", all_idx, all_idx[:2000])
        arrays: dict[str, Any] = dict(export_adapter(model, tc))
        # The training model's own probabilities on 2,000 (seen) messages: finalize compares
        # the gateway's engines against them.
        arrays["check_idx"], arrays["check_p"] = all_idx[:2000], p
        np.savez_compressed(out / "final.npz", **arrays)
    save()
    log.info("done: %s", json.dumps(report["seconds"]))


# --- all three on one machine: `mailmoat finetune-deep` -------------------------------------


def finetune(out: Path, *, corpus: Path | None = None,
             sources: dict[str, list[str]] | None = None, epochs: int = TrainConfig.epochs,
             validate: bool = True, workers: int = 2, work_dir: Path | None = None,
             int8: bool = True, command: str = "mailmoat finetune-deep") -> dict[str, Any]:
    """Prepare, train (with one grouped fold held out first when `validate`) and finalize
    on this machine; returns the head's metadata (held-out numbers, engine check)."""
    import tempfile

    from mailmoat.ml.deep.encoder import default_model_dir

    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("fine-tuning needs torch: pip install -e '.[finetune]' (a CPU does "
                         "a few thousand messages in well under an hour; a GPU, minutes)") from None
    tmp = work_dir or Path(tempfile.mkdtemp(prefix="mailmoat-finetune-"))
    data = tmp / "data.npz"
    prepare(corpus, data, 64, 5, workers, None, sources)
    if validate and int(np.load(data)["fold"].max()) < 1:
        raise SystemExit("too few messages of some label to hold a fold out; add mail or "
                         "train without validation")
    train(data, default_model_dir() / "model.safetensors", tmp / "run",
          TrainConfig(epochs=epochs), cv=False, extra_tests=False, final=True, holdout=validate)
    return finalize(tmp / "run", data, out, int8, command=command)


# --- step 3: finalize (CPU, no torch) -------------------------------------------------------


def _summary(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Spam-or-phish vs ham at P ≥ 0.5 for (n, 3) probabilities and labels y (0 = ham)."""
    bad, flag = y != 0, p[:, 1] + p[:, 2] >= 0.5
    return {"messages": len(y), "accuracy": round(float((flag == bad).mean()), 5),
            "fp": int((flag & ~bad).sum()), "fn": int((~flag & bad).sum())}


def finalize(run_dir: Path, data: Path, out: Path, int8: bool,
             command: str = "python -m mailmoat.ml.deep.finetune train/finalize (docs/deep.md)"
             ) -> dict[str, Any]:
    """Write the gateway's head file and check that its engine agrees with training."""
    from mailmoat.ml.deep.adapter import is_adapter_key
    from mailmoat.ml.deep.engine import open_named
    from mailmoat.ml.deep.head import PROTOTYPES, Head

    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    z = np.load(run_dir / "final.npz", allow_pickle=False)
    adapter = {k: z[k] for k in z.files if is_adapter_key(k)}
    layers = [(z["head_W"].astype(np.float32), z["head_b"].astype(np.float32))]
    d = np.load(data, allow_pickle=False)
    max_tokens = int(d["max_tokens"])
    engine = "onnx-int8" if int8 else "numpy"
    meta: dict[str, Any] = {
        "model": "sentence-transformers/all-MiniLM-L6-v2", "max_tokens": max_tokens,
        "engine": engine, "head": "fine-tuned (LoRA adapters + linear head)",
        "classes": list(CLASSES), "train_messages": int(report["messages"]),
        "train_config": report["config"], "trained_on": report.get("gpu", report["device"]),
        "command": command}
    head = Head(layers, np.zeros((len(PROTOTYPES), 384), np.float32),
                [p[0] for p in PROTOTYPES], [p[1] for p in PROTOTYPES], meta, adapter)
    tmp = out.with_name(out.name + ".tmp.npz")
    head.save(tmp)  # the engine builds its graph from the head file's adapter
    enc = open_named(engine, max_tokens=max_tokens, head_path=tmp)
    head.proto_emb = enc.encode([p[2] for p in PROTOTYPES])
    # Agreement of the gateway's engine with the training model on the same word pieces.
    idx, p_train = z["check_idx"], z["check_p"]
    ids = [d["ids"][i, :d["lengths"][i]].tolist() for i in idx]
    p_gw = head.proba(enc.embed_ids(ids))
    bad_train, bad_gw = p_train[:, 1] + p_train[:, 2], p_gw[:, 1] + p_gw[:, 2]
    meta["engine_check"] = {
        "messages": len(idx),
        "decisions_changed": int(((bad_train >= 0.5) != (bad_gw >= 0.5)).sum()),
        "max_abs_diff": round(float(np.abs(bad_train - bad_gw).max()), 4),
        "mean_abs_diff": round(float(np.abs(bad_train - bad_gw).mean()), 5)}
    scores = run_dir / "scores.npz"
    if scores.is_file():  # the cross-validation of the same recipe, for the record
        with np.load(scores, allow_pickle=False) as sc:
            if "holdout_p" in sc.files:
                te = sc["holdout_idx"]
                meta["held_out"] = {**_summary(sc["holdout_p"], d["y"][te]),
                                    "note": "one grouped fold of five held out; threshold 0.5"}
            if "oof" in sc.files and not np.isnan(sc["oof"]).any():
                meta["out_of_fold"] = {
                    **_summary(sc["oof"], d["y"]), "folds": int(d["fold"].max()) + 1,
                    "note": "grouped k-fold, same folds as bench/accuracy.py; threshold 0.5"}
    head.meta = meta
    head.save(out)
    tmp.unlink(missing_ok=True)
    log.info("wrote %s; engine check: %s", out, meta["engine_check"])
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="parse and tokenise the corpus, fix the folds (CPU)")
    p.add_argument("--corpus", default="/tmp/corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--weights-out", default="", help="also write the base weights as fp16 "
                   "safetensors (what a training machine without the package needs)")
    t = sub.add_parser("train", help="cross-validate and train the adapter (torch; GPU)")
    t.add_argument("--data", required=True)
    t.add_argument("--weights", required=True, help="--weights-out of prepare")
    t.add_argument("--out", required=True)
    t.add_argument("--no-cv", action="store_true")
    t.add_argument("--no-extra-tests", action="store_true")
    t.add_argument("--no-final", action="store_true")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    t.add_argument("--limit", type=int, default=0, help="first N messages only (smoke test)")
    t.add_argument("--seed", type=int, default=TrainConfig.seed,
                   help="another seed: how much the scores move with the initialisation")
    t.add_argument("--only-folds", type=int, nargs="*", default=None,
                   help="cross-validate only these folds (0-based)")
    f = sub.add_parser("finalize", help="write the head file the gateway loads (CPU)")
    f.add_argument("--run", required=True)
    f.add_argument("--data", required=True)
    f.add_argument("--out", default="src/mailmoat/data/deep/head.npz")
    f.add_argument("--engine", choices=("onnx-int8", "numpy"), default="onnx-int8")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if a.cmd == "prepare":
        prepare(Path(a.corpus).resolve(), Path(a.out), a.max_tokens, a.folds, a.workers,
                Path(a.weights_out) if a.weights_out else None)
    elif a.cmd == "train":
        tc = TrainConfig(epochs=a.epochs, seed=a.seed)
        train(Path(a.data), Path(a.weights), Path(a.out), tc, not a.no_cv,
              not a.no_extra_tests, not a.no_final, a.limit, only_folds=a.only_folds)
    else:
        finalize(Path(a.run), Path(a.data), Path(a.out), a.engine == "onnx-int8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
