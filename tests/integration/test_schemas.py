"""Every schema through the real registry and broker, and BACKWARD compatibility of every change."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connector.config import Settings
from connector.schemas import SCHEMA_NAMES, AvroCodec, SchemaError, load_schema, subjects

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_764_000_000_000

SAMPLES: dict[str, dict] = {
    "ConversationCommand": {
        "command_id": "c-1",
        "conversation_ref": "ref-1",
        "created_at": NOW,
        "command": (
            "io.kafka8x8.chat.StartConversation",
            {
                "customer": {"name": "Ada", "email": "ada@example.com", "properties": {"tier": "gold"}},
                "channel_id": None,
                "assignment": {"type": "QUEUE", "id": "q-1"},
                "history": [{"text": "hi", "author_type": "BOT"}],
            },
        ),
    },
    "CommandResult": {
        "command_id": "c-1",
        "conversation_ref": "ref-1",
        "command_type": "START_CONVERSATION",
        "status": "FAILED",
        "http_status": 400,
        "error_code": "REJECTED_BY_8X8",
        "error_message": "Invalid channel",
        "attempts": 1,
        "processed_at": NOW,
    },
    "ChatEvent": {
        "event_id": "e-1",
        "event_type": "MESSAGE",
        "raw_event_type": "TEXT",
        "generation": "chat-api-v2",
        "conversation_id": "conv-1",
        "conversation_ref": "ref-1",
        "timestamp": NOW,
        "received_at": NOW + 5,
        "agent_id": "a-1",
        "text": "Hello, how can I help?",
        "sender_type": "agent",
        "raw_json": '{"eventType":"TEXT"}',
    },
    "ConversationTranscript": {
        "conversation_ref": "ref-1",
        "conversation_id": "conv-1",
        "generation": "chat-gateway-v1",
        "reason": "ENDED",
        "fetched_at": NOW,
        "messages": [{"text": "hi", "author_type": "user", "created_at": NOW, "raw_json": "{}"}],
        "participants": [{"participant_id": "a-1", "participant_type": "agent", "raw_json": "{}"}],
        "interactions": [{"interaction_id": "i-1", "started_at": NOW, "raw_json": "{}"}],
        "conversation_json": "{}",
    },
    "RawWebhook": {
        "kind": "WEBHOOK",
        "generation": "chat-api-v2",
        "body": b'{"eventType":"QUEUED"}',
        "headers": {"x-8x8-event-id": "e-1"},
        "received_at": NOW,
    },
}


@pytest.fixture
async def codec(settings: Settings) -> AvroCodec:
    codec = AvroCodec(settings)
    await codec.start()
    return codec


async def test_every_schema_round_trips_through_kafka_and_the_registry(
    settings: Settings, codec: AvroCodec
) -> None:
    topic = settings.topic_events
    producer = KafkaProducer(**settings.kafka_python_config(), acks="all")
    for name in SCHEMA_NAMES:
        producer.send(topic, key=name.encode(), value=codec.encode(name, SAMPLES[name]))
    producer.flush(30)
    producer.close()

    consumer = KafkaConsumer(**settings.kafka_python_config(), auto_offset_reset="earliest", enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received: dict[str, bytes] = {}
    deadline = time.monotonic() + 30
    while len(received) < len(SCHEMA_NAMES) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                received[record.key.decode()] = record.value
    consumer.close()
    assert sorted(received) == sorted(SCHEMA_NAMES)

    fresh = AvroCodec(settings)  # a reader that knows no ids: resolves each through the registry
    for name in SCHEMA_NAMES:
        decoded = await fresh.decode(name, received[name])
        for field, value in SAMPLES[name].items():
            assert _plain(decoded[field]) == _plain(value), (name, field)


async def test_bytes_that_are_not_a_record_get_a_reason(codec: AvroCodec) -> None:
    with pytest.raises(SchemaError, match="empty value"):
        await codec.decode("CommandResult", b"")
    with pytest.raises(SchemaError, match="not in Confluent wire format"):
        await codec.decode("CommandResult", b'{"json": true}')
    with pytest.raises(SchemaError, match="unknown to the registry|could not be fetched"):
        await codec.decode("CommandResult", b"\x00\x7f\xff\xff\xf0garbage")
    good = codec.encode("CommandResult", SAMPLES["CommandResult"])
    with pytest.raises(SchemaError, match="not a valid CommandResult record"):
        await codec.decode("CommandResult", good[:8])


def test_subjects_follow_the_topic_name_strategy(settings: Settings) -> None:
    assert subjects(settings)["ConversationCommand"] == f"{settings.topic_commands}-value"
    assert set(subjects(settings)) == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_schema_is_backward_compatible_with_every_committed_version(
    name: str, registry: str, unique: str
) -> None:
    """Registers the committed history of the schema under BACKWARD, then asks about the working copy."""
    subject = f"compat-{unique}-{name}"
    with httpx.Client(base_url=registry, timeout=10) as client:
        client.put(f"/config/{subject}", json={"compatibility": "BACKWARD"}).raise_for_status()
        for text in _committed_versions(name):
            response = client.post(f"/subjects/{subject}/versions", json={"schema": text})
            assert response.status_code == 200, f"committed history of {name} is itself incompatible: {response.text}"
        current = json.dumps(load_schema(name))
        if not _committed_versions(name):
            client.post(f"/subjects/{subject}/versions", json={"schema": current}).raise_for_status()
        verdict = client.post(f"/compatibility/subjects/{subject}/versions/latest", json={"schema": current})
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["is_compatible"] is True, f"{name} breaks BACKWARD compatibility: {verdict.text}"


def test_the_compatibility_check_can_fail(registry: str, unique: str) -> None:
    """A new required field without a default is not BACKWARD compatible: the check must say so."""
    subject = f"compat-{unique}-negative"
    schema = load_schema("CommandResult")
    broken = {**schema, "fields": [*schema["fields"], {"name": "tenant", "type": "string"}]}
    with httpx.Client(base_url=registry, timeout=10) as client:
        client.put(f"/config/{subject}", json={"compatibility": "BACKWARD"}).raise_for_status()
        client.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(schema)}).raise_for_status()
        verdict = client.post(f"/compatibility/subjects/{subject}/versions/latest", json={"schema": json.dumps(broken)})
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["is_compatible"] is False


def _committed_versions(name: str) -> list[str]:
    """Every committed text of schemas/<name>.avsc, oldest first (none outside a git checkout)."""
    path = f"schemas/{name}.avsc"
    log = subprocess.run(
        ["git", "log", "--reverse", "--format=%H", "--", path], cwd=ROOT, capture_output=True, text=True
    )
    if log.returncode != 0:
        return []
    versions = []
    for commit in log.stdout.split():
        show = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if show.returncode == 0:
            versions.append(json.dumps(json.loads(show.stdout)))
    return versions


def _plain(value):
    """Tuples of (record name, record) and timestamps as written compare equal to the same read back."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, tuple):
        return (value[0], _plain(value[1]))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item is not None and item != {} and item != []}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
