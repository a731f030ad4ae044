#!/usr/bin/env python3
"""Checks the partitioning of an Iceberg table written by Astha with real readers.

check_iceberg.py reads the rows back; this script checks what is partition-specific:
  * pyiceberg's table.spec() has the expected fields (name, transform, source and field ids);
  * pyiceberg's inspect.files() shows each data file with the expected partition values;
  * pyiceberg's inspect.partitions() lists each partition with its record and file counts;
  * pruning: scan(row_filter=...).plan_files() plans exactly the expected data files (a
    filter on a partition source column must skip the other partitions' files), and the
    rows read through the filter are the expected ones, in pyiceberg and in DuckDB
    (iceberg_scan ... WHERE); DuckDB's EXPLAIN ANALYZE must report the same number of
    data files scanned when it reports one.

Expected JSON:
  {
    "spec": [{"name": "region", "transform": "identity", "source-id": 2, "field-id": 1000}, ...],
    "files": {"<path below data/>": {"region": "eu", "at_day": "2024-03-01", ...}, ...},
    "partitions": [{"partition": {...}, "record_count": 3, "file_count": 1}, ...],
    "filters": [{"where": "region = 'eu'", "files": ["<path below data/>", ...],
                 "rows": [[...], ...]}]
  }
Partition values are canonical JSON (dates "YYYY-MM-DD", ints, strings). Rows use the
shapes of check_iceberg.py (only id columns are compared: each expected row is [id]).

Exit status: 0 when every check passes, 1 on a mismatch, 2 on a usage or setup error.
"""

import argparse
import datetime
import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from check_iceberg import Mismatch, load_duckdb_extensions, sql_str  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog-db", required=True)
    p.add_argument("--catalog-name", default="astha")
    p.add_argument("--warehouse", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--expected", required=True)
    return p.parse_args()


def canon(v):
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, datetime.date):
        return v.isoformat()
    return v


def canon_partition(p):
    return {k: canon(v) for k, v in (p or {}).items()}


def name_of(path):
    """A data file's path below the table's data/ directory (partition dirs included)."""
    return path.split("/data/", 1)[-1]


def check_pyiceberg(args, expected):
    from pyiceberg.catalog.sql import SqlCatalog

    db = pathlib.Path(args.catalog_db).resolve()
    warehouse = pathlib.Path(args.warehouse).resolve()
    catalog = SqlCatalog(args.catalog_name, uri=f"sqlite:///{db}", warehouse=f"file://{warehouse}")
    table = catalog.load_table(args.table)

    spec = [
        {"name": f.name, "transform": str(f.transform), "source-id": f.source_id, "field-id": f.field_id}
        for f in table.spec().fields
    ]
    if spec != expected["spec"]:
        raise Mismatch(f"pyiceberg spec {spec} != expected {expected['spec']}")
    print(f"OK pyiceberg spec: {[(f['name'], f['transform']) for f in spec]}")

    files = table.inspect.files()
    got = {
        name_of(path): canon_partition(part)
        for path, part, content in zip(
            files.column("file_path").to_pylist(),
            files.column("partition").to_pylist(),
            files.column("content").to_pylist(),
        )
        if content == 0
    }
    if got != expected["files"]:
        lines = ["pyiceberg inspect.files partitions differ"]
        for k in sorted(set(got) | set(expected["files"])):
            if got.get(k) != expected["files"].get(k):
                lines.append(f"  {k}: read {got.get(k)}, expected {expected['files'].get(k)}")
        raise Mismatch("\n".join(lines[:20]))
    print(f"OK pyiceberg inspect.files: {len(got)} data files with their partitions")

    parts = table.inspect.partitions()
    got_parts = sorted(
        (json.dumps(canon_partition(p), sort_keys=True), r, f)
        for p, r, f in zip(
            parts.column("partition").to_pylist(),
            parts.column("record_count").to_pylist(),
            parts.column("file_count").to_pylist(),
        )
    )
    want_parts = sorted(
        (json.dumps(p["partition"], sort_keys=True), p["record_count"], p["file_count"]) for p in expected["partitions"]
    )
    if got_parts != want_parts:
        raise Mismatch(f"pyiceberg inspect.partitions {got_parts[:5]}... != expected {want_parts[:5]}...")
    print(f"OK pyiceberg inspect.partitions: {len(got_parts)} partitions, record and file counts match")

    total = len(list(table.scan().plan_files()))
    for f in expected.get("filters", []):
        scan = table.scan(row_filter=f["where"])
        planned = sorted(name_of(t.file.file_path) for t in scan.plan_files())
        if planned != sorted(f["files"]):
            raise Mismatch(f"pyiceberg where {f['where']}: planned {planned}, expected {sorted(f['files'])}")
        ids = sorted(scan.to_arrow().column("id").to_pylist())
        if ids != sorted(r[0] for r in f["rows"]):
            raise Mismatch(f"pyiceberg where {f['where']}: ids {ids} != expected")
        print(f"OK pyiceberg where {f['where']}: {len(planned)}/{total} files planned, {len(ids)} rows")
    return table.metadata_location


def check_duckdb(metadata_location, expected):
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    load_duckdb_extensions(con)
    path = metadata_location[len("file://"):] if metadata_location.startswith("file://") else metadata_location
    scan = f"iceberg_scan('{sql_str(path)}')"
    for f in expected.get("filters", []):
        ids = sorted(r[0] for r in con.execute(f"SELECT id FROM {scan} WHERE {f['where']}").fetchall())
        if ids != sorted(r[0] for r in f["rows"]):
            raise Mismatch(f"duckdb where {f['where']}: ids {ids} != expected {sorted(r[0] for r in f['rows'])}")
        plan = "\n".join(str(r[1]) for r in con.execute(f"EXPLAIN ANALYZE SELECT id FROM {scan} WHERE {f['where']}").fetchall())
        scanned = re.search(r"Total Files Read:\s*(\d+)", plan)
        note = f", EXPLAIN ANALYZE: {scanned.group(1)} files read" if scanned else " (EXPLAIN ANALYZE reports no file count)"
        if scanned and int(scanned.group(1)) != len(f["files"]):
            raise Mismatch(f"duckdb where {f['where']}: read {scanned.group(1)} files, expected {len(f['files'])}")
        print(f"OK duckdb where {f['where']}: {len(ids)} rows{note}")


def main():
    args = parse_args()
    expected = json.loads(pathlib.Path(args.expected).read_text())
    try:
        location = check_pyiceberg(args, expected)
        check_duckdb(location, expected)
    except Mismatch as e:
        print(f"MISMATCH {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"setup error: {e} (run scripts/interop_venv.sh and use its python)", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"READ FAILURE {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"partition check OK: {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
