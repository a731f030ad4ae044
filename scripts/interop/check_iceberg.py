#!/usr/bin/env python3
"""Reads an Iceberg table written by Astha with real readers and checks its rows.

Two independent readers must agree with the expected rows (order-independent, duplicates
counted):
  * pyiceberg: SqlCatalog(name, uri="sqlite:///<db>", warehouse="file://<dir>"), load the table
    by name, scan to Arrow;
  * DuckDB: iceberg_scan() on the metadata file the catalog points to, with the avro and iceberg
    extensions loaded from their pip wheels (autoinstall/autoload off, so nothing is downloaded);
    and iceberg_scan() on the table directory, which DuckDB resolves through
    metadata/version-hint.text (it must name the file the catalog points to).
pyiceberg's inspect.entries() and inspect.manifests() must also work on the current snapshot and
agree with the scan plan (every live entry is a planned file).

Expected-rows JSON:
  {
    "columns": ["id", "name", ...],          # optional: column names in table order
    "rows": [[1, "a", ...], ...],            # rows of the current snapshot
    "snapshots": {"<snapshot id>": [[...]]}, # optional: time-travel scans to check
    "snapshot_ids": [123, 456],              # optional: exact set of snapshots in the metadata
    "current_snapshot_id": 456,              # optional
    "filters": [{"where": "id >= 8", "rows": [[...]]}]
                                             # optional: filtered scans of the current snapshot;
                                             # both readers prune files with the manifest bounds,
                                             # so wrong bounds show up as missing rows
  }
Values use the canonical JSON shapes of astha-iceberg/src/value.rs: dates "YYYY-MM-DD",
timestamps "YYYY-MM-DDTHH:MM:SS.ffffff" (integers as days / microseconds are accepted too),
binary as a UTF-8 string or an array of byte values.

Exit status: 0 when every check passes, 1 on a mismatch, 2 on a usage or setup error.
"""

import argparse
import collections
import datetime
import json
import pathlib
import struct
import sys

EPOCH_DATE = datetime.date(1970, 1, 1)
EPOCH_TS = datetime.datetime(1970, 1, 1)


class Mismatch(Exception):
    pass


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog-db", required=True, help="SQLite catalog database file")
    p.add_argument("--catalog-name", default="astha", help="catalog name stored in the db (default: astha)")
    p.add_argument("--warehouse", required=True, help="warehouse directory")
    p.add_argument("--table", required=True, help="table identifier, namespace.table")
    p.add_argument("--expected", required=True, help="expected-rows JSON file")
    p.add_argument("--skip-duckdb", action="store_true", help="check with pyiceberg only")
    return p.parse_args()


# ---- normalisation: both readers' Arrow values and the expected JSON become canonical JSON ----

def kind_of(arrow_type):
    import pyarrow as pa

    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or str(arrow_type) == "binary_view":
        return "binary"
    if pa.types.is_float32(arrow_type):
        return "float"
    if pa.types.is_floating(arrow_type):
        return "double"
    return "plain"


def norm(kind, v):
    if v is None:
        return None
    if kind == "date":
        if isinstance(v, int) and not isinstance(v, bool):
            v = EPOCH_DATE + datetime.timedelta(days=v)
        return v.isoformat() if isinstance(v, datetime.date) else v
    if kind == "timestamp":
        if isinstance(v, int) and not isinstance(v, bool):
            v = EPOCH_TS + datetime.timedelta(microseconds=v)
        if isinstance(v, datetime.datetime):
            return v.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")
        s = str(v).rstrip("Z").replace(" ", "T")
        if "." not in s:
            s += ".000000"
        head, frac = s.split(".")
        return head + "." + frac.ljust(6, "0")
    if kind == "binary":
        b = bytes(v) if isinstance(v, (bytes, bytearray, list)) else str(v).encode()
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return list(b)
    if kind == "float":
        return struct.unpack("<f", struct.pack("<f", float(v)))[0]
    if kind == "double":
        return float(v)
    return v


def canonical_rows(rows, kinds):
    out = collections.Counter()
    for row in rows:
        if len(row) != len(kinds):
            raise Mismatch(f"row {row!r} has {len(row)} values, table has {len(kinds)} columns")
        out[json.dumps([norm(k, v) for k, v in zip(kinds, row)])] += 1
    return out


def arrow_rows(table):
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [list(r) for r in zip(*columns)] if columns else []


def compare(reader, label, arrow_table, expected_rows, expected_columns):
    names = list(arrow_table.schema.names)
    if expected_columns is not None and names != expected_columns:
        raise Mismatch(f"{reader} {label}: columns {names} != expected {expected_columns}")
    kinds = [kind_of(f.type) for f in arrow_table.schema]
    got = canonical_rows(arrow_rows(arrow_table), kinds)
    want = canonical_rows(expected_rows, kinds)
    if got != want:
        missing = list((want - got).elements())
        extra = list((got - want).elements())
        lines = [f"{reader} {label}: rows differ ({sum(got.values())} read, {sum(want.values())} expected)"]
        lines += [f"  missing:    {r}" for r in missing[:10]]
        lines += [f"  unexpected: {r}" for r in extra[:10]]
        raise Mismatch("\n".join(lines))
    print(f"OK {reader} {label}: {sum(got.values())} rows match")


# ---- readers ----

