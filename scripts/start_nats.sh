#!/usr/bin/env bash
# Installs (Debian package) and starts a NATS server with JetStream on loopback for the
# sink tests and the JetStream benchmark, waits until JetStream answers, and exports:
#   ASTHA_NATS_URL     nats://127.0.0.1:$ASTHA_NATS_PORT (the running server)
#   ASTHA_NATS_SERVER  the nats-server binary (tests start private servers with it,
#                      e.g. to restart one mid-stream)
#   ASTHA_NATS_PID     the server's pid (stop it with: kill "$ASTHA_NATS_PID")
# Source it, from .ci/run:  . scripts/start_nats.sh
# Ports: ASTHA_NATS_PORT (default 4222), ASTHA_NATS_MONITOR_PORT (default 8222).
# Remember the caller's shell options to restore them at the end. Not `$(set +o)`: a
# command substitution runs in a subshell where errexit is already off, so restoring
# from it silently switched `set -e` off for the rest of .ci/run.
_astha_nats_opts="set +euo pipefail"
case $- in *e*) _astha_nats_opts="$_astha_nats_opts; set -e" ;; esac
case $- in *u*) _astha_nats_opts="$_astha_nats_opts; set -u" ;; esac
if shopt -qo pipefail; then _astha_nats_opts="$_astha_nats_opts; set -o pipefail"; fi
set -euo pipefail

if ! command -v nats-server >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server curl >/dev/null
fi
ASTHA_NATS_SERVER="$(command -v nats-server)"
port="${ASTHA_NATS_PORT:-4222}"
monitor="${ASTHA_NATS_MONITOR_PORT:-8222}"
dir="$(mktemp -d -t astha-nats.XXXXXX)"
"$ASTHA_NATS_SERVER" -js -a 127.0.0.1 -p "$port" -m "$monitor" -sd "$dir/js" -l "$dir/nats.log" &
ASTHA_NATS_PID=$!
for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$monitor/healthz?js-enabled-only=true" >/dev/null; then
        break
    fi
    if ! kill -0 "$ASTHA_NATS_PID" 2>/dev/null; then
        echo "start_nats: nats-server exited; log:" >&2
        cat "$dir/nats.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
if ! curl -sf "http://127.0.0.1:$monitor/healthz?js-enabled-only=true" >/dev/null; then
    echo "start_nats: JetStream not ready after 30 s; log:" >&2
    cat "$dir/nats.log" >&2 || true
    exit 1
fi
export ASTHA_NATS_URL="nats://127.0.0.1:$port" ASTHA_NATS_SERVER ASTHA_NATS_PID
echo "start_nats: JetStream ready at $ASTHA_NATS_URL (pid $ASTHA_NATS_PID, dir $dir)"
eval "$_astha_nats_opts"
unset _astha_nats_opts
