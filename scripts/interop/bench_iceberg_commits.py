#!/usr/bin/env python3
"""The pyiceberg side of astha-bench's iceberg suite: times commits on the files the bench
wrote, with the schedule it gives, so both writers commit the same files the same way.

Input JSON (--plan):
  {
    "schema": [[1, "id", "long"], [2, "name", "string"]],  # field id, name, type (all optional)
    "files": ["/abs/f0.parquet", ...],    # appended one per commit, in order
    "checkpoints": [10, 1000, 10000],     # after this many commits...
    "measure": 20,                        # ...time this many appends
    "expire_every": 100, "keep": 10,      # every N commits, expire all but the newest `keep`
                                          # snapshots (untimed; pyiceberg's expiry is
                                          # metadata-only)
    "replaces": [{"remove": [paths], "add": path}, ...], # timed, after the appends
    "budget_s": 600                       # optional: stop appending once this is spent
                                          # (after timing `measure` more appends)
  }
Commits are pyiceberg's fast appends (its default with commit.manifest-merge.enabled unset) and
overwrites (delete + add) for the replaces, through a SqlCatalog on SQLite. Data file statistics
are read from each footer before any timing starts (as Astha's side has them from the writer).

Prints one JSON object: {"append_ms": {"<checkpoint>": [ms, ...]}, "replace_ms": [ms, ...],
"stopped_at": <commits before the last timed appends, or null>, "stop_ms": [ms, ...],
"all_ms": [ms of every append, in order]}.
"""

import argparse
import json
import pathlib
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog-db", required=True)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--plan", required=True)
    args = p.parse_args()
    plan = json.loads(pathlib.Path(args.plan).read_text())

    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.io.pyarrow import parquet_file_to_data_file
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    types = {"long": LongType(), "string": StringType()}
    fields = [NestedField(fid, name, types[ty], required=False) for fid, name, ty in plan["schema"]]
    warehouse = pathlib.Path(args.warehouse).resolve()
    catalog = SqlCatalog("bench", uri=f"sqlite:///{pathlib.Path(args.catalog_db).resolve()}",
                         warehouse=f"file://{warehouse}")
    catalog.create_namespace_if_not_exists("bench")
    table = catalog.create_table("bench.commits", schema=Schema(*fields))

    by_path = {}
    for path in plan["files"] + [r["add"] for r in plan["replaces"]]:
        by_path[path] = parquet_file_to_data_file(table.io, table.metadata, path)

    windows = {k: [] for k in plan["checkpoints"]}
    budget = plan.get("budget_s")
    began = time.perf_counter()
    stopped_at, stop_ms = None, []
    appended = []
    all_ms = []
    for i, path in enumerate(plan["files"]):
        if stopped_at is None and budget is not None and time.perf_counter() - began > budget:
            stopped_at = i
        if stopped_at is not None and i >= stopped_at + plan["measure"]:
            break
        appended.append(path)
        started = time.perf_counter()
        with table.transaction() as tx:
            with tx.update_snapshot().fast_append() as append:
                append.append_data_file(by_path[path])
        elapsed = (time.perf_counter() - started) * 1000.0
        all_ms.append(elapsed)
        for k, out in windows.items():
            if k <= i < k + plan["measure"]:
                out.append(elapsed)
        if stopped_at is not None:
            stop_ms.append(elapsed)
        if (i + 1) % plan["expire_every"] == 0:
            snapshots = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number)
            old = [s.snapshot_id for s in snapshots[: -plan["keep"]]]
            if old:
                table.maintenance.expire_snapshots().by_ids(old).commit()

    replace_ms = []
    for r in plan["replaces"]:
        started = time.perf_counter()
        # Deleting needs the table's own DataFile objects (they carry the spec id), found in
        # the current manifests as pyiceberg's delete does: part of the commit's cost.
        remove = set(r["remove"])
        live = [e.data_file for m in table.current_snapshot().manifests(table.io)
                for e in m.fetch_manifest_entry(table.io, discard_deleted=True)
                if e.data_file.file_path in remove]
        with table.transaction() as tx:
            with tx.update_snapshot().overwrite() as overwrite:
                for data_file in live:
                    overwrite.delete_data_file(data_file)
                overwrite.append_data_file(by_path[r["add"]])
        replace_ms.append((time.perf_counter() - started) * 1000.0)

    rows = sum(by_path[f].record_count for f in appended)
    scanned = table.scan().to_arrow().num_rows
    if scanned != rows:
        print(f"pyiceberg table holds {scanned} rows, expected {rows}", file=sys.stderr)
        return 1
    print(json.dumps({"append_ms": {str(k): v for k, v in windows.items()}, "replace_ms": replace_ms,
                      "stopped_at": stopped_at, "stop_ms": stop_ms, "all_ms": all_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