def check_pyiceberg(args, expected):
    from pyiceberg.catalog.sql import SqlCatalog

    db = pathlib.Path(args.catalog_db).resolve()
    warehouse = pathlib.Path(args.warehouse).resolve()
    catalog = SqlCatalog(args.catalog_name, uri=f"sqlite:///{db}", warehouse=f"file://{warehouse}")
    table = catalog.load_table(args.table)
    columns = expected.get("columns")

    snapshot_ids = sorted(s.snapshot_id for s in table.metadata.snapshots)
    if "snapshot_ids" in expected and snapshot_ids != sorted(expected["snapshot_ids"]):
        raise Mismatch(f"pyiceberg: snapshots {snapshot_ids} != expected {sorted(expected['snapshot_ids'])}")
    current = table.metadata.current_snapshot_id
    if "current_snapshot_id" in expected and current != expected["current_snapshot_id"]:
        raise Mismatch(f"pyiceberg: current snapshot {current} != expected {expected['current_snapshot_id']}")

    compare("pyiceberg", "current", table.scan().to_arrow(), expected["rows"], columns)
    all_files = len(list(table.scan().plan_files()))
    check_inspect(table, all_files)
    for f in expected.get("filters", []):
        scan = table.scan(row_filter=f["where"])
        planned = len(list(scan.plan_files()))
        compare("pyiceberg", f"where {f['where']} ({planned}/{all_files} files after pruning)", scan.to_arrow(), f["rows"], columns)
    for sid, rows in sorted(expected.get("snapshots", {}).items()):
        compare("pyiceberg", f"snapshot {sid}", table.scan(snapshot_id=int(sid)).to_arrow(), rows, columns)
    return table.metadata_location


def check_inspect(table, planned_files):
    """inspect.entries()/manifests() work and agree with the scan plan."""
    if table.metadata.current_snapshot_id is None:
        return
    entries = table.inspect.entries()
    contents = entries.column("data_file").combine_chunks().field("content").to_pylist()
    # Position delete files (content 1) are entries too, but no scan task of their own.
    live = [s for s, c in zip(entries.column("status").to_pylist(), contents) if s != 2 and c == 0]
    if len(live) != planned_files:
        raise Mismatch(f"pyiceberg inspect.entries: {len(live)} live entries, scan plans {planned_files} files")
    for sizes in entries.column("data_file").combine_chunks().field("column_sizes").to_pylist():
        if sizes is None:
            raise Mismatch("pyiceberg inspect.entries: a data file has no column_sizes")
    manifests = table.inspect.manifests()
    data = [c == 0 for c in manifests.column("content").to_pylist()]
    counted = sum(n for n, d in zip(manifests.column("added_data_files_count").to_pylist(), data) if d) + sum(
        n for n, d in zip(manifests.column("existing_data_files_count").to_pylist(), data) if d)
    if counted != planned_files:
        raise Mismatch(f"pyiceberg inspect.manifests: {counted} added+existing files, scan plans {planned_files}")
    print(f"OK pyiceberg inspect: {len(entries)} entries in {len(manifests)} manifests")


def load_duckdb_extensions(con):
    import duckdb_extension_avro
    import duckdb_extension_iceberg

    # Avro first: the iceberg extension needs it and must not try to fetch it.
    for module, name in ((duckdb_extension_avro, "avro"), (duckdb_extension_iceberg, "iceberg")):
        base = pathlib.Path(module.__file__).parent / "extensions"
        found = sorted(base.glob(f"*/{name}.duckdb_extension"))
        if not found:
            raise SystemExit(f"setup error: no {name}.duckdb_extension under {base}")
        con.execute(f"LOAD '{sql_str(str(found[-1]))}'")


def sql_str(s):
    return s.replace("'", "''")


def check_duckdb(metadata_location, expected):
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    load_duckdb_extensions(con)
    path = metadata_location[len("file://"):] if metadata_location.startswith("file://") else metadata_location
    columns = expected.get("columns")
    scan = f"SELECT * FROM iceberg_scan('{sql_str(path)}')"
    compare("duckdb", "current", con.execute(scan).to_arrow_table(), expected["rows"], columns)
    for f in expected.get("filters", []):
        q = f"{scan} WHERE {f['where']}"
        compare("duckdb", f"where {f['where']}", con.execute(q).to_arrow_table(), f["rows"], columns)
    for sid, rows in sorted(expected.get("snapshots", {}).items()):
        q = f"SELECT * FROM iceberg_scan('{sql_str(path)}', snapshot_from_id => {int(sid)})"
        compare("duckdb", f"snapshot {sid}", con.execute(q).to_arrow_table(), rows, columns)
    metadata_dir = pathlib.Path(path).parent
    hint = metadata_dir / "version-hint.text"
    if not hint.exists():
        raise Mismatch(f"no {hint}: readers given the table directory cannot find the metadata")
    if hint.read_text().strip() + ".metadata.json" != pathlib.Path(path).name:
        raise Mismatch(f"{hint} says {hint.read_text()!r}, the catalog points at {pathlib.Path(path).name}")
    q = f"SELECT * FROM iceberg_scan('{sql_str(str(metadata_dir.parent))}')"
    compare("duckdb", "table directory (version-hint.text)", con.execute(q).to_arrow_table(), expected["rows"], columns)


def main():
    args = parse_args()
    try:
        expected = json.loads(pathlib.Path(args.expected).read_text())
    except (OSError, ValueError) as e:
        print(f"setup error: cannot read expected rows {args.expected}: {e}", file=sys.stderr)
        return 2
    if not isinstance(expected, dict) or not isinstance(expected.get("rows"), list):
        print("setup error: expected JSON needs a 'rows' list", file=sys.stderr)
        return 2
    try:
        metadata_location = check_pyiceberg(args, expected)
        if not args.skip_duckdb:
            check_duckdb(metadata_location, expected)
    except Mismatch as e:
        print(f"MISMATCH {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"setup error: {e} (run scripts/interop_venv.sh and use its python)", file=sys.stderr)
        return 2
    except Exception as e:  # a reader refusing the table is a failed check, with its reason
        print(f"READ FAILURE {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"interop OK: {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
