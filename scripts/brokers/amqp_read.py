"""Reads a RabbitMQ queue back with pika, RabbitMQ's standard Python client, for
tests/tests/sink_rabbitmq.rs: drains QUEUE (basic_get, acknowledging each message) and
prints one JSON object per message, in queue order: routing key, delivery mode, content
type, message id, the astha-* headers and the body (parsed as JSON).

Usage: python amqp_read.py AMQP_URL QUEUE
"""

import json
import sys

import pika


def main() -> None:
    url, queue = sys.argv[1], sys.argv[2]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    while True:
        method, props, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            break
        headers = props.headers or {}
        print(
            json.dumps(
                {
                    "routing_key": method.routing_key,
                    "delivery_mode": props.delivery_mode,
                    "content_type": props.content_type,
                    "message_id": props.message_id,
                    "lsn": headers.get("astha-lsn"),
                    "table": _text(headers.get("astha-table")),
                    "operation": _text(headers.get("astha-operation")),
                    "body": json.loads(body),
                }
            )
        )
        channel.basic_ack(method.delivery_tag)
    connection.close()


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    main()
