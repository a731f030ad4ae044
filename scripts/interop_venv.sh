#!/usr/bin/env bash
# Creates .venv-interop (pyiceberg + DuckDB with its iceberg/avro extensions from
# pip wheels) at the repository root, if absent. Idempotent: a venv whose pinned
# packages already import is left alone. Only pip from PyPI is used; the DuckDB
# extensions come from wheels so nothing is downloaded at query time.
#
# Usage: bash scripts/interop_venv.sh        -> prints the venv's python path last
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASTHA_INTEROP_VENV:-$ROOT/.venv-interop}"
PY="$VENV/bin/python"

# Pinned per docs/ICEBERG.md: duckdb's extension wheels stop at 1.5.5.
PKGS=(
  "pyiceberg[sql-sqlite,pyarrow]==0.12.0"
  "duckdb==1.5.5"
  "duckdb-extension-iceberg==1.5.5"
  "duckdb-extension-avro==1.5.5"
)

ready() {
  [ -x "$PY" ] && "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
want = {"pyiceberg": "0.12.0", "duckdb": "1.5.5",
        "duckdb-extension-iceberg": "1.5.5", "duckdb-extension-avro": "1.5.5"}
for name, ver in want.items():
    assert m.version(name) == ver, name
import pyiceberg.catalog.sql, pyarrow, sqlalchemy, duckdb  # noqa: F401
PY
}

if ready; then
  echo "interop venv ready: $VENV" >&2
else
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install --disable-pip-version-check --quiet "${PKGS[@]}"
  ready || { echo "interop venv at $VENV is broken after install" >&2; exit 1; }
  echo "interop venv installed: $VENV" >&2
fi
echo "$PY"
