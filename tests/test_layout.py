"""bench/ and mailmoat.evaluation run from the installed package, not from path tricks.

Bench scripts run as `python bench/x.py` and research programs as `python -m
mailmoat.evaluation.x`; both import `mailmoat` as installed and share code through
`mailmoat.evaluation`, never through `sys.path`, each other or the tests.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
EVALUATION = ROOT / "src" / "mailmoat" / "evaluation"
PATH_TRICKS = re.compile(r"\bsys\.path\b|\baddsitedir\b")


def _sources() -> list[Path]:
    return sorted([*BENCH.rglob("*.py"), *EVALUATION.rglob("*.py")])


def _imported(path: Path) -> set[str]:
    """The top-level names of every module the file imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_touches_sys_path():
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in _sources()
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if PATH_TRICKS.search(line)]
    assert not offenders, f"import mailmoat as installed instead: {offenders}"


def test_shared_code_comes_from_the_package():
    """No bench script imports another, and nothing imports the tests' helpers: what they
    share lives in mailmoat.evaluation."""
    scripts = {p.stem for p in BENCH.glob("*.py")}
    offenders = {}
    for p in _sources():
        bad = _imported(p) & (scripts | {"tests", "conftest"})
        if bad:
            offenders[str(p.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


def test_programs_do_their_work_in_main():
    """Every module with a `__main__` block has a `main()` and calls nothing else there."""
    for p in sorted(EVALUATION.glob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        guards = [n for n in tree.body if isinstance(n, ast.If)
                  and "__main__" in ast.unparse(n.test)]
        if not guards:
            continue
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "main" in defined, f"{p.name}: a program without main()"
        calls = {ast.unparse(c.func) for g in guards for c in ast.walk(g)
                 if isinstance(c, ast.Call)}
        assert calls <= {"main", "SystemExit"}, f"{p.name}: {calls}"


def test_every_module_imports_cheaply(tmp_path: Path):
    """Importing each evaluation module and loading each bench script (not as __main__)
    does no work: it parses no arguments (a bogus one would end it), prints nothing and
    writes nothing; and the bench scripts' imports resolve without their own folder on the
    path."""
    probe = f"""
import importlib, importlib.util, pkgutil, sys, time
import mailmoat.evaluation as pkg
sys.argv = ["probe", "--no-such-option"]
slow = []
for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
    t = time.perf_counter()
    importlib.import_module(f"mailmoat.evaluation.{{m.name}}")
    slow.append((time.perf_counter() - t, m.name))
for path in sorted(__import__("pathlib").Path({str(BENCH)!r}).glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"bench_{{path.stem}}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as a real import does: dataclasses look themselves up
    t = time.perf_counter()
    spec.loader.exec_module(module)
    slow.append((time.perf_counter() - t, path.name))
print(max(slow), file=sys.stderr)
"""
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=subprocess_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout == ""
    assert list(tmp_path.iterdir()) == [], "an import wrote files"
    # The slowest single import, with its name: the modules it pulls in (numpy, sklearn,
    # the scanner) and nothing of its own; a corpus read or model fit takes minutes.
    seconds = float(r.stderr.strip().splitlines()[-1].strip("()").split(",")[0])
    assert seconds < 30, r.stderr
