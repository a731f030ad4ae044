#!/usr/bin/env bash
# Creates .venv-formats (PyFlink for the Debezium format, the CloudEvents SDK) at the
# repository root, if absent. A venv of its own: apache-flink pins pyarrow and numpy
# versions that pyiceberg's venv does not share. Idempotent; only pip from PyPI is used
# (the apache-flink wheels carry Flink's jars; Java 17 comes from Debian).
#
# Usage: bash scripts/formats_venv.sh        -> prints the venv's python path last
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASTHA_FORMATS_VENV:-$ROOT/.venv-formats}"
PY="$VENV/bin/python"
PKGS=("apache-flink==2.3.0" "cloudevents==2.2.0")

# PyFlink starts a JVM: Java 17 from Debian (on this kind of machine already; installed
# here when missing).
if ! command -v java >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

ready() {
  [ -x "$PY" ] && "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
assert m.version("apache-flink") == "2.3.0"
assert m.version("cloudevents") == "2.2.0"
import pyflink.table, cloudevents.v1.http  # noqa: F401
PY
}

if ready; then
  echo "formats venv ready: $VENV" >&2
else
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install --disable-pip-version-check --quiet "${PKGS[@]}"
  ready || { echo "formats venv at $VENV is broken after install" >&2; exit 1; }
  echo "formats venv installed: $VENV" >&2
fi
echo "$PY"
