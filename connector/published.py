"""Which commands already have a result in chat.command-results, read from the topic itself.

A command's table entry is written before its result is published, so after a crash a replayed
command may find its outcome remembered while its result never reached Kafka. Only the topic can
say which: `PublishedResults.has` reads the results partition of the command's ref from shortly
before the remembered outcome to the partition's end, once per partition and assignment, and
answers from the command ids found there. It is asked only for a record replayed after a crash
or a rebalance, so it reads seconds of one partition, not the topic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from connector.config import Settings
from connector.schemas import AvroCodec, SchemaError

__all__ = ["PublishedResults"]

# How far before a remembered outcome its result may carry a timestamp (producer clocks, batching).
_MARGIN_MS = 60_000


@dataclass
class _Scan:
    """The command ids with a result in one partition, from `since_ms` to the end when it was read."""

    since_ms: int
    ids: set[str] = field(default_factory=set)


class PublishedResults:
    """Answers whether a command id has a result in chat.command-results; reads the topic on demand."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self._settings = settings
        self._codec = codec
        self._consumer: AIOKafkaConsumer | None = None
        self._scans: dict[int, _Scan] = {}
        self._lock = asyncio.Lock()

    async def has(self, partition: int, command_id: str, since_ms: int) -> bool:
        """Whether a result of `command_id` is in `partition` of chat.command-results, published after `since_ms`."""
        async with self._lock:
            scan = self._scans.get(partition)
            if scan is None or scan.since_ms > since_ms - _MARGIN_MS:
                scan = self._scans[partition] = await self._scan(partition, since_ms - _MARGIN_MS)
        return command_id in scan.ids

    def forget(self) -> None:
        """Drop what was read (partitions were revoked: the next owner reads afresh)."""
        self._scans.clear()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _scan(self, partition: int, since_ms: int) -> _Scan:
        consumer = await self._started()
        tp = TopicPartition(self._settings.topic_command_results, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        start = (await consumer.offsets_for_times({tp: max(0, since_ms)}))[tp]
        scan = _Scan(since_ms)
        if start is None:
            return scan  # nothing published since
        consumer.seek(tp, start.offset)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, ()):
                try:
                    scan.ids.add((await self._codec.decode_waiting("CommandResult", record.value))["command_id"])
                except SchemaError:
                    continue  # not ours to read: it says nothing of our commands
        return scan

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            config = self._settings.kafka_python_config()
            config["client_id"] = f"{self._settings.kafka_client_id}-results-reader"
            self._consumer = AIOKafkaConsumer(**config, group_id=None, enable_auto_commit=False)
            await self._consumer.start()
        return self._consumer
