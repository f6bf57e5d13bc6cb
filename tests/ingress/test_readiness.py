"""The edge's Kafka readiness check against the real broker."""

from __future__ import annotations

from connector.config import Settings
from connector.topics import create_topics
from connector.webhook import Appender


async def test_readiness_asks_for_the_webhook_topic_only(settings: Settings) -> None:
    """A probe must not fetch the metadata of every topic of the cluster (megabytes on big clusters)."""
    create_topics(settings)
    appender = Appender(settings, timeout_s=5)
    assert not await appender.reachable(), "not started: not reachable"
    await appender.start()
    try:
        for _ in range(3):
            assert await appender.reachable()
        # The producer's bootstrap saw every topic; a probe's answer replaces that with what it asked for.
        assert appender._producer.client.cluster.topics() == {settings.topic_webhooks_raw}
    finally:
        await appender.stop()
