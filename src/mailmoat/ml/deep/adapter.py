"""A fine-tuned tier 2 ships as a small adapter on top of the published MiniLM weights.

Fine-tuning (`mailmoat.ml.deep.finetune`) trains low-rank updates of the encoder's weight
matrices (LoRA: W + B·A, with A r×in and B out×r) plus new biases and layer-norm parameters,
instead of a whole new copy of the network. The adapter is ~1.5 MB next to the 86 MB of
weights, so it fits in the package (inside the head file, whose classifier was trained with
it), on top of the base weights bundled in `mailmoat/data/deep/minilm/`.

At load time the update is merged into the weights once (`apply_adapter`); the numpy encoder
and the ONNX export then build exactly the network they always build, so inference costs
the same as without an adapter. Key names are the safetensors names of the weights:
`lora_a__<name>`, `lora_b__<name>` (the scale is folded into B) and `set__<name>` (a
replacement tensor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["LORA_A", "LORA_B", "SET", "adapter_digest", "apply_adapter", "load_weights"]

LORA_A, LORA_B, SET = "lora_a__", "lora_b__", "set__"
PREFIXES = (LORA_A, LORA_B, SET)


def is_adapter_key(key: str) -> bool:
    return key.startswith(PREFIXES)


def apply_adapter(weights: dict[str, np.ndarray],
                  adapter: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`weights` with the adapter merged in (a new dict; the input is not changed).

    Raises ValueError when the adapter names a weight that is missing or has another shape,
    so an adapter made for another model fails loudly instead of silently scoring nonsense."""
    out = dict(weights)
    for key, value in adapter.items():
        if key.startswith(SET):
            name = key[len(SET):]
            _check(out, name, value.shape)
            out[name] = value.astype(np.float32)
        elif key.startswith(LORA_A):
            name = key[len(LORA_A):]
            b = adapter.get(LORA_B + name)
            if b is None:
                raise ValueError(f"adapter has {key} without its {LORA_B}{name}")
            delta = b.astype(np.float32) @ value.astype(np.float32)
            _check(out, name, delta.shape)
            out[name] = (out[name].astype(np.float32) + delta).astype(np.float32)
        elif key.startswith(LORA_B):
            if LORA_A + key[len(LORA_B):] not in adapter:
                raise ValueError(f"adapter has {key} without its {LORA_A}{key[len(LORA_B):]}")
        else:
            raise ValueError(f"not an adapter key: {key}")
    return out


def _check(weights: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> None:
    if name not in weights:
        raise ValueError(f"adapter updates {name}, which the model does not have")
    if tuple(weights[name].shape) != tuple(shape):
        raise ValueError(f"adapter shape {tuple(shape)} for {name} does not match the "
                         f"model's {tuple(weights[name].shape)}")


def adapter_digest(adapter: Mapping[str, np.ndarray]) -> str:
    """A stable digest of the adapter's content ('' for none): part of the ONNX graph's
    cache key, so a new adapter never runs on a graph built with an old one."""
    if not adapter:
        return ""
    h = hashlib.sha256()
    for key in sorted(adapter):
        arr = np.ascontiguousarray(adapter[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def read_adapter(head_path: str | Path) -> dict[str, np.ndarray]:
    """The adapter arrays stored in a head file (empty for a head on the frozen encoder)."""
    with np.load(head_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if is_adapter_key(k)}


def load_weights(model_dir: Path, adapter: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
    """The model's safetensors weights as float32, with `adapter` merged in when given.

    The bundled file stores float16 (half the package's size); the network always computes
    in float32, so the weights are widened once here."""
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float32, copy=False)
         for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    return apply_adapter(w, adapter) if adapter else w
