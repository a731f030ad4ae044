#!/usr/bin/env bash
# Installs (Debian package, PostgreSQL 15) and starts a private PostgreSQL server on
# loopback for the PostgreSQL destination's tests and benchmark, and exports:
#   ASTHA_POSTGRES_URL  postgresql://postgres@127.0.0.1:$ASTHA_POSTGRES_PORT/postgres
#   ASTHA_POSTGRES_BIN  the directory of pg_ctl (tests may restart the server with it)
#   ASTHA_POSTGRES_DATA the data directory (owned by the postgres user)
# Stop it with: su postgres -c "$ASTHA_POSTGRES_BIN/pg_ctl -D $ASTHA_POSTGRES_DATA -m fast stop"
# Source it, from .ci/run:  . scripts/start_postgres.sh
# Port: ASTHA_POSTGRES_PORT (default 55432). Trust authentication, loopback only: a
# throw-away server for tests, never a template for a real one.
# The caller's shell options are restored at the end (see start_nats.sh for why not `$(set +o)`).
_astha_pg_opts="set +euo pipefail"
case $- in *e*) _astha_pg_opts="$_astha_pg_opts; set -e" ;; esac
case $- in *u*) _astha_pg_opts="$_astha_pg_opts; set -u" ;; esac
if shopt -qo pipefail; then _astha_pg_opts="$_astha_pg_opts; set -o pipefail"; fi
set -euo pipefail

ASTHA_POSTGRES_BIN=/usr/lib/postgresql/15/bin
if [ ! -x "$ASTHA_POSTGRES_BIN/pg_ctl" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
port="${ASTHA_POSTGRES_PORT:-55432}"
_astha_pg_dir="$(mktemp -d -t astha-postgres.XXXXXX)"
chown postgres "$_astha_pg_dir"
ASTHA_POSTGRES_DATA="$_astha_pg_dir/data"
# initdb refuses to run as root: the server runs as the postgres user.
su postgres -c "$ASTHA_POSTGRES_BIN/initdb -D $ASTHA_POSTGRES_DATA -A trust -U postgres" >/dev/null
# -w: pg_ctl returns once the server accepts connections.
if ! su postgres -c "$ASTHA_POSTGRES_BIN/pg_ctl -D $ASTHA_POSTGRES_DATA -o '-k $_astha_pg_dir -h 127.0.0.1 -p $port' -l $_astha_pg_dir/log -w start" >/dev/null; then
    echo "start_postgres: the server did not start; log:" >&2
    cat "$_astha_pg_dir/log" >&2 || true
    exit 1
fi
export ASTHA_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres" ASTHA_POSTGRES_BIN ASTHA_POSTGRES_DATA
echo "start_postgres: PostgreSQL ready at $ASTHA_POSTGRES_URL (data $ASTHA_POSTGRES_DATA)"
eval "$_astha_pg_opts"
unset _astha_pg_opts _astha_pg_dir
