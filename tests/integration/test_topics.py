"""`connector topics create` on the real broker: everything created once, then found, compacted changelogs."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from connector.config import Settings
from connector.topics import create_topics, topic_specs


def test_topics_are_created_once_then_found(settings: Settings) -> None:
    names = [spec.name for spec in topic_specs(settings)]
    assert set(settings.topics().values()) < set(names)
    assert set(create_topics(settings).values()) == {"created"}
    again = create_topics(settings)
    assert sorted(again) == sorted(names)
    # "exists (N partitions)", or plain "exists" when the broker's metadata lags the creation
    assert all(state in ("exists", f"exists ({settings.kafka_partitions} partitions)") for state in again.values())

    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        changelog = f"{settings.app_id}-conversations-changelog"
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
        text = repr(described)
        assert "cleanup.policy" in text and "compact" in text
    finally:
        admin.close()


def test_acked_writes_are_on_two_replicas_wherever_there_are_two(settings: Settings) -> None:
    """acks=all means min.insync.replicas brokers: min(2, replication factor) on every topic created."""
    three = settings.model_copy(update={"kafka_replication_factor": 3})
    assert {spec.config["min.insync.replicas"] for spec in topic_specs(three)} == {"2"}
    assert {spec.config["min.insync.replicas"] for spec in topic_specs(settings)} == {"1"}  # the local broker: one
    create_topics(settings)
    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs={"min.insync.replicas": None})
                     for name in (settings.topic_webhooks_raw, f"{settings.app_id}-refs-changelog")]
        described = admin.describe_configs(resources, config_filter="all")["topic"]
        for name, configs in described.items():
            assert configs["min.insync.replicas"]["value"] == "1", name
            assert configs["min.insync.replicas"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", f"{name}: set by topics create"
    finally:
        admin.close()
