"""Avro records through the registry, blocking, as a test or benchmark writes and reads them beside the connector."""

from __future__ import annotations

import io
import struct
import time
from typing import Any

import fastavro
from kafka import KafkaProducer
from schema_registry.client.schema import AvroSchema

from connector.config import Settings
from connector.schemas import load_schema, subjects, sync_registry

__all__ = ["Avro", "publish_mapping"]


class Avro:
    """Encodes our records and decodes any, in the Confluent wire format, with the registry (blocking)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = sync_registry(settings)
        self._writers: dict[int, Any] = {}

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        schema_id = self._client.register(subjects(self._settings)[name], AvroSchema(load_schema(name)))
        buffer = io.BytesIO()
        buffer.write(struct.pack(">bI", 0, schema_id))
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(load_schema(name)), record)
        return buffer.getvalue()

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        assert data[0] == 0
        schema_id = struct.unpack(">I", data[1:5])[0]
        if schema_id not in self._writers:
            self._writers[schema_id] = fastavro.parse_schema(self._client.get_by_id(schema_id).raw_schema)
        reader = fastavro.parse_schema(load_schema(name))
        return fastavro.schemaless_reader(io.BytesIO(data[5:]), self._writers[schema_id], reader)


def publish_mapping(settings: Settings, conversation_id: str, ref: str, generation: str = "chat-api-v2") -> None:
    """What the command agent does after a create: the id -> ref mapping on chat.webhooks.raw."""
    value = Avro(settings).encode(
        "RawWebhook",
        {
            "kind": "REF_MAPPING",
            "generation": generation,
            "body": b"",
            "headers": {},
            "received_at": time.time_ns() // 1_000_000,
            "conversation_ref": ref,
        },
    )
    producer = KafkaProducer(**settings.kafka_python_config(), acks="all")
    producer.send(settings.topic_webhooks_raw, key=conversation_id.encode(), value=value).get(30)
    producer.close()
