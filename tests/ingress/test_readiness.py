"""The edge's Kafka readiness check against the real broker."""

from __future__ import annotations

from connector.config import Settings
from connector.topics import create_topics
from connector.webhook import WebhookProducer


async def test_readiness_asks_for_the_webhook_topic_only(settings: Settings) -> None:
    """A probe must not fetch the metadata of every topic of the cluster (megabytes on big clusters)."""
    create_topics(settings)
    producer = WebhookProducer(settings, timeout_s=5)
    assert not await producer.reachable(), "not started: not reachable"
    await producer.start()
    try:
        for _ in range(3):
            assert await producer.reachable()
        # The producer's bootstrap saw every topic; a probe's answer replaces that with what it asked for.
        assert producer._producer.client.cluster.topics() == {settings.topic_webhooks_raw}
    finally:
        await producer.stop()
