"""Creating the connector's topics with the right partitions and settings (kafka-python admin)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from connector.app import TABLES
from connector.config import RECORD_OVERHEAD_BYTES, Settings
from connector.kafka_errors import KafkaAccessError, describe
from connector.retention import CHANGELOG_CONFIG

__all__ = [
    "TopicSpec",
    "assign_all",
    "changelog_topics",
    "check_webhook_topic",
    "create_topics",
    "partition_counts",
    "read_records",
    "topic_specs",
]

WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the connector uses, the Faust table changelogs included (compacted)."""
    delete = {"cleanup.policy": "delete"}
    specs = {
        settings.topic_commands: {**delete, "max.message.bytes": str(settings.kafka_max_message_bytes)},
        settings.topic_command_results: delete,
        # A DLQ record is a command with error headers: it must take what chat.commands took.
        settings.topic_commands_dlq: {
            "cleanup.policy": "delete",
            "retention.ms": str(4 * WEEK_MS),
            "max.message.bytes": str(settings.kafka_max_message_bytes + RECORD_OVERHEAD_BYTES),
        },
        settings.topic_events: delete,
        settings.topic_transcripts: delete,
        settings.topic_webhooks_raw: delete,
    }
    for name in changelog_topics(settings):
        specs[name] = dict(CHANGELOG_CONFIG)
    # With acks=all, an acknowledged write is on min.insync.replicas brokers: 2 wherever there are 2.
    durable = {"min.insync.replicas": str(min(2, settings.kafka_replication_factor))}
    return [
        TopicSpec(name, settings.kafka_partitions, settings.kafka_replication_factor, {**config, **durable})
        for name, config in specs.items()
    ]


def create_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> dict[str, str]:
    """Create the topics that do not exist yet; topic -> "created" or "exists (N partitions)".

    An existing table changelog also gets the compaction settings of `CHANGELOG_CONFIG` where it
    lacks them (deployments made before they were chosen); where the principal may not read or
    change its configuration, the outcome says so and which ACLs it needs. KafkaAccessError names
    the ACL when the principal may not create a topic.
    """
    specs = specs if specs is not None else topic_specs(settings)
    admin = KafkaAdminClient(**settings.kafka_python_config(), request_timeout_ms=30_000)
    try:
        existing = _partition_counts(admin, [spec.name for spec in specs])
        outcome: dict[str, str] = {}
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in specs:
            if spec.name in existing:
                outcome[spec.name] = f"exists ({existing[spec.name]} partitions)"
        changelogs = [name for name in changelog_topics(settings) if name in existing]
        for name, done in (_compaction_of(admin, changelogs) if changelogs else {}).items():
            outcome[name] += done
        for spec in missing:
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.config)],
                    timeout_ms=30_000,
                )
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:
                outcome[spec.name] = "exists"
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
                raise KafkaAccessError(describe(exc, settings, need=f"Create on Topic {spec.name}")) from None
        return outcome
    finally:
        admin.close()


def changelog_topics(settings: Settings) -> list[str]:
    """The names of the table changelogs (Faust's: `<app id>-<table>-changelog`)."""
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


def check_webhook_topic(settings: Settings) -> str | None:
    """Why chat.webhooks.raw cannot take the largest webhook the edge accepts, or None when it can.

    A webhook whose record the topic refuses would be answered 503 and retried by 8x8 for ever.
    A topic that does not exist yet, or a broker that does not answer or does not let us describe
    the topic, is not a refusal (logged by the caller's Kafka clients anyway).
    """
    needed = settings.webhook_max_body_bytes + RECORD_OVERHEAD_BYTES
    topic = settings.topic_webhooks_raw
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})
    try:
        admin = KafkaAdminClient(**settings.kafka_python_config(), request_timeout_ms=10_000)
    except KafkaError:
        return None
    try:
        if topic not in admin.list_topics():
            return None
        described = admin.describe_configs([resource], config_filter="all")
        allowed = int(described["topic"][topic]["max.message.bytes"]["value"])
    except (KafkaError, KeyError, ValueError):
        return None
    finally:
        admin.close()
    if allowed >= needed:
        return None
    return (
        f"CONNECTOR_WEBHOOK_MAX_BODY_BYTES={settings.webhook_max_body_bytes} needs records of up to {needed} bytes, "
        f"but {topic} takes {allowed} (max.message.bytes): lower the limit to at most "
        f"{allowed - RECORD_OVERHEAD_BYTES} or raise the topic's max.message.bytes"
    )


