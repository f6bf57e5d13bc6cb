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

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from connector.config import Settings, load_settings
from connector.schemas import AvroCodec, SchemaError
from connector.topics import assign_all

__all__ = ["CommandPublisher", "ResultWatcher"]

_NAMESPACE = "io.kafka8x8.chat"


class CommandPublisher:
    """Publishes ConversationCommand records to chat.commands (acks=all, idempotent ordering per ref)."""

    def __init__(self, settings: Settings | None = None, *, producer: KafkaProducer | None = None) -> None:
        self.settings = settings or load_settings()
        self._codec = AvroCodec(self.settings)
        self._codec.start_sync("ConversationCommand")
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
        return command_id, self._codec.encode("ConversationCommand", record)

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
        self._codec = AvroCodec(settings)
        self._consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
        assign_all(self._consumer, settings.topic_command_results, from_beginning=False)

    def wait(self, command_ids: Iterable[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """The results of `command_ids` (command id -> result) seen within `timeout_s`; fewer on timeout."""
        wanted = set(command_ids)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while wanted - found.keys() and time.monotonic() < deadline:
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    try:
                        result = self._codec.decode_sync("CommandResult", record.value)
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
