"""Reading the connector's topics in tests and benchmarks: from the beginning, for a while or up to their end now."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from connector.schemas import AvroCodec
from tests.support.env import settings_of

__all__ = ["TopicReader", "partition_of", "resumed_after"]


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
