#!/usr/bin/env python3
"""Reads N messages of TOPIC from the start with an independent client (confluent-kafka /
librdkafka) and prints them as JSON: [{"key", "partition", "offset", "headers": {...},
"value": <JSON value>}], ordered by (partition, offset) — enough for one key, whose
messages share a partition. Used by nexus-kafka's tests/independent_client.rs to check the
CloudEvents Kafka binding (binary mode: ce_* headers) of what nexus published.

Usage: check-cloudevents.py BROKERS TOPIC N
"""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer


def main() -> int:
    brokers, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"check-cloudevents-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 2000,
    })
    consumer.subscribe([topic])
    got, deadline = [], time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
        got.append({
            "key": msg.key().decode() if msg.key() is not None else None,
            "partition": msg.partition(),
            "offset": msg.offset(),
            "headers": headers,
            "value": json.loads(msg.value()) if msg.value() else None,
        })
    consumer.close()
    if len(got) < n:
        print(f"check-cloudevents: got {len(got)} of {n} messages within 30 s", file=sys.stderr)
        return 1
    got.sort(key=lambda m: (m["partition"], m["offset"]))
    json.dump(got, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
