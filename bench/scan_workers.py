"""`mailmoat scan --workers 2` against `--workers 1`, in the same command.

    python bench/scan_workers.py DIR [--workers 2] [--rounds 2] [--limit 3000]

Runs `mailmoat scan DIR --format json --workers 1` and `... --workers N` back to back,
`--rounds` times (alternating, so a busy spell on a shared machine hits both), each as its own
process with its output captured. Prints, per run, the wall time, the CPU time of the
command and its children (user + system) and messages per second; then the ratio of the best
single-worker wall time to the best N-worker one (the goal: ≥ 1.6 with 2 workers on 2
cores), and whether the verdicts are identical (JSON lines compared sorted by path).

With `--limit K`, DIR is replaced by a temp folder of symlinks to its first K files (sorted
by name), e.g. `python bench/scan_workers.py /tmp/corpus/ham/trec07p --limit 3000`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("mailmoat")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mailmoat"]


def run_once(folder: Path, workers: int) -> tuple[float, float, list[str]]:
    """(wall s, CPU s of the command and its children, output lines)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([*_command(), "scan", str(folder), "--format", "json",
                           "--workers", str(workers)], capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        sys.exit(f"mailmoat scan --workers {workers} exited {proc.returncode}: "
                 f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout.splitlines()


def by_path(lines: list[str]) -> list[str]:
    return sorted(lines, key=lambda ln: json.loads(ln)["path"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first K files of FOLDER")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan-workers-") as tmp:
        folder = args.folder
        if args.limit:
            folder = Path(tmp)
            files = sorted(p for p in args.folder.iterdir() if p.is_file()
                           and not p.name.startswith("."))[: args.limit]
            for f in files:
                os.symlink(f.resolve(), folder / f.name)
        best: dict[int, float] = {}
        outputs: dict[int, list[str]] = {}
        n = 0
        print(f"{'workers':>7} {'wall s':>8} {'cpu s':>8} {'msg/s':>8}  (cores: {os.cpu_count()})")
        for _ in range(args.rounds):
            for w in (1, args.workers):
                wall, cpu, lines = run_once(folder, w)
                n = len(lines)
                print(f"{w:>7} {wall:>8.2f} {cpu:>8.2f} {n / wall:>8.1f}", flush=True)
                best[w] = min(best.get(w, wall), wall)
                outputs[w] = lines
        same = by_path(outputs[1]) == by_path(outputs[args.workers])
        print(f"{n} messages; best wall: 1 worker {best[1]:.2f} s, {args.workers} workers "
              f"{best[args.workers]:.2f} s; ratio {best[1] / best[args.workers]:.2f}x; "
              f"verdicts identical: {'yes' if same else 'NO'}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
