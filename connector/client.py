"""Publishing conversation commands from enterprise code (and `connector send`), with kafka-python.

    from connector.client import CommandPublisher

    with CommandPublisher() as publisher:            # settings from CONNECTOR_* variables
        publisher.start("order-42", name="Ann", email="ann@example.com", text="Where is my parcel?")
        publisher.message("order-42", "It was due yesterday.")
        publisher.end("order-42")

Each call returns the command id. Values are Avro in the Confluent wire format under the schema
registered for `chat.commands`; the key is the conversation ref, so commands of one conversation
stay in order. `ResultWatcher` waits for the CommandResult of a command id.
"""

from __future__ import annotations

import datetime
import io
import struct
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import fastavro
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from schema_registry.client.schema import AvroSchema

from connector.config import Settings, load_settings
from connector.schemas import MAGIC_BYTE, SchemaError, load_schema, subjects, sync_registry

__all__ = ["CommandPublisher", "ResultWatcher", "plain"]

_NAMESPACE = "io.kafka8x8.chat"


class CommandPublisher:
    """Publishes ConversationCommand records to chat.commands (acks=all, idempotent ordering per ref)."""

    def __init__(self, settings: Settings | None = None, *, producer: KafkaProducer | None = None) -> None:
        self.settings = settings or load_settings()
        self._schema = fastavro.parse_schema(load_schema("ConversationCommand"))
        subject = subjects(self.settings)["ConversationCommand"]
        self._schema_id = sync_registry(self.settings).register(subject, AvroSchema(load_schema("ConversationCommand")))
        self._producer = producer or KafkaProducer(
            **self.settings.kafka_python_config(),
            acks="all",
            linger_ms=5,
            max_in_flight_requests_per_connection=1,  # keeps a ref's commands in order across retries
        )

    def start(
        self,
        ref: str,
        *,
        name: str,
        customer_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        company: str | None = None,
        case_id: str | None = None,
        language: str | None = None,
        properties: Mapping[str, str] | None = None,
        history: Iterable[tuple[str, str]] = (),
        channel_id: str | None = None,
        assignment: tuple[str, str] | None = None,
        text: str | None = None,
        command_id: str | None = None,
    ) -> str:
        """StartConversation; `history` is (text, "USER" | "BOT") pairs, `assignment` ("QUEUE" | "SCRIPT", id).

        `text` is the customer's first message: it is sent as a SendMessage right after the start.
        """
        customer = {
            "name": name,
            "customer_id": customer_id,
            "email": email,
            "phone": phone,
            "company": company,
            "case_id": case_id,
            "language": language,
            "properties": dict(properties or {}),
        }
        body = {
            "customer": customer,
            "channel_id": channel_id,
            "assignment": {"type": assignment[0].upper(), "id": assignment[1]} if assignment else None,
            "history": [{"text": t, "author_type": a.upper()} for t, a in history],
        }
        started = self.publish(ref, "StartConversation", body, command_id)
        if text is not None:
            self.message(ref, text)
        return started

    def message(self, ref: str, text: str, *, author_type: str = "USER", command_id: str | None = None) -> str:
        """SendMessage from the customer ("USER") or a bot ("BOT")."""
        return self.publish(ref, "SendMessage", {"text": text, "author_type": author_type.upper()}, command_id)

    def end(self, ref: str, *, reason: str | None = None, command_id: str | None = None) -> str:
        """EndConversation: the customer leaves."""
        return self.publish(ref, "EndConversation", {"reason": reason}, command_id)

    def fetch_transcript(self, ref: str, *, command_id: str | None = None) -> str:
        """FetchTranscript: have the conversation read back and published to chat.transcripts."""
        return self.publish(ref, "FetchTranscript", {"include_raw": True}, command_id)

    def publish(self, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None = None) -> str:
        """Publish one command of `kind` (the Avro record name) for `ref`; its command id."""
        command_id, value = self.encode(ref, kind, body, command_id)
        self._producer.send(self.settings.topic_commands, key=ref.encode(), value=value)
        return command_id

    def encode(self, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None = None) -> tuple[str, bytes]:
        """The command id and the wire-format value of a command, without publishing it."""
        command_id = command_id or str(uuid.uuid4())
        record = {
            "command_id": command_id,
            "conversation_ref": ref,
            "created_at": int(time.time() * 1000),
            "command": (f"{_NAMESPACE}.{kind}", dict(body)),
        }
        buffer = io.BytesIO()
        buffer.write(struct.pack(">bI", MAGIC_BYTE, self._schema_id))
        fastavro.schemaless_writer(buffer, self._schema, record)
        return command_id, buffer.getvalue()

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> CommandPublisher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class ResultWatcher:
    """Reads chat.command-results from its end at creation (no consumer group) to find results by command id.

    Create it before publishing, so that no result can be missed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._registry = sync_registry(settings)
        self._reader = fastavro.parse_schema(load_schema("CommandResult"))
        self._writers: dict[int, Any] = {}
        self._consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
        topic = settings.topic_command_results
        partitions = [TopicPartition(topic, p) for p in _partitions(self._consumer, topic)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # fix the positions now, before anything is published
            self._consumer.position(partition)

    def wait(self, command_ids: Iterable[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """The results of `command_ids` (command id -> result) seen within `timeout_s`; fewer on timeout."""
        wanted = set(command_ids)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while wanted - found.keys() and time.monotonic() < deadline:
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    try:
                        result = self._decode(record.value)
                    except SchemaError:
                        continue
                    if result["command_id"] in wanted and result["command_id"] not in found:
                        found[result["command_id"]] = result
        return found

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ResultWatcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _decode(self, data: bytes | None) -> dict[str, Any]:
        if not data or len(data) < 5 or data[0] != MAGIC_BYTE:
            raise SchemaError("not in Confluent wire format")
        schema_id = struct.unpack(">I", data[1:5])[0]
        writer = self._writers.get(schema_id)
        if writer is None:
            schema = self._registry.get_by_id(schema_id)
            if schema is None:
                raise SchemaError(f"schema id {schema_id} is unknown to the registry")
            writer = self._writers[schema_id] = fastavro.parse_schema(schema.raw_schema)
        try:
            return fastavro.schemaless_reader(io.BytesIO(data[5:]), writer, self._reader)
        except Exception as exc:  # fastavro raises many kinds
            raise SchemaError(str(exc)) from None


def plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded record as plain JSON values (timestamps as epoch milliseconds)."""
    return {
        key: round(value.timestamp() * 1000) if isinstance(value, datetime.datetime) else value
        for key, value in record.items()
    }


def _partitions(consumer: KafkaConsumer, topic: str) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        time.sleep(0.2)
    raise RuntimeError(f"topic {topic} does not exist")
