"""Journal append throughput: Journal.append / append_many vs plain SQLite inserts, same settings.

Every variant writes to a fresh file in WAL mode with synchronous=FULL (durable on commit). Baselines:
a plain ``INSERT`` committed per row, and ``executemany`` of the same rows in one transaction.

    python benchmarks/bench_journal.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.journal import Journal


def draft(i: int) -> EventDraft:
    return EventDraft(type="command", text=f"ran `pytest -q tests/unit` -> 12 passed ({i})", tags=["test"])


def plain_sqlite(path: Path, n: int, batched: bool) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, body TEXT)")
    rows = [(f"s:{i}", json.dumps({"text": draft(i).text})) for i in range(n)]
    start = time.perf_counter()
    if batched:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (id, body) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    else:
        for row in rows:
            conn.execute("INSERT INTO t (id, body) VALUES (?, ?)", row)
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def journal_append(path: Path, n: int) -> float:
    with Journal(path) as j:
        ref = SessionRef(session_id="bench")
        drafts = [draft(i) for i in range(n)]
        start = time.perf_counter()
        for d in drafts:
            j.append(ref, d)
        return n / (time.perf_counter() - start)


def journal_append_many(path: Path, n: int, batch: int) -> float:
    with Journal(path) as j:
        ref = SessionRef(session_id="bench")
        drafts = [draft(i) for i in range(n)]
        start = time.perf_counter()
        for k in range(0, n, batch):
            j.append_many(ref, drafts[k : k + batch])
        return n / (time.perf_counter() - start)


def journal_threads(path: Path, n: int, threads: int) -> float:
    with Journal(path) as j:
        per = n // threads

        def work(t: int) -> None:
            ref = SessionRef(session_id=f"s{t}")
            for i in range(per):
                j.append(ref, draft(i))

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return per * threads / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    n_single, n_batch = (300, 5000) if args.quick else (3000, 100_000)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        base_single = plain_sqlite(d / "a.sqlite3", n_single, batched=False)
        base_batch = plain_sqlite(d / "b.sqlite3", n_batch, batched=True)
        rows = [
            ("plain sqlite INSERT, commit per row (baseline)", n_single, base_single),
            ("Journal.append (commit per event)", n_single, journal_append(d / "c.sqlite3", n_single)),
            (
                "Journal.append, 4 threads (group commit)",
                n_single,
                journal_threads(d / "d.sqlite3", n_single, 4),
            ),
            (
                "Journal.append, 16 threads (group commit)",
                n_single,
                journal_threads(d / "g.sqlite3", n_single, 16),
            ),
            ("plain sqlite executemany, one transaction", n_batch, base_batch),
            (
                "Journal.append_many, 100 per call",
                n_batch,
                journal_append_many(d / "e.sqlite3", n_batch, 100),
            ),
            (
                "Journal.append_many, 1000 per call",
                n_batch,
                journal_append_many(d / "f.sqlite3", n_batch, 1000),
            ),
        ]
    print(f"# Journal appends ({'quick' if args.quick else 'full'} mode; WAL, synchronous=FULL)\n")
    print("| variant | events | events/s | vs plain per-row commit |")
    print("|---|---:|---:|---:|")
    for name, n, rate in rows:
        print(f"| {name} | {n} | {rate:,.0f} | {rate / base_single:.2f}x |")


if __name__ == "__main__":
    main()
