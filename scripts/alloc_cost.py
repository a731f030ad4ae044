"""What an `astha run` costs per change: CPU time and peak resident set of the process.

Runs `astha run` of examples/pipelines/to-file.toml on a fresh shop.db, writes ROWS
orders in 100-row transactions from this process (another process than Astha's, as an
application would), waits until the output file holds every line, then reads the
`astha` process's CPU time (/proc/<pid>/stat) and peak RSS (VmHWM in /proc/<pid>/status)
and stops it with SIGTERM. Used to compare allocators (BENCHMARKS.md, "The `astha`
binary's allocator"); run two builds alternately.

    python3 scripts/alloc_cost.py target/release/astha [ROWS]
"""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

PIPELINE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pipelines", "to-file.toml"
)
SCHEMA = """PRAGMA journal_mode=WAL;
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, card_number TEXT, amount REAL, status TEXT);
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, password_hash TEXT);"""


def run(binary, rows):
    work = tempfile.mkdtemp()
    try:
        shutil.copy(PIPELINE, work)
        db = sqlite3.connect(os.path.join(work, "shop.db"), isolation_level=None)
        db.executescript(SCHEMA)
        astha = subprocess.Popen(
            [binary, "run", "to-file.toml"],
            cwd=work,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for line in astha.stderr:
            if "running" in line:
                break
        db.execute("PRAGMA busy_timeout=5000")
        started = time.time()
        for low in range(0, rows, 100):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO orders VALUES (?,?,?,?,?)",
                [
                    (i + 1, f"customer {i % 977}", f"4111-{i:08d}", i * 1.25, "paid" if i % 3 else "open")
                    for i in range(low, min(low + 100, rows))
                ],
            )
            db.execute("COMMIT")
        written = time.time() - started
        out = os.path.join(work, "out", "shop.jsonl")
        while True:
            try:
                with open(out, "rb") as f:
                    lines = sum(1 for _ in f)
            except FileNotFoundError:
                lines = 0
            if lines >= rows:
                break
            time.sleep(0.02)
        delivered = time.time() - started
        with open(f"/proc/{astha.pid}/status") as f:
            peak_kib = int(next(l for l in f if l.startswith("VmHWM")).split()[1])
        with open(f"/proc/{astha.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        astha.send_signal(signal.SIGTERM)
        astha.wait(timeout=30)
        return written, delivered, cpu, peak_kib
    finally:
        shutil.rmtree(work)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    written, delivered, cpu, peak_kib = run(binary, rows)
    print(
        f"{os.path.basename(binary)}: writer {rows / written:,.0f}/s, "
        f"delivered {rows / delivered:,.0f}/s, astha CPU {cpu:.2f} s "
        f"({cpu / rows * 1e6:.1f} us/change), VmHWM {peak_kib / 1024:.1f} MiB",
        flush=True,
    )


if __name__ == "__main__":
    main()
