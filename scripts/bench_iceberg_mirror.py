#!/usr/bin/env python3
"""Benchmark of the Iceberg mirror (`type = "iceberg"`) beside the file sink, same run.

    python3 scripts/bench_iceberg_mirror.py --astha target/release/astha [--rows 50000]
        [--commit-interval 1s [--commit-rows 100000]]

Run it with the interop venv's Python (scripts/interop_venv.sh) for the DuckDB and
pyiceberg timings. What it does, in a temporary directory:

1. `astha run` once with a pipeline of two sinks on one table, a file sink (`fsync =
   "batch"`) and the Iceberg mirror (`compact_after_delete_files = 0`: never), to install
   capture; stopped.
2. A backlog written with Astha down: `rows` inserts, `rows/2` updates of random rows and
   `rows/10` deletes, 500 changes per transaction (16-column-free table: id, a INTEGER,
   b TEXT, c REAL).
3. `astha run` again: the time from its start until each sink's slot is at the head of the
   log is that sink's catch-up; changes / time is its rate. With `--commit-interval` the
   mirror stages confirmed changes in its catalog file first: its catch-up then also waits
   until nothing is staged (every change committed in Iceberg). The Iceberg table must then
   equal the SQLite table (checked with pyiceberg and DuckDB).
4. DuckDB `iceberg_scan` and pyiceberg scan times on the table with its delete files
   (best of 5), then `astha run` once more with `compact_after_delete_files = 1` and one
   update (its delivery commits, then folds all deletes), and the same timings after.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time


def pipeline(dir, compact, staging=""):
    (dir / "bench.toml").write_text(
        f"""[[sources]]
database = "src.db"
tables = ["t"]
install = true

[[sinks]]
name = "file"
type = "file"
path = "out/t.jsonl"
fsync = "batch"

[[sinks]]
name = "lake"
type = "iceberg"
warehouse = "lake"
namespace = "bench"
compact_after_delete_files = {compact}
{staging}"""
    )


def start(astha, dir):
    p = subprocess.Popen([astha, "run", "bench.toml"], cwd=dir, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "running" in line:
            break
    else:
        raise SystemExit(f"astha run did not start (exit {p.wait()})")
    # Keep reading its log, or a full pipe would stall it.
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def head(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT max(id) FROM __cdc_log").fetchone()[0]


def positions(db):
    with sqlite3.connect(db, timeout=30) as c:
        return dict(c.execute("SELECT name, position FROM __astha_slots"))


def staged(lake):
    try:
        with sqlite3.connect(lake / "catalog.db", timeout=30) as c:
            return c.execute("SELECT count(*) FROM astha_mirror_staged").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_at_head(db, names, target, started, lake=None):
    done = {}
    while len(done) < len(names):
        pos = positions(db)
        for n in names:
            if n not in done and pos.get(n, 0) >= target:
                if n == "lake" and lake is not None and staged(lake) > 0:
                    continue
                done[n] = time.monotonic() - started
        time.sleep(0.02)
    return done


def best_of(n, f):
    best = None
    for _ in range(n):
        t = time.perf_counter()
        out = f()
        d = time.perf_counter() - t
        best = d if best is None or d < best else best
    return best, out


def read_times(lake):
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_iceberg
    from pyiceberg.catalog.sql import SqlCatalog

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for module, name in ((duckdb_extension_avro, "avro"), (duckdb_extension_iceberg, "iceberg")):
        base = pathlib.Path(module.__file__).parent / "extensions"
        con.execute(f"LOAD '{sorted(base.glob(f'*/{name}.duckdb_extension'))[-1]}'")
    q = f"SELECT count(*), sum(a), max(b) FROM iceberg_scan('{lake / 'bench' / 't'}')"
    duck, duck_out = best_of(5, lambda: con.execute(q).fetchone())
    catalog = SqlCatalog("astha", uri=f"sqlite:///{lake / 'catalog.db'}", warehouse=f"file://{lake}")
    table = catalog.load_table("bench.t")
    py, py_rows = best_of(5, lambda: table.scan().to_arrow().num_rows)
    summary = table.current_snapshot().summary
    files = (summary["total-data-files"], summary.get("total-delete-files", "0"))
    return duck, duck_out, py, py_rows, files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--astha", required=True)
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--commit-interval", help="the mirror's commit_interval (e.g. 1s); default: none")
    ap.add_argument("--commit-rows", type=int, help="the mirror's commit_rows (with --commit-interval)")
    args = ap.parse_args()
    staging = ""
    if args.commit_interval:
        staging = f'commit_interval = "{args.commit_interval}"\n'
        if args.commit_rows:
            staging += f"commit_rows = {args.commit_rows}\n"
    astha = str(pathlib.Path(args.astha).resolve())
    dir = pathlib.Path(tempfile.mkdtemp(prefix="astha-bench-iceberg-"))
    db = dir / "src.db"
    with sqlite3.connect(db) as c:
        c.executescript("PRAGMA journal_mode = WAL;"
                        "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL);")
    pipeline(dir, 0, staging)
    stop(start(astha, dir))

    rng = random.Random(7)
    n = args.rows
    c = sqlite3.connect(db, isolation_level=None)
    changes = 0
    def batched(stmt, rows):
        nonlocal changes
        for i in range(0, len(rows), 500):
            c.execute("BEGIN")
            c.executemany(stmt, rows[i:i + 500])
            c.execute("COMMIT")
        changes += len(rows)
    batched("INSERT INTO t VALUES (?, ?, ?, ?)",
            [(i, i * 7, f"row {i} text", i / 3) for i in range(1, n + 1)])
    batched("UPDATE t SET a = ?, b = ? WHERE id = ?",
            [(-i, f"updated {i}", rng.randint(1, n)) for i in range(n // 2)])
    batched("DELETE FROM t WHERE id = ?", [(rng.randint(1, n),) for _ in range(n // 10)])
    c.close()
    target = head(db)

    started = time.monotonic()
    p = start(astha, dir)
    done = wait_at_head(db, ["file", "lake"], target, started, dir / "lake")
    stop(p)
    with sqlite3.connect(db) as c:
        live = c.execute("SELECT count(*) FROM t").fetchone()[0]
    print(json.dumps({"commit_interval": args.commit_interval, "commit_rows": args.commit_rows,
                      "changes": changes, "live_rows": live,
                      "catch_up_s": done,
                      "rate_per_s": {k: round(changes / v) for k, v in done.items()}}))

    lake = dir / "lake"
    duck, duck_out, py, py_rows, files = read_times(lake)
    assert duck_out[0] == live and py_rows == live, (duck_out, py_rows, live)
    print(json.dumps({"before_compaction": {"duckdb_s": round(duck, 4), "pyiceberg_s": round(py, 4),
                                            "data_files,delete_files": files}}))

    pipeline(dir, 1)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE t SET a = a WHERE id = (SELECT min(id) FROM t)")
    target = head(db)
    started = time.monotonic()
    p = start(astha, dir)
    folded = wait_at_head(db, ["lake"], target, started)
    stop(p)
    duck, duck_out, py, py_rows, files = read_times(lake)
    assert duck_out[0] == live and py_rows == live, (duck_out, py_rows, live)
    print(json.dumps({"after_compaction": {"duckdb_s": round(duck, 4), "pyiceberg_s": round(py, 4),
                                           "data_files,delete_files": files,
                                           "fold_run_s": round(folded["lake"], 2)}}))
    if args.keep:
        print(f"workdir: {dir}")
    else:
        shutil.rmtree(dir)


if __name__ == "__main__":
    sys.exit(main())
