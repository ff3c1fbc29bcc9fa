"""Which engine runs the MiniLM encoder, and the ONNX graph that is built once and cached.

Engines (`[deep] engine`):

* `auto` (default): onnxruntime when it is installed, on a graph built from the bundled
  weights at first use and cached (`graph_dir`, else the user cache ~/.cache/mailmoat, else
  `<data_dir>/models`); the numpy encoder when onnxruntime is missing or the graph cannot
  be built (logged once, with the reason).
* `onnx`: onnxruntime, required (a failure to load is a load failure: `DEEP_FAIL`).
* `numpy`: the plain numpy encoder (`encoder.py`), float32.

`precision` chooses the graph: `int8` (weight matrices quantised per channel; ~1.8x faster
than fp32 on one core) or `fp32` (identical to numpy); `auto` takes what the head was trained
on (`engine` in its metadata), because a head reads embeddings best from the engine that
produced its training data.

The cached file's name carries a key made of the export code's version, the precision, the
onnxruntime version (its quantiser writes the int8 graph), the sha256 of the weights and, for
a fine-tuned head, the digest of its encoder adapter, so a change of any of them builds a new
graph instead of running a stale one. Several
processes starting at once build it once (an exclusive lock on the folder) and the file
appears atomically (written aside, then renamed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from mailmoat.ml.deep.encoder import MiniLMEncoder, default_model_dir

__all__ = ["open_encoder", "open_named", "cached_graph", "ensure_graph", "graph_path",
           "user_cache_dir", "head_precision", "set_max_threads", "GRAPH_VERSION"]

log = logging.getLogger(__name__)

# Bump when onnx_export.build_graph or the quantisation settings change.
GRAPH_VERSION = 2

# A process-wide cap on the encoder's threads (None: `threads` as asked). `mailmoat scan
# --workers N` sets 1 in each worker: N processes that each ask for several threads
# oversubscribe the cores.
_max_threads: int | None = None


def set_max_threads(n: int | None) -> None:
    """Cap the threads of encoders opened from now on in this process (None: no cap)."""
    global _max_threads
    _max_threads = None if n is None else max(1, int(n))


def user_cache_dir() -> Path:
    """Where graphs go when no data_dir is given: $XDG_CACHE_HOME/mailmoat or ~/.cache/mailmoat."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mailmoat"


def head_precision(head_meta: dict[str, object]) -> str:
    """`int8` when the head was trained on int8 ONNX embeddings, else `fp32`."""
    return "int8" if head_meta.get("engine") == "onnx-int8" else "fp32"


def _weights_sha256(model_dir: Path) -> str:
    h = hashlib.sha256()
    with (model_dir / "model.safetensors").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_path(cache_dir: Path, int8: bool, model_dir: Path | None = None,
               head_path: Path | None = None) -> Path:
    """The cached graph's file name for these weights, precision, onnxruntime and (for a
    fine-tuned head) the head's encoder adapter."""
    import onnxruntime

    from mailmoat.ml.deep.adapter import adapter_digest, read_adapter

    mdir = model_dir or default_model_dir()
    key = "|".join([str(GRAPH_VERSION), "int8" if int8 else "fp32",
                    onnxruntime.__version__ if int8 else "", _weights_sha256(mdir),
                    adapter_digest(read_adapter(head_path)) if head_path else ""])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"minilm-{'int8' if int8 else 'fp32'}-{digest}.onnx"


