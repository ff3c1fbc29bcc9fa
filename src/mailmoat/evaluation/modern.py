"""Today's legitimate mail (bench/modern_mail.tsv), scanned as `mailmoat scan` scans it.

Shared by bench/modern_mail.py and bench/pipeline_accuracy.py `--modern`: the manifest's
rows, each message through the real `Scanner` with the default configuration (both content
tiers, bundled models, no network), and the table of verdicts per split and kind.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from mailmoat.commands.scan import envelope_for
from mailmoat.config import config_from_dict
from mailmoat.evaluation.paths import bench_dir
from mailmoat.scan.base import BuildContext
from mailmoat.scan.engine import Scanner

MANIFEST = bench_dir() / "modern_mail.tsv"
ACTIONS = ("accept", "tag", "quarantine", "reject")


def read_manifest(path: Path) -> list[dict[str, str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


async def scan_all(rows: list[dict[str, str]], root: Path,
                   trusted: list[str]) -> list[dict[str, Any]]:
    cfg: dict[str, Any] = {"scan": {"network": False}}
    if trusted:
        cfg["auth"] = {"trusted_authserv_ids": trusted}
    config = config_from_dict(cfg)
    scanner = Scanner(BuildContext(config=config, network=False))
    out = []
    try:
        for row in rows:
            raw = (root / row["path"]).read_bytes()
            o = await scanner.scan(raw, envelope_for(raw, config))
            out.append({**row, "action": o.verdict.action.value, "score": o.verdict.score,
                        "category": o.verdict.category.value,
                        "bulk_level": o.verdict.bulk_level,
                        "symbols": [(s.name, s.score, s.reason) for s in o.result.symbols
                                    if s.score != 0 or s.name.startswith(("EVIDENCE", "BULK"))]})
    finally:
        await scanner.close()
    return out


def table(results: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in results:
        for key in ((r["split"], r["kind"]), (r["split"], "all kinds")):
            groups[key][r["action"]] += 1
            groups[key]["n"] += 1
            groups[key]["bulk"] += r["category"] == "bulk" and r["action"] == "accept"
    lines = ["| split | kind | messages | accepted (as bulk) | tagged | quarantined | rejected "
             "| not accepted |", "|---|---|---|---|---|---|---|---|"]
    for (split, kind), c in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "all kinds",
                                                                    kv[0][1])):
        n = c["n"]
        bad = n - c["accept"]
        lines.append(f"| {split} | {kind} | {n} | {c['accept']} ({c['bulk']}) | {c['tag']} | "
                     f"{c['quarantine']} | {c['reject']} | {bad} ({100 * bad / n:.1f}%) |")
    return "\n".join(lines)
