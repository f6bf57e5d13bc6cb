"""Reading the connector's topics in tests and benchmarks: from the beginning, for a while or up to their end now."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.partitioner.default import murmur2

from connector.schemas import AvroCodec
from tests.support.env import settings_of

__all__ = ["TopicReader", "committed", "partition_of", "read_to_end", "resumed_after", "wait_consumed"]


class TopicReader:
    """Reads a topic from the beginning (no group), decoding Avro values with the registry."""

    def __init__(self, env: dict[str, str], topic: str, schema: str | None) -> None:
        settings = settings_of(env)
        self._schema = schema
        self._codec = AvroCodec(settings)
        self._consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
        partitions = None
        deadline = time.monotonic() + 20
        while not partitions and time.monotonic() < deadline:
            partitions = self._consumer.partitions_for_topic(topic)
            time.sleep(0.1)
        assert partitions, f"no topic {topic}"
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)
        self.records: list[Any] = []

    def poll(self, seconds: float = 0.5) -> list[Any]:
        """Read what is there for `seconds`; the new records (value decoded when a schema was given)."""
        new: list[Any] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            new += self._fetch()
        return self._took(new)

    def read_to_end(self, timeout: float = 30.0) -> list[Any]:
        """Read up to the end offsets the topic has now; the new records.

        A record that is not among them had not been written when this was called: this proves an
        absence without waiting a fixed time for something that may never come.
        """
        ends = self._consumer.end_offsets(self._partitions)
        new: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(self._consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"{self._partitions[0].topic} not read up to {ends} in {timeout}s"
            new += self._fetch()
        return self._took(new)

    def close(self) -> None:
        self._consumer.close()

    def _fetch(self) -> list[Any]:
        new = []
        for records in self._consumer.poll(timeout_ms=100).values():
            for record in records:
                new.append(self._codec.decode_sync(self._schema, record.value) if self._schema else record)
        return new

    def _took(self, new: list[Any]) -> list[Any]:
        """Keep the records just read (subclasses index them too); they are returned."""
        self.records.extend(new)
        return new


def read_to_end(env: dict[str, str], topic: str) -> list[Any]:
    """Every record of `topic`, from the beginning up to its end offsets now (undecoded)."""
    reader = TopicReader(env, topic, None)
    try:
        return reader.read_to_end()
    finally:
        reader.close()


def committed(env: dict[str, str], topic: str) -> dict[int, int]:
    """The connector group's committed offset per partition of `topic` (partitions with none left out)."""
    admin = KafkaAdminClient(**settings_of(env).kafka_python_config(), request_timeout_ms=30_000)
    try:
        offsets = admin.list_group_offsets({env["CONNECTOR_APP_ID"]: None})[env["CONNECTOR_APP_ID"]]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


def wait_consumed(env: dict[str, str], topic: str, timeout: float = 30.0) -> None:
    """Wait until the connector group has committed every partition of `topic` up to its end now (lag 0).

    Faust commits only past records it has finished, after flushing what they produced: from then
    on, everything the connector will ever write because of those records is in its topics, and
    `read_to_end` proves what is not.
    """
    consumer = KafkaConsumer(**settings_of(env).kafka_python_config())
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()
    deadline = time.monotonic() + timeout
    done: dict[int, int] = {}
    while time.monotonic() < deadline:
        done = committed(env, topic)
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"consumer lag on {topic} did not return to 0 in {timeout}s: committed {done}, end {ends}")


def resumed_after(by_id: dict[str, list[dict]], stopped_at: float, partitions: int) -> dict[int, float]:
    """Per partition of chat.commands (as the publisher's keys spread them), seconds from `stopped_at` (epoch
    seconds) to its first result processed after it: how long a stopped worker's partitions waited."""
    first = {partition: float("inf") for partition in range(partitions)}  # inf: none since
    for records in by_id.values():
        for record in records:
            at = record["processed_at"]
            at = at.timestamp() if hasattr(at, "timestamp") else at / 1000
            if at >= stopped_at:
                partition = partition_of(record["conversation_ref"], partitions)
                first[partition] = min(first[partition], at - stopped_at)
    return dict(first)


def partition_of(ref: str, partitions: int) -> int:
    """The partition a publisher's key `ref` goes to (Kafka's default partitioner: murmur2)."""
    return (murmur2(ref.encode()) & 0x7FFFFFFF) % partitions