def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Topic -> number of partitions, for those of `names` that exist."""
    admin = KafkaAdminClient(**settings.kafka_python_config(), request_timeout_ms=10_000)
    try:
        return _partition_counts(admin, names)
    finally:
        admin.close()


def _compaction_of(admin: KafkaAdminClient, topics: list[str]) -> dict[str, str]:
    """Give existing changelogs the settings of CHANGELOG_CONFIG they lack; per topic, what was done (for the outcome)."""
    described = _described(admin, topics)
    done: dict[str, str] = {}
    for topic in topics:
        configs = described.get(topic, {})
        if set(CHANGELOG_CONFIG) - set(configs):  # not allowed to read them: the broker leaves them out
            done[topic] = _not_checked(topic, "not described")
            continue
        wrong = {name: value for name, value in CHANGELOG_CONFIG.items() if configs[name]["value"] != value}
        if not wrong:
            done[topic] = ""
            continue
        try:
            answer = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=wrong)])["topic"][topic]
        except KafkaError as exc:
            answer = type(exc).__name__
        done[topic] = f"; set {', '.join(f'{k}={v}' for k, v in wrong.items())}" if answer == "OK" else _not_checked(topic, answer)
    return done


def _described(admin: KafkaAdminClient, topics: list[str]) -> dict[str, dict[str, Any]]:
    """The CHANGELOG_CONFIG settings of `topics` as the broker describes them. A topic created a moment ago
    may come back without them for a while, and so does one the principal may not describe: given up after 3 s."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict.fromkeys(CHANGELOG_CONFIG)) for topic in topics]
    deadline = time.monotonic() + 3
    while True:
        try:
            described = admin.describe_configs(resources, config_filter="all")["topic"]
        except KafkaError:
            return {}
        if all(set(CHANGELOG_CONFIG) <= set(described.get(topic, {})) for topic in topics) or time.monotonic() > deadline:
            return described
        time.sleep(0.3)


def _not_checked(topic: str, why: str) -> str:
    wanted = ", ".join(f"{name}={value}" for name, value in CHANGELOG_CONFIG.items())
    return (
        f"; its compaction settings could not be checked or set ({why}): that needs DescribeConfigs and "
        f"AlterConfigs on Topic {topic}; or set {wanted} with kafka-configs"
    )


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    present = set(admin.list_topics())
    wanted = [name for name in names if name in present]
    if not wanted:
        return {}
    # kafka-python 2.x names the topic "topic", 3.x "name"
    return {topic.get("name") or topic["topic"]: len(topic["partitions"]) for topic in admin.describe_topics(wanted)}


def assign_all(consumer: KafkaConsumer, topic: str, *, from_beginning: bool) -> list[TopicPartition]:
    """Assign every partition of `topic` (no group, so no committed offset moves), at its start or end."""
    deadline = time.monotonic() + 10
    while not (numbers := consumer.partitions_for_topic(topic)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not numbers:
        raise RuntimeError(f"topic {topic} does not exist")
    partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
    consumer.assign(partitions)
    if from_beginning:
        consumer.seek_to_beginning(*partitions)
    else:
        consumer.seek_to_end(*partitions)
    for partition in partitions:  # fix the positions now, before anything new is published
        consumer.position(partition)
    return partitions


def read_records(
    settings: Settings, topic: str, *, from_beginning: bool, timeout_s: float | None = None, to_end: bool = False
) -> Iterator[Any]:
    """The records of `topic`, read with no group (no committed offset moves): until `timeout_s` seconds pass
    without one (None: for ever), or with `to_end` up to the end offsets as they were at the start.
    KafkaAccessError, naming the missing ACL, when Kafka does not let the principal read them."""
    # A segment deleted under a reader from the beginning moves it to the earliest record left, not past them all.
    reset = "earliest" if from_beginning else "latest"
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False, auto_offset_reset=reset)
    need = f"Read on Topic {topic}"
    try:
        try:
            partitions = assign_all(consumer, topic, from_beginning=from_beginning)
            ends = consumer.end_offsets(partitions) if to_end else {}
        except KafkaError as exc:
            raise KafkaAccessError(describe(exc, settings, need=need)) from None
        idle_since = time.monotonic()
        while True:
            if to_end and all(consumer.position(tp) >= end for tp, end in ends.items()):
                return
            if not to_end and timeout_s is not None and time.monotonic() - idle_since >= timeout_s:
                return
            try:
                batches = consumer.poll(timeout_ms=200)
            except KafkaError as exc:
                raise KafkaAccessError(describe(exc, settings, need=need)) from None
            for records in batches.values():
                for record in records:
                    idle_since = time.monotonic()
                    yield record
    finally:
        consumer.close()
