"""Dependencies run one way: checks (scan/) use policy's vocabulary and the ML models; policy
and ml never import a check. A cycle here is how a change to one check breaks learning or
the decision code at import time."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import mailmoat.ml
import mailmoat.policy
from tests.conftest import subprocess_env

MODULES = sorted(
    [m.name for m in pkgutil.walk_packages(mailmoat.policy.__path__, "mailmoat.policy.")]
    + [m.name for m in pkgutil.walk_packages(mailmoat.ml.__path__, "mailmoat.ml.")
       if m.name != "mailmoat.ml.deep.finetune"])  # needs torch, a training-only extra


@pytest.mark.parametrize("module", MODULES)
def test_policy_and_ml_never_import_a_check(module):
    code = (f"import sys, {module}; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('mailmoat.scan'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
