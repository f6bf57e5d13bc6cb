"""The consumer lag a worker exports, measured on the real broker: what the group has not committed, per topic."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import REGISTRY

from connector.config import Settings
from connector.lag import LAG, LagMonitor
from connector.topics import create_topics
from tests.support.env import free_port


async def test_lag_is_what_the_group_has_not_committed_on_each_topic(settings: Settings) -> None:
    create_topics(settings)
    commands, raw = settings.topic_commands, settings.topic_webhooks_raw
    producer = AIOKafkaProducer(**settings.kafka_python_config())
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(commands, b"x", key=f"ref-{n}".encode(), partition=n % 2)
        await producer.send_and_wait(raw, b"x", partition=0)
    finally:
        await producer.stop()

    async with LagMonitor(settings, [commands, raw]) as monitor:
        # never committed: counted from the earliest offset
        assert await monitor.measure() == {commands: 10, raw: 1}

        group = AIOKafkaConsumer(**settings.kafka_python_config(), group_id=settings.app_id, enable_auto_commit=False)
        await group.start()
        try:
            group.assign([TopicPartition(commands, 0), TopicPartition(commands, 1), TopicPartition(raw, 0)])
            await group.commit({TopicPartition(commands, 0): OffsetAndMetadata(5, ""),
                                TopicPartition(commands, 1): OffsetAndMetadata(2, ""),
                                TopicPartition(raw, 0): OffsetAndMetadata(1, "")})
        finally:
            await group.stop()
        assert await monitor.measure() == {commands: 3, raw: 0}

        await monitor._update()
        exported = {topic: REGISTRY.get_sample_value("connector_consumer_lag_records", {"topic": topic}) for topic in (commands, raw)}
        assert exported == {commands: 3, raw: 0}


async def test_a_failed_measurement_keeps_the_last_value_and_is_logged_once(settings: Settings, caplog) -> None:
    unreachable = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    topic = unreachable.topic_commands
    LAG.labels(topic).set(7)
    monitor = LagMonitor(unreachable, [topic])
    await monitor._update()
    await monitor._update()
    assert REGISTRY.get_sample_value("connector_consumer_lag_records", {"topic": topic}) == 7
    refusals = [r for r in caplog.records if r.name == "connector.lag"]
    assert len(refusals) == 1 and "consumer lag not measured (kept at its last value)" in refusals[0].getMessage()
