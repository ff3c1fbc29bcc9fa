"""Message-log search at scale: bulk-load N messages (default 1,000,000) into SQLite and
PostgreSQL, then time the console's typical searches through the same query code the API
uses (mailmoat.store.queries.search_messages), next to a primary-key lookup baseline.

    nice -n 10 python bench/search.py --rows 1000000 --repeat 30

PostgreSQL gets a database created for the run and dropped afterwards. Reports p50/p95 ms
per query kind and its ratio to the baseline's p50.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, select, text

import mailmoat.store.webmodels  # noqa: F401  (composite indexes)
from mailmoat.store import queries
from mailmoat.store.db import Database
from mailmoat.store.models import Base, MessageRow, RecipientRow

CATS = ["clean"] * 70 + ["spam"] * 20 + ["phishing"] * 5 + ["malware"] * 2 + ["bec"] * 1 + ["policy"] * 2
ACTION_OF = {"clean": "accept", "spam": "tag", "phishing": "quarantine", "malware": "reject",
             "bec": "quarantine", "policy": "quarantine"}
N_SENDER_DOMAINS, N_SENDERS, N_RCPT_DOMAINS, N_RCPTS = 5000, 50000, 20, 20000
DAYS = 90
NOW = datetime.now(UTC).replace(microsecond=0)  # the data ends now


def rows(n: int, seed: int = 1):
    """(message tuple, [recipient tuples]) with realistic skew, deterministic."""
    rnd = random.Random(seed)
    span = DAYS * 86400
    for i in range(n):
        at = NOW - timedelta(seconds=span * (n - i) / n + rnd.random())
        sd = rnd.randrange(N_SENDER_DOMAINS)
        sender = f"user{rnd.randrange(N_SENDERS // N_SENDER_DOMAINS)}@sender{sd}.test"
        cat = rnd.choice(CATS)
        mid = f"{int(at.timestamp() * 1000):011x}{i:016x}"
        k = 1 if rnd.random() < 0.8 else rnd.randint(2, 4)
        rcpts = {f"u{rnd.randrange(N_RCPTS // N_RCPT_DOMAINS)}@corp{rnd.randrange(N_RCPT_DOMAINS)}.test"
                 for _ in range(k)}
        syms = [] if cat == "clean" else [{"name": "BAYES_SPAM", "score": 6.0, "group": "ml",
                                           "reason": "the content model rates it 97% spam"}]
        msg = (mid, at, "inbound", f"198.51.{rnd.randrange(256)}.{rnd.randrange(256)}", sender, sender,
               f"sender{sd}.test", f"Subject number {i} about topic {rnd.randrange(1000)}",
               f"<{i}.{secrets.token_hex(4)}@sender{sd}.test>", 2000 + rnd.randrange(50000),
               6.0 if syms else 0.0, ACTION_OF[cat], cat, json.dumps(syms), rnd.uniform(5, 80))
        yield msg, [(mid, r, r.split("@")[1], ACTION_OF[cat], "delivered") for r in sorted(rcpts)]


MSG_COLS = ("id", "received_at", "direction", "client_ip", "mail_from", "from_header", "from_domain",
            "subject", "message_id", "size", "score", "action", "category", "symbols", "scan_ms")
RCPT_COLS = ("message_id", "address", "domain", "action", "status")
# Columns the ORM fills with defaults; the bulk loader must give them too.
MSG_FIXED = {"client_name": "", "helo": "", "auth_user": "", "reason": "", "urls": "[]",
             "url_domains": "[]", "attachments": "[]", "headers": "{}", "node": ""}
RCPT_FIXED = {"attempts": 1, "last_response": "250 ok"}


def drop_indexes(db: Database) -> list:
    idx = [i for t in (MessageRow.__table__, RecipientRow.__table__) for i in t.indexes]
    with db.engine.begin() as c:
        for i in idx:
            c.execute(text(f"DROP INDEX IF EXISTS {i.name}"))
    return idx


def create_indexes(db: Database, idx: list) -> None:
    for i in idx:
        i.create(db.engine)
    with db.engine.begin() as c:
        c.execute(text("ANALYZE"))


def load_sqlite(db: Database, n: int) -> None:
    conn = db.engine.raw_connection()
    try:
        cur = conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        mcols = MSG_COLS + tuple(MSG_FIXED)
        rcols = RCPT_COLS + tuple(RCPT_FIXED)
        mq = f"INSERT INTO messages ({','.join(mcols)}) VALUES ({','.join('?' * len(mcols))})"
        rq = f"INSERT INTO recipients ({','.join(rcols)}) VALUES ({','.join('?' * len(rcols))})"
        batch_m, batch_r = [], []
        for m, rs in rows(n):
            m = list(m)
            m[1] = m[1].replace(tzinfo=None).isoformat(sep=" ")
            batch_m.append(tuple(m) + tuple(MSG_FIXED.values()))
            batch_r.extend(r + tuple(RCPT_FIXED.values()) for r in rs)
            if len(batch_m) >= 20000:
                cur.executemany(mq, batch_m)
                cur.executemany(rq, batch_r)
                conn.commit()
                batch_m, batch_r = [], []
        cur.executemany(mq, batch_m)
        cur.executemany(rq, batch_r)
        conn.commit()
    finally:
        conn.close()


def load_pg(db: Database, n: int) -> None:
    conn = db.engine.raw_connection()
    try:
        dbapi = conn.dbapi_connection
        with dbapi.cursor() as cur:
            mcols = MSG_COLS + tuple(MSG_FIXED)
            rcols = RCPT_COLS + tuple(RCPT_FIXED)
            with cur.copy(f"COPY messages ({','.join(mcols)}) FROM STDIN") as cm:
                rbuf: list[tuple] = []
                for m, rs in rows(n):
                    cm.write_row(m + tuple(MSG_FIXED.values()))
                    rbuf.extend(r + tuple(RCPT_FIXED.values()) for r in rs)
            with cur.copy(f"COPY recipients ({','.join(rcols)}) FROM STDIN") as cr:
                for r in rbuf:
                    cr.write_row(r)
        dbapi.commit()
    finally:
        conn.close()


def timed(fn, reps: int) -> list[float]:
    out = []
    for i in range(reps):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def run_queries(db: Database, n: int, reps: int) -> dict[str, list[float]]:
    rnd = random.Random(7)
    admin = queries.Scope(all=True)
    dadmin = queries.Scope(domains=("corp3.test",))
    with db.session() as s:
        sample = list(s.execute(select(MessageRow.id, MessageRow.message_id, MessageRow.from_domain)
                                .where(MessageRow.id.in_([rows_id for rows_id in _sample_ids(s, reps)]))))
        rcpts = [f"u{rnd.randrange(N_RCPTS // N_RCPT_DOMAINS)}@corp{rnd.randrange(N_RCPT_DOMAINS)}.test"
                 for _ in range(reps)]
    res: dict[str, list[float]] = {}

    def with_session(f):
        def run(i: int) -> None:
            with db.session() as s:
                f(s, i)
        return run

    def srch(s, scope, f, cursor=None):
        rows_, _ = queries.search_messages(s, scope, f, limit=50, cursor=cursor)
        return rows_

    res["baseline: primary-key lookup"] = timed(with_session(lambda s, i: s.get(MessageRow, sample[i % len(sample)][0])), reps)
    res["first page, no filter"] = timed(with_session(lambda s, i: srch(s, admin, queries.SearchFilters())), reps)
    res["by recipient address"] = timed(with_session(
        lambda s, i: srch(s, admin, queries.SearchFilters(recipient=rcpts[i]))), reps)
    res["by sender domain"] = timed(with_session(
        lambda s, i: srch(s, admin, queries.SearchFilters(sender="@" + sample[i % len(sample)][2]))), reps)
    res["by Message-ID"] = timed(with_session(
        lambda s, i: srch(s, admin, queries.SearchFilters(message_id=sample[i % len(sample)][1]))), reps)

    def cat_range(s, i):
        start = NOW - timedelta(days=rnd.randrange(7, DAYS))
        srch(s, admin, queries.SearchFilters(category="phishing", since=start, until=start + timedelta(days=7)))
    res["category + 7-day range"] = timed(with_session(cat_range), reps)

    def deep(s, i):
        at = NOW - timedelta(days=60 + rnd.random() * 20)  # ~700k rows deep
        srch(s, admin, queries.SearchFilters(), cursor=queries.encode_cursor(at, "f" * 32))
    res["deep keyset page (~700k rows in)"] = timed(with_session(deep), reps)
    res["domain admin, first page"] = timed(with_session(lambda s, i: srch(s, dadmin, queries.SearchFilters())), reps)
    # No match, so the whole default window (last 7 days, ~78k rows) is scanned: worst case.
    res["subject substring, no match (7-day default window)"] = timed(with_session(
        lambda s, i: srch(s, admin, queries.SearchFilters(subject=f"topic {rnd.randrange(1000)}x"))), max(5, reps // 4))
    return res


def _sample_ids(s, k: int) -> list[str]:
    total_ids = s.scalars(select(MessageRow.id).order_by(MessageRow.received_at.desc()).limit(k * 50)).all()
    return random.Random(3).sample(list(total_ids), min(k, len(total_ids)))


def report(name: str, load_s: float, res: dict[str, list[float]]) -> None:
    base = statistics.median(res["baseline: primary-key lookup"])
    print(f"\n## {name} (load {load_s:.1f} s)\n")
    print("| query | p50 ms | p95 ms | p50 / baseline |")
    print("|---|---:|---:|---:|")
    for k, v in res.items():
        v = sorted(v)
        p95 = v[min(len(v) - 1, int(len(v) * 0.95))]
        print(f"| {k} | {statistics.median(v):.2f} | {p95:.2f} | {statistics.median(v) / base:.1f}× |")
    sys.stdout.flush()


def bench(url: str, name: str, n: int, reps: int, loader, reuse: bool = False) -> None:
    db = Database(url)
    t = time.perf_counter()
    if not reuse:
        Base.metadata.drop_all(db.engine)
        db.create_schema()
        idx = drop_indexes(db)
        loader(db, n)
        create_indexes(db, idx)
    load_s = time.perf_counter() - t
    report(name, load_s, run_queries(db, n, reps))
    db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--sqlite-path", default="", help="keep the SQLite file here (reused with --reuse)")
    ap.add_argument("--reuse", action="store_true", help="query an existing --sqlite-path without loading")
    a = ap.parse_args()
    print(f"# search benchmark: {a.rows:,} messages, {a.repeat} runs per query kind")
    if not a.skip_sqlite:
        if a.sqlite_path:
            bench(f"sqlite:///{a.sqlite_path}", "SQLite", a.rows, a.repeat, load_sqlite, a.reuse)
        else:
            with tempfile.TemporaryDirectory(prefix="mm-bench-") as d:
                bench(f"sqlite:///{d}/bench.db", "SQLite", a.rows, a.repeat, load_sqlite)
    if not a.skip_pg:
        name = f"mm_bench_{secrets.token_hex(4)}"
        admin = create_engine(a.pg_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            bench(a.pg_admin_url.rsplit("/", 1)[0] + f"/{name}", "PostgreSQL", a.rows, a.repeat, load_pg)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
