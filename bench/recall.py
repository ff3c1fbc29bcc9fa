#!/usr/bin/env python3
"""Recall throughput against a real Dovecot: mailboxes recalled (and restored) per second.

    PYTHONPATH=src:. .venv/bin/python bench/recall.py [--mailboxes 200] [--folders 6]
        [--connections 1,4,8,16] [--out bench/results/recall.json]

A private Dovecot (tests/recall/dovecot.py: loopback, Maildir, passwd-file users, a master
user; needs root and the dovecot-imapd and dovecot-lmtpd packages) gets `--mailboxes`
users, each with `--folders` extra folders holding a few unrelated messages, and one lure
delivered to every user by LMTP. The lure is written to the message log as delivered, then
recalled by a recall job exactly as `mailmoat recall` runs it (IMAP connector: master-user
SASL login, LIST, a header search in every folder, MOVE), and restored by undoing the job.
Each connection count gets a fresh lure. Reported: mailboxes per second for the recall and
for the restore, wall clock of the whole job.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mailmoat.config import config_from_dict
from mailmoat.evaluation.dovecot import (
    MASTER_PASSWORD,
    MASTER_USER,
    dovecot_available,
    running_dovecot,
)
from mailmoat.evaluation.messages import make_email
from mailmoat.recall.jobs import RecallWorker, create_recall_job, undo
from mailmoat.store.db import Database
from mailmoat.store.models import MessageRow, RecipientRow


def log_delivery(db: Database, mmid: str, message_id: str, users: list[str]) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(MessageRow(id=mmid, received_at=now, direction="inbound", mail_from="x@phish.test",
                         subject="lure", message_id=f"<{message_id}>", action="accept",
                         category="clean",
                         recipients=[RecipientRow(address=u, domain="example.test",
                                                  action="accept", status="delivered",
                                                  delivered_at=now) for u in users]))


def lure(mmid: str, message_id: str) -> bytes:
    raw = make_email(subject="Your mailbox is full", headers={"X-Mailmoat-ID": mmid})
    return raw.replace(b"test-1@sender.test", message_id.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mailboxes", type=int, default=200)
    ap.add_argument("--folders", type=int, default=6)
    ap.add_argument("--connections", default="1,4,8,16")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    why = dovecot_available()
    if why:
        sys.exit(f"cannot run: {why}")
    users = [f"bench{i:04d}@example.test" for i in range(args.mailboxes)]
    results = []
    with tempfile.TemporaryDirectory() as tmp, running_dovecot(users) as dc:
        secret = Path(tmp) / "master.secret"
        secret.write_text(MASTER_PASSWORD)
        filler = make_email(subject="weekly report")
        for u in users:
            c = dc.client(u)
            for f in range(args.folders):
                c.create_folder(f"Folder{f}")
                c.append(f"Folder{f}", filler)
            c.logout()
            dc.lmtp_deliver(filler, [u])
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.create_schema()
        for n in (int(x) for x in args.connections.split(",")):
            mmid, message_id = f"bench{n:03d}", f"lure-{n}@phish.test"
            raw = lure(mmid, message_id)
            for i in range(0, len(users), 50):
                dc.lmtp_deliver(raw, users[i:i + 50])
            log_delivery(db, mmid, message_id, users)
            cfg = config_from_dict({"recall": {"imap": {
                "host": "127.0.0.1", "port": dc.imap_port, "tls": "none",
                "master_user": MASTER_USER, "master_password_file": str(secret),
                "max_connections": n}}})
            worker = RecallWorker(cfg, db)
            try:
                job = create_recall_job(db, [mmid], reason="bench", requested_by="bench",
                                        source="bench")
                t0 = time.perf_counter()
                view = worker.run_job(job)
                recall_s = time.perf_counter() - t0
                assert view.counts == {"moved": len(users)}, view.counts
                back = undo(db, job, requested_by="bench")
                t0 = time.perf_counter()
                view = worker.run_job(back)
                restore_s = time.perf_counter() - t0
                assert view.counts == {"restored": len(users)}, view.counts
            finally:
                worker.close()
            row = {"connections": n, "mailboxes": len(users), "folders": args.folders + 1,
                   "recall_s": round(recall_s, 2),
                   "recall_mailboxes_per_s": round(len(users) / recall_s, 1),
                   "restore_s": round(restore_s, 2),
                   "restore_mailboxes_per_s": round(len(users) / restore_s, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
        db.dispose()
    report = {"bench": "recall", "command": " ".join(["bench/recall.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
