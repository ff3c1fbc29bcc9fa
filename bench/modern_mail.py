"""Today's legitimate mail, scanned as a new user would: the gateway's defaults, bundled models.

    nice python bench/modern_mail.py [--root ../modern-legit] [--manifest bench/modern_mail.tsv]
                                     [--trusted-authserv-id ID ...] [--show design]
                                     [--out bench/results/modern_mail]

The set (bench/modern_mail.tsv) is real legitimate mail of 2017–2026 — transactional,
notification, bounce, newsletter — taken from public repositories that none of the
training corpora come from; the messages stay outside the repo (their licences), the
manifest says where each one is and how to fetch it again. Rows marked `holdout` come from
sources kept out of all design work: their figures are reported separately, and `--show`
refuses to print them.

Every message goes through the real `Scanner` exactly as `mailmoat scan` runs it: the
default configuration, both content tiers with the bundled models (never trained on this
set, so nothing here is in-sample), no network (the senders' DNS is not ours to query, and
old DKIM keys are gone). With `--trusted-authserv-id`, the Authentication-Results that the
receiving provider wrote (e.g. mx.google.com) are believed as the gateway would believe a
trusted upstream's (`[auth] trusted_authserv_ids`); figures from such a run say so.

"Not accepted" is what a user would miss: tagged, quarantined or rejected. Bulk mail that is
delivered with the bulk headers counts as accepted (it reaches the mailbox).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailmoat.commands.scan import envelope_for  # noqa: E402
from mailmoat.config import config_from_dict  # noqa: E402
from mailmoat.scan.base import BuildContext  # noqa: E402
from mailmoat.scan.engine import Scanner  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT.parent / "modern-legit",
                    help="where the messages are (default: modern-legit beside the checkout)")
    ap.add_argument("--manifest", type=Path, default=ROOT / "bench" / "modern_mail.tsv")
    ap.add_argument("--trusted-authserv-id", action="append", default=[], metavar="ID")
    ap.add_argument("--show", choices=("design",), help="print each design message's verdict "
                    "and symbols (holdout rows are never printed)")
    ap.add_argument("--out", type=Path, default=None,
                    help="write OUT.md and OUT.json (default: print only)")
    a = ap.parse_args()
    rows = read_manifest(a.manifest)
    missing = [r["path"] for r in rows if not (a.root / r["path"]).is_file()]
    if missing:
        sys.exit(f"{len(missing)} messages of the manifest are not under {a.root} "
                 f"(first: {missing[0]}); fetch them as the manifest's comments say")
    started = time.perf_counter()
    results = asyncio.run(scan_all(rows, a.root, a.trusted_authserv_id))
    took = time.perf_counter() - started
    cmd = "python bench/modern_mail.py" + "".join(
        f" --trusted-authserv-id {t}" for t in a.trusted_authserv_id)
    mode = (f"Authentication-Results of {', '.join(a.trusted_authserv_id)} trusted"
            if a.trusted_authserv_id else "no authentication results trusted (defaults)")
    report = (f"# Today's legitimate mail ({len(results)} messages, {mode})\n\n"
              f"`{cmd}` — {took:.0f} s. Defaults, both content tiers, no network.\n\n"
              + table(results) + "\n")
    print(report)
    if a.show:
        for r in results:
            if r["split"] != "design":
                continue
            print(f"{r['action']:10} {r['score']:6.1f} {r['category']:8} {r['path']}")
            for name, score, reason in r["symbols"]:
                print(f"    {name} {score:g}: {reason[:160]}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(report, encoding="utf-8")
        slim = [{k: r[k] for k in ("path", "kind", "split", "action", "score", "category",
                                   "bulk_level")} for r in results]
        a.out.with_suffix(".json").write_text(json.dumps(slim, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
