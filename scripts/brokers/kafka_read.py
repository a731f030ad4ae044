"""Reads Kafka topics back with confluent-kafka, Confluent's standard Python client
(librdkafka), for tests/tests/sink_kafka.rs: every partition of each TOPIC from its first
offset until the topics stay quiet for 2 s (assigned, no consumer group), one JSON object
per record: topic, partition, offset, key and value (parsed as JSON), headers (as text);
compression is transparent to the reader.

Usage: python kafka_read.py BOOTSTRAP TOPIC...
"""

import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main() -> None:
    bootstrap, topics = sys.argv[1], sys.argv[2:]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "astha-test-reader",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(topic, partition, OFFSET_BEGINNING)
            for topic in topics
            for partition in sorted(metadata.topics[topic].partitions)
        ]
    )
    # Not up to the high watermarks: tansu 0.6 (memory storage) reports watermarks below
    # the records it serves. Read until the topics have been quiet for 2 s instead.
    deadline = time.monotonic() + 120
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 2 and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            raise SystemExit(f"kafka_read: {message.error()}")
        quiet_since = time.monotonic()
        print(
            json.dumps(
                {
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": json.loads(message.key()),
                    "value": json.loads(message.value()),
                    "headers": {k: v.decode() for k, v in (message.headers() or [])},
                }
            )
        )
    consumer.close()


if __name__ == "__main__":
    main()
