#!/usr/bin/env bash
# Installs (Debian package) and starts RabbitMQ on loopback for the RabbitMQ sink's tests,
# waits until it answers, and exports:
#   ASTHA_AMQP_URL  amqp://guest:guest@127.0.0.1:5672/%2f
# Stop it with: rabbitmqctl stop; epmd -kill
# Source it, from .ci/run:  . scripts/start_rabbitmq.sh
# The caller's shell options are restored at the end (see start_nats.sh for why not `$(set +o)`).
_astha_amqp_opts="set +euo pipefail"
case $- in *e*) _astha_amqp_opts="$_astha_amqp_opts; set -e" ;; esac
case $- in *u*) _astha_amqp_opts="$_astha_amqp_opts; set -u" ;; esac
if shopt -qo pipefail; then _astha_amqp_opts="$_astha_amqp_opts; set -o pipefail"; fi
set -euo pipefail

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
# Loopback only.
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
# Already running (a second run on a developer's machine): use it.
if ! rabbitmqctl -q ping >/dev/null 2>&1; then
    rabbitmq-server -detached
fi
# `await_startup` straight after -detached fails ("not running at all"): wait on the pid file.
if ! rabbitmqctl wait --timeout 80 "/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s).pid" >/dev/null; then
    echo "start_rabbitmq: RabbitMQ did not start" >&2
    exit 1
fi
export ASTHA_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
echo "start_rabbitmq: RabbitMQ ready at $ASTHA_AMQP_URL"
eval "$_astha_amqp_opts"
unset _astha_amqp_opts
