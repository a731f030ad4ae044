#!/usr/bin/env python3
"""What removing change-log rows costs SQLite, per row, by the ways SQLite has to do it.

    python3 scripts/log_delete_cost.py [--rows 200000]

The log's cleanup deletes rows every slot is past while the application's writer waits
for the write lock (SQLite has one), so its cost per row bounds how close a writer under
delivery can come to the capture-only rate. Measured here on a table shaped like Astha's
log for a 16-column table (id, the fixed columns, 17 value columns; about 20 rows a 4 KiB
page), with Python's own SQLite, WAL mode, `synchronous=NORMAL`, as Astha runs:

- `DELETE` of id ranges from the oldest row, in chunks of 1,000, 10,000 and 100,000 rows
  (Astha's cleanup: 10,000-row chunks);
- `DELETE FROM log` with no `WHERE` (SQLite's truncate optimization: pages are freed, no
  row is visited one by one);
- `DROP TABLE` of a table holding the same rows (a log kept in segments, each dropped
  whole once every slot is past it).

Prints microseconds per row and the bytes each added to the WAL (what a checkpoint must
copy later). BENCHMARKS.md quotes a run.
"""

import argparse
import os
import sqlite3
import tempfile
import time

VALUES = 17


def connect(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def fill(conn, table, rows):
    cols = ",".join(f"v{i}" for i in range(VALUES))
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} "
        f"(id INTEGER PRIMARY KEY, tbl TEXT, op TEXT, ts REAL, schema_id INTEGER, {cols})"
    )
    row = ("t", "I", 2460000.5, 1) + tuple(
        f"some text value {i}" if i % 2 else i * 1000 for i in range(VALUES)
    )
    marks = ",".join("?" * len(row))
    for start in range(0, rows, 10_000):
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO {table} (tbl, op, ts, schema_id, {cols}) VALUES ({marks})",
            [row] * min(10_000, rows - start),
        )
        conn.execute("COMMIT")
    # Start each measurement from an empty WAL and a cold connection, as the cleanup
    # does (another connection's commits reset its page cache).
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def measure(label, rows, remove):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log.db")
        conn = connect(path)
        fill(conn, "log", rows)
        conn.close()
        conn = connect(path)
        started = time.perf_counter()
        remove(conn)
        seconds = time.perf_counter() - started
        wal = os.path.getsize(path + "-wal")
        conn.close()
    print(f"{label:<32} {seconds / rows * 1e6:6.2f} µs/row   WAL +{wal / 1e6:5.1f} MB")


def chunked(chunk):
    def remove(conn):
        while conn.execute(
            "DELETE FROM log WHERE id < (SELECT min(id) FROM log) + ? "
            "AND id <= (SELECT max(id) FROM log)",
            (chunk,),
        ).rowcount:
            pass

    return remove


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    print(f"SQLite {sqlite3.sqlite_version}, {rows} rows")
    for chunk in (1_000, 10_000, 100_000):
        measure(f"DELETE, {chunk}-row chunks", rows, chunked(chunk))
    measure("DELETE FROM log (truncate)", rows, lambda c: c.execute("DELETE FROM log"))
    measure("DROP TABLE (a whole segment)", rows, lambda c: c.execute("DROP TABLE log"))


if __name__ == "__main__":
    main()