def ensure_graph(cache_dir: Path, int8: bool, model_dir: Path | None = None,
                 head_path: Path | None = None) -> Path:
    """The cached graph, building it (10-30 s, once) when it is not there yet."""
    import fcntl

    path = graph_path(cache_dir, int8, model_dir, head_path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".minilm-export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same file
        if path.is_file():
            return path
        started = time.monotonic()
        log.info("deep model: building the %s ONNX graph %s (once per machine and version)",
                 "int8" if int8 else "fp32", path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            _export_in_child(tmp, int8, model_dir, head_path)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("deep model: built the %s ONNX graph %s in %.1f s",
                 "int8" if int8 else "fp32", path, time.monotonic() - started)
    return path


def cached_graph(int8: bool, graph_dir: str | Path | None = None,
                 fallback_dir: str | Path | None = None, model_dir: Path | None = None,
                 head_path: Path | None = None) -> Path:
    """`graph_dir`'s graph; without one, the user cache's, or `fallback_dir`'s when the user
    cache cannot be written (a service account without a home)."""
    if graph_dir:
        return ensure_graph(Path(graph_dir), int8, model_dir, head_path)
    try:
        return ensure_graph(user_cache_dir(), int8, model_dir, head_path)
    except OSError as exc:
        if not fallback_dir:
            raise
        log.info("deep model: user cache not writable (%s); building the graph in %s", exc,
                 fallback_dir)
        return ensure_graph(Path(fallback_dir), int8, model_dir, head_path)


def _export_in_child(out: Path, int8: bool, model_dir: Path | None,
                     head_path: Path | None = None) -> None:
    """Run onnx_export in a child process: building and quantising the graph peaks at
    ~650 MB, which the gateway process should not keep (its heap rarely shrinks back)."""
    import subprocess
    import sys

    import mailmoat

    src = str(Path(mailmoat.__file__).resolve().parents[1])  # this mailmoat, not another
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = [sys.executable, "-m", "mailmoat.ml.deep.onnx_export", "--out", str(out)]
    cmd += ["--int8"] if int8 else []
    cmd += ["--model-dir", str(model_dir)] if model_dir else []
    cmd += ["--head", str(head_path)] if head_path else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"building the ONNX graph failed (exit {proc.returncode}): "
                           + " | ".join(tail))


def open_encoder(engine: str = "auto", precision: str = "fp32", *, max_tokens: int = 128,
                 threads: int = 1, model_dir: str | Path | None = None,
                 onnx_path: str | Path | None = None, graph_dir: str | Path | None = None,
                 fallback_dir: str | Path | None = None,
                 head_path: str | Path | None = None) -> MiniLMEncoder:
    """An encoder for `engine` (auto/onnx/numpy); see the module docstring. The graph is
    `onnx_path` when given, else built and cached by `cached_graph`. With `head_path`, the
    encoder carries that head's adapter when it has one (a fine-tuned head)."""
    from mailmoat.ml.deep.adapter import read_adapter

    if engine not in ("auto", "onnx", "numpy"):
        raise ValueError(f"unknown deep engine {engine!r}")
    if precision not in ("int8", "fp32"):
        raise ValueError(f"unknown precision {precision!r}")
    if _max_threads is not None:
        threads = min(threads, _max_threads)
    mdir = Path(model_dir) if model_dir else None
    adapter = read_adapter(head_path) if head_path else {}
    hpath = Path(head_path) if head_path and adapter else None  # no adapter: the shared graph
    if onnx_path and adapter and engine != "numpy":
        log.warning("deep model: %s is a graph of your own, but the head %s carries a "
                    "fine-tuned encoder; the graph must have been exported with it "
                    "(python -m mailmoat.ml.deep.onnx_export --head HEAD --out FILE), or "
                    "its scores are wrong", onnx_path, head_path)
    if engine != "numpy":
        try:
            path = Path(onnx_path) if onnx_path else cached_graph(
                precision == "int8", graph_dir, fallback_dir, mdir, hpath)
            enc = MiniLMEncoder(mdir, max_tokens=max_tokens, threads=threads, onnx_path=path)
            if not onnx_path:
                enc.engine = f"onnx-{precision}"
            return enc
        except Exception as exc:
            if engine == "onnx":
                raise
            log.warning("deep model: onnxruntime engine unavailable (%s: %s); using the "
                        "numpy encoder", type(exc).__name__, exc)
    return MiniLMEncoder(mdir, max_tokens=max_tokens, threads=threads, adapter=adapter)


def open_named(name: str, **kw: object) -> MiniLMEncoder:
    """`numpy`, `onnx-fp32` or `onnx-int8` exactly (no fallback): for training and benches,
    which must say which engine produced their embeddings."""
    if name == "numpy":
        return open_encoder("numpy", **kw)  # type: ignore[arg-type]
    if name in ("onnx-fp32", "onnx-int8"):
        return open_encoder("onnx", name.removeprefix("onnx-"), **kw)  # type: ignore[arg-type]
    raise ValueError(f"unknown engine {name!r}")
