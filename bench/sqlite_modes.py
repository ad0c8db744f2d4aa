#!/usr/bin/env python3
"""What SQLite's `locking_mode=EXCLUSIVE` would cost tfward (docs/architecture.md §10).

In WAL mode SQLite maps `<db>-shm` into memory; a write to that mapping after the file became
unwritable (`chattr +i`) is SIGBUS, which kills the process. `PRAGMA locking_mode=EXCLUSIVE`
keeps the WAL index in heap memory instead (no `-shm` at all), but then one connection must
serve every read and write, and no other process can read the database while the daemon runs.

This measures the first price: a writer storing log-chunk-sized rows (20 KB, ~150 a second,
the way run logs are flushed) while three readers run the API's kind of point query, for
`--seconds` per mode, in the same run:

* `wal-shared`: tfward's mode, a writer connection and a connection per reader;
* `wal-exclusive`: one connection behind a lock for all of them (no `-shm`);
* `truncate`: a rollback journal (no WAL, no `-shm`), a connection each.

It prints writes/s, reads/s and read latency (p50, p99, max). The second price (no reader
outside the daemon) is not a number. Run: `.venv/bin/python bench/sqlite_modes.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

MODES = ("wal-shared", "wal-exclusive", "truncate")


def connect(path: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    if mode == "wal-exclusive":
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # before the WAL is first used
    conn.execute("PRAGMA journal_mode=" + ("WAL" if mode.startswith("wal") else "TRUNCATE"))
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def prepare(path: Path, mode: str) -> sqlite3.Connection:
    conn = connect(path, mode)
    conn.execute("CREATE TABLE chunks (run TEXT, seq INTEGER, data BLOB, PRIMARY KEY (run, seq))")
    conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT, payload TEXT)")
    for i in range(200):
        conn.execute("INSERT INTO runs VALUES (?, ?, ?)", (f"run{i}", "applying", "x" * 500))
    return conn


def measure(directory: Path, mode: str, seconds: float) -> dict[str, float]:
    path = directory / f"{mode}.db"
    first = prepare(path, mode)
    single = mode == "wal-exclusive"
    guard = threading.Lock()

    @contextlib.contextmanager
    def turn() -> Iterator[None]:
        if single:
            with guard:
                yield
        else:
            yield

    writer = first if single else connect(path, mode)
    readers = [first] * 3 if single else [connect(path, mode) for _ in range(3)]
    stop = time.monotonic() + seconds
    writes = [0]
    latencies: list[float] = []

    def write() -> None:
        seq = 0
        while time.monotonic() < stop:
            with turn():
                writer.execute("BEGIN")
                writer.execute("INSERT INTO chunks VALUES (?, ?, ?)", ("r", seq, b"y" * 20_000))
                writer.execute("COMMIT")
            seq += 1
            writes[0] += 1
            time.sleep(0.005)

    def read(conn: sqlite3.Connection) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            with turn():
                conn.execute("BEGIN")
                conn.execute("SELECT * FROM runs WHERE id = ?", ("run7",)).fetchall()
                conn.execute("COMMIT")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.002)

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(conn,)) for conn in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {
        "writes_per_s": writes[0] / seconds,
        "reads_per_s": len(latencies) / seconds,
        "read_p50_ms": latencies[len(latencies) // 2] * 1e3,
        "read_p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "read_max_ms": latencies[-1] * 1e3,
        "shm_file": float(os.path.exists(f"{path}-shm")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per mode (4)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfward-sqlite-modes-") as scratch:
        print(f"{'mode':14} {'writes/s':>9} {'reads/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>8}  -shm")
        for mode in MODES:
            m = measure(Path(scratch), mode, opts.seconds)
            print(f"{mode:14} {m['writes_per_s']:9.0f} {m['reads_per_s']:8.0f} "
                  f"{m['read_p50_ms']:8.3f} {m['read_p99_ms']:8.3f} {m['read_max_ms']:8.1f}  "
                  f"{'yes' if m['shm_file'] else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
