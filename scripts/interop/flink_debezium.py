"""Rebuilds a table from Astha's debezium-json output with Apache Flink (PyFlink).

Usage: python flink_debezium.py <directory of .jsonl files> <schema>
where <schema> is a Flink column list, e.g. "id BIGINT, name STRING".
Reads the directory with Flink's filesystem connector and format 'debezium-json' in
streaming mode, folds the changelog (+I, -U, +U, -D) by the first column, and prints the
resulting rows as one JSON document: {"rows": [[...], ...], "kinds": {"+I": n, ...}}.
BYTES are printed as lists of byte values, floats with repr (exact), infinities as
'inf' / '-inf'.
"""
import json
import math
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment


def plain(value):
    """A value as JSON can hold it: bytes as a list, infinities as 'inf' / '-inf'."""
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main() -> None:
    path, schema = sys.argv[1], sys.argv[2]
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    env.execute_sql(
        f"CREATE TABLE t ({schema}) WITH ('connector' = 'filesystem', "
        f"'path' = 'file://{path}', 'format' = 'debezium-json')"
    )
    state = {}
    kinds = {}
    with env.execute_sql("SELECT * FROM t").collect() as results:
        for row in results:
            kind = str(row.get_row_kind())
            kinds[kind] = kinds.get(kind, 0) + 1
            values = list(row)
            key = values[0]
            if kind in ("+I", "+U"):
                state[key] = values
            elif kind in ("-U", "-D"):
                state.pop(key, None)
    rows = [[plain(v) for v in state[key]] for key in sorted(state)]
    print(json.dumps({"rows": rows, "kinds": kinds}))


if __name__ == "__main__":
    main()
