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
import json
import sys
import time
from pathlib import Path

from mailmoat.evaluation.modern import MANIFEST, read_manifest, scan_all, table
from mailmoat.evaluation.paths import checkout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=checkout().parent / "modern-legit",
                    help="where the messages are (default: modern-legit beside the checkout)")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
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
