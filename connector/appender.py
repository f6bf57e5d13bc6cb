"""Appending records to Kafka in call order, straight through the app's producer.

Faust's `send_soon` (and a table's `__setitem__`, which uses it) wraps every record in a
FutureMessage, queues it for a buffer task and publishes it through the topic's channel; going
around that saves a good part of the worker's CPU per command (measured in bench/RESULTS.md).
`Appender` keeps what matters of it: records are handed to the producer in the order `append` is
called (one asyncio lock, FIFO, taken without a pause unless the producer's batch is full), and
once `append` returns the producer holds the record, so Faust's flush before each commit covers it.
`deliver` waits for Kafka's acknowledgement as well, retrying what may succeed later (the caller,
and so its partition, waits), and raises `NotDelivered` for what never will (too large, not
authorised, invalid topic): a command's offset must not be released before its records are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError

from connector import _faust_compat as compat

__all__ = ["Appender", "NotDelivered"]

logger = logging.getLogger(__name__)

_BACKOFF_FIRST_S = 0.5
_BACKOFF_CAP_S = 10.0


class NotDelivered(Exception):
    """Kafka refused a record for a reason that trying again will not change; `cause` is its error."""

    def __init__(self, topic: str, cause: BaseException) -> None:
        super().__init__(f"{topic}: {type(cause).__name__}: {cause}")
        self.topic = topic
        self.cause = cause

    @property
    def too_large(self) -> bool:
        """The record is larger than the producer or the topic takes."""
        return "TooLarge" in type(self.cause).__name__


class Appender:
    """Hands records to the app's producer in call order; each `append` gives the future of its delivery."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._lock = asyncio.Lock()

    async def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer behind every earlier one; the future resolves when Kafka has it."""
        async with self._lock:
            return await self._app.producer.send(topic, key, value, partition, None, headers)

    async def deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Append one record and wait until Kafka has it (its metadata); NotDelivered if it never will.

        A retriable failure (broker away, leader moving, not enough replicas, the producer's own
        timeout) is tried again with backoff for as long as it lasts.
        """
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return await (await self.append(topic, key, value, partition=partition, headers=headers))
            except Exception as exc:  # Faust wraps send errors in ProducerSendError; the delivery raises aiokafka's
                cause = _kafka_cause(exc)
                if not _retriable(cause):
                    raise NotDelivered(topic, cause) from exc
                logger.warning("%s did not take a record (%s); trying again in %.1fs", topic, type(cause).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP_S)

    async def put_durably(self, table: faust.Table, key: str, value: Any, partition: int) -> None:
        """Like `put`, and wait until the changelog record is stored (as `deliver` does)."""
        compat.store_set(table, key, value, partition)
        topic = table.changelog_topic.get_topic_name()
        metadata = await self.deliver(topic, key.encode(), compat.changelog_value(value), partition=partition)
        compat.store_persisted(table, metadata.topic_partition, metadata.offset)

    async def put(self, table: faust.Table, key: str, value: Any, partition: int) -> asyncio.Future[Any]:
        """Set `table[key]` now, in the table's `partition`, and append it to that changelog partition.

        The caller reads and writes an entry with no await between, and the changelog gets the
        writes of all callers in the order they were made. On delivery the store records the
        changelog offset (RocksDB resumes its recovery there), as Faust's own writes do.
        """
        compat.store_set(table, key, value, partition)
        return await self._changelog(table, key, compat.changelog_value(value), partition)

    async def delete(self, table: faust.Table, key: str, partition: int) -> asyncio.Future[Any] | None:
        """Remove `table[key]` from the table's `partition` and append a tombstone; None if it was not there."""
        if compat.store_pop(table, key, partition) is None:
            return None
        return await self._changelog(table, key, None, partition)

    async def _changelog(self, table: faust.Table, key: str, value: bytes | None, partition: int) -> asyncio.Future[Any]:
        delivery = await self.append(table.changelog_topic.get_topic_name(), key.encode(), value, partition=partition)
        delivery.add_done_callback(partial(_persisted, table))
        return delivery


def _kafka_cause(exc: BaseException) -> BaseException:
    """The aiokafka error behind `exc` (Faust raises its own ProducerSendError from it)."""
    while not isinstance(exc, KafkaError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _retriable(exc: BaseException) -> bool:
    """Whether sending the same record again may succeed: aiokafka's retriable errors and timeouts."""
    if isinstance(exc, (KafkaTimeoutError, asyncio.TimeoutError)):
        return True
    return isinstance(exc, KafkaError) and exc.retriable


def _persisted(table: faust.Table, delivery: asyncio.Future[Any]) -> None:
    if delivery.cancelled():
        return
    if delivery.exception() is not None:
        logger.error("changelog write to %s failed: %r", table.changelog_topic.get_topic_name(), delivery.exception())
        return
    metadata = delivery.result()
    compat.store_persisted(table, metadata.topic_partition, metadata.offset)
