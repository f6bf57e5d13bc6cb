"""The consumer lag of the workers' group, per topic it reads: records appended and not yet committed.

Exported as `connector_consumer_lag_records{topic}`, measured every `kafka_lag_interval_s` by every
worker for the whole group, not only for its own partitions: a partition that no worker holds (a
rebalance, a stalled or missing worker) still shows, and dashboards and alerts take the max over workers.

Cheap whatever the traffic: no record is read and no group is joined. A measurement is three small
requests from two clients of the worker's own, outside Faust's consumer (which answers such calls only
between its fetches): the topics' partitions (a Metadata request for these topics only), their end
offsets (one ListOffsets per partition leader) and the group's committed offsets (one OffsetFetch to
the group coordinator). A partition the group has never committed counts from its earliest offset,
where the group starts reading it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from mode import Service
from prometheus_client import Gauge

from connector.app import Connector
from connector.config import Settings

__all__ = ["LAG", "LagMonitor", "install"]

logger = logging.getLogger(__name__)

# Time one measurement may take, and one request of it.
_TIMEOUT_S = 10.0

LAG = Gauge(
    "connector_consumer_lag_records",
    "Records of a topic the workers' consumer group has not committed yet (all partitions), as last measured.",
    ["topic"],
)


class LagMonitor(Service):
    """Measures the lag of the consumer group `settings.app_id` on `topics` every `kafka_lag_interval_s`."""

    def __init__(self, settings: Settings, topics: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._topics = topics
        self._interval_s = settings.kafka_lag_interval_s
        self._clients: tuple[AIOKafkaConsumer, AIOKafkaAdminClient] | None = None
        self._failing = False

    async def measure(self) -> dict[str, int]:
        """The lag of each topic now (the worker checked at start that they exist); one not described is left out."""
        consumer, admin = await self._started_clients()
        partitions = [
            TopicPartition(described["topic"], partition["partition"])
            for described in await admin.describe_topics(self._topics)
            if described["error_code"] == 0
            for partition in described["partitions"]
        ]
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(self._settings.app_id, partitions=partitions)
        offsets = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        uncommitted = [tp for tp in partitions if tp not in offsets]
        if uncommitted:
            offsets.update(await consumer.beginning_offsets(uncommitted))
        lag = dict.fromkeys(sorted({tp.topic for tp in partitions}), 0)
        for tp in partitions:
            lag[tp.topic] += max(0, ends[tp] - offsets[tp])
        return lag

    async def on_stop(self) -> None:
        if self._clients is not None:
            await _close(*self._clients)
            self._clients = None

    @Service.task
    async def _measure_periodically(self) -> None:
        while not self.should_stop:
            await self.sleep(self._interval_s)
            if self.should_stop:
                break
            await self._update()

    async def _update(self) -> None:
        """One measurement into the gauge; a failure is logged once until a measurement succeeds again."""
        try:
            lag = await asyncio.wait_for(self.measure(), _TIMEOUT_S)
        except Exception as exc:  # Kafka unreachable or slow: the next round tries again
            if not self._failing:
                logger.warning("consumer lag not measured (kept at its last value): %s: %s", type(exc).__name__, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("consumer lag measured again")
        self._failing = False
        for topic, records in lag.items():
            LAG.labels(topic).set(records)

    async def _started_clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._clients is None:
            config = {**self._settings.kafka_python_config(), "request_timeout_ms": int(_TIMEOUT_S * 1000)}
            consumer = AIOKafkaConsumer(**config, group_id=None, enable_auto_commit=False)
            admin = AIOKafkaAdminClient(**config)
            try:
                await consumer.start()
                await admin.start()
            except BaseException:
                await _close(consumer, admin)
                raise
            self._clients = consumer, admin
        return self._clients


def install(connector: Connector) -> None:
    """Measure the lag on the topics the worker's agents read, while the app runs."""
    settings = connector.settings
    connector.app.add_dependency(LagMonitor(settings, [settings.topic_commands, settings.topic_webhooks_raw]))


async def _close(consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> None:
    await consumer.stop()
    await admin.close()
