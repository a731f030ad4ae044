#!/usr/bin/env python3
"""What a wide change log costs a narrow table's writes (docs/DESIGN.md, "Wide tables").

A 4-column table's AFTER INSERT trigger writes its 4 values into a log shaped like
Astha's (id, ts, tbl, op, schema_id, then untyped value columns), in 100-row
transactions with one prepared statement. Each variant runs under
`valgrind --tool=callgrind` twice (100 and 100+ROWS rows); the difference divided by
ROWS is the instructions per row, and the no-capture variant's is subtracted.

    python3 scripts/wide_log_cost.py            # needs valgrind and python3's sqlite3
    python3 scripts/wide_log_cost.py run KIND ARG ROWS   # (internal) one run
"""
import os, re, subprocess, sys, tempfile

FIX = "id INTEGER PRIMARY KEY, ts REAL NOT NULL, tbl TEXT NOT NULL, op TEXT NOT NULL, schema_id INTEGER NOT NULL"
ROWS = 3000
VARIANTS = [("none", 0), ("width", 8), ("width", 16), ("width", 32), ("width", 64),
            ("width", 129), ("pad", 119), ("classes", 1)]


def vcols(n):
    return "".join(f", v{i}" for i in range(n))


def setup_sql(kind, arg):
    s = ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
         "CREATE TABLE t (id INTEGER PRIMARY KEY, c1 INTEGER, c2 TEXT, c3 REAL)"]
    ins = ("INSERT INTO log (ts,tbl,op,schema_id,v0,v1,v2,v3) "
           "VALUES (julianday('now'),'t','I',1,NEW.id,NEW.c1,NEW.c2,NEW.c3)")
    if kind == "none":
        return s
    if kind == "width":  # a log of `arg` value columns
        s.append(f"CREATE TABLE log ({FIX}{vcols(arg)})")
    if kind == "pad":  # 8 value columns plus one blob of `arg` bytes: the bytes, not the columns
        s.append(f"CREATE TABLE log ({FIX}{vcols(8)}, pad)")
        ins = ins.replace("v3)", "v3,pad)").replace("NEW.c3)", f"NEW.c3, zeroblob({arg}))")
    if kind == "classes":  # width classes: the id is the max over all log tables + 1
        s.append(f"CREATE TABLE log ({FIX}{vcols(8)})")
        for k in range(arg):
            s.append(f"CREATE TABLE log_w{k} ({FIX}{vcols(128)})")
        ms = ["coalesce((SELECT max(id) FROM log),0)"] + \
             [f"coalesce((SELECT max(id) FROM log_w{k}),0)" for k in range(arg)]
        ins = ins.replace("(ts,", "(id,ts,").replace("VALUES (", f"VALUES (max({', '.join(ms)})+1, ")
    s.append(f"CREATE TRIGGER tr AFTER INSERT ON t BEGIN {ins}; END")
    return s


def run(kind, arg, rows):
    import sqlite3
    with tempfile.TemporaryDirectory() as d:
        c = sqlite3.connect(os.path.join(d, "t.db"), isolation_level=None)
        for s in setup_sql(kind, arg):
            c.execute(s)
        for b in range(0, rows, 100):
            c.execute("BEGIN")
            c.executemany("INSERT INTO t (id,c1,c2,c3) VALUES (?,?,?,?)",
                          [(i, i * 7, f"text-{i}", i + 0.5) for i in range(b + 1, b + 101)])
            c.execute("COMMIT")


def count(kind, arg, rows):
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        sys.executable, __file__, "run", kind, str(arg), str(rows)],
                       capture_output=True, text=True)
    return int(re.search(r"Collected : (\d+)", r.stderr).group(1))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    none = None
    for kind, arg in VARIANTS:
        per_row = (count(kind, arg, 100 + ROWS) - count(kind, arg, 100)) / ROWS
        none = per_row if none is None else none
        print(f"{kind:8s} {arg:4d}: {per_row:8.0f} instructions/row, "
              f"{per_row - none:8.0f} over no capture", flush=True)


if __name__ == "__main__":
    main()
