"""Publishing conversation commands from enterprise code (and `connector send`), with kafka-python.

    from connector.client import CommandPublisher

    with CommandPublisher() as publisher:            # settings from CONNECTOR_* variables
        publisher.start("order-42", name="Ann", email="ann@example.com", text="Where is my parcel?")
        publisher.message("order-42", "It was due yesterday.")
        publisher.end("order-42")

Each call returns once Kafka has acknowledged the command (`PublishError` if it did not), with the
command id. For bulk publishing, `CommandPublisher(wait=False)` returns at once and `flush()` (or
leaving the `with` block) waits for every acknowledgement and raises if any command was not taken.
Inside `with connector.tracing.traced(traceparent):` commands carry that W3C trace context, which
their results, transcripts and 8x8 requests then carry too.
Values are Avro in the Confluent wire format under the schema registered for `chat.commands`; the
key is the conversation ref, so commands of one conversation stay in order. `ResultWatcher` waits
for the `CommandResult` of a command id.

asyncio services use `AsyncCommandPublisher` (aiokafka), the same methods awaited:

    async with AsyncCommandPublisher() as publisher:
        await publisher.start("order-42", name="Ann", text="Where is my parcel?")
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import mimetypes
import os
import pathlib
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from connector import tracing
from connector.config import Settings, load_settings
from connector.kafka_errors import KafkaAccessError, check, describe, probe
from connector.schemas import AvroCodec, SchemaError, plain
from connector.topics import assign_all

__all__ = ["AsyncCommandPublisher", "Attachment", "CommandPublisher", "CommandResult", "PublishError", "ResultWatcher", "Started"]

_NAMESPACE = "io.kafka8x8.chat"
# How long one command may take to be acknowledged, and to find the brokers at all.
_DELIVERY_TIMEOUT_MS = 30_000
_MAX_BLOCK_MS = 15_000


@dataclasses.dataclass(frozen=True)
class Attachment:
    """A file for a SendMessage (Chat Gateway): its bytes, or a URL the connector fetches them from."""

    file_name: str
    content_type: str
    data: bytes | None = None
    url: str | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Attachment:
        """The file at `path`, its type guessed from its name."""
        path = pathlib.Path(path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path.name, content_type, data=path.read_bytes())


class PublishError(Exception):
    """Kafka did not take one or more commands; nothing says they were published."""


class Started(str):
    """The StartConversation's command id; `message_id` is that of the first message sent with it, if any."""

    message_id: str | None = None

    def __new__(cls, command_id: str, message_id: str | None = None) -> Started:
        started = super().__new__(cls, command_id)
        started.message_id = message_id
        return started

    @property
    def command_ids(self) -> list[str]:
        """Both ids in publishing order (the start's alone when no text was sent)."""
        return [str(self)] + ([self.message_id] if self.message_id else [])


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """The outcome of one command, as the connector published it to chat.command-results."""

    command_id: str
    conversation_ref: str
    command_type: str  # START_CONVERSATION, SEND_MESSAGE, END_CONVERSATION, FETCH_TRANSCRIPT, SET_TYPING, MARK_READ or UNKNOWN
    status: str  # SUCCEEDED or FAILED
    processed_at: datetime.datetime
    conversation_id: str | None = None
    generation: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    duplicate: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CommandResult:
        """The result from a decoded CommandResult record (fields a later schema adds are left out)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (processed_at in epoch milliseconds)."""
        return plain(dataclasses.asdict(self))


class CommandPublisher:
    """Publishes ConversationCommand records to chat.commands (acks=all, idempotent ordering per ref)."""

    def __init__(self, settings: Settings | None = None, *, wait: bool = True, producer: KafkaProducer | None = None) -> None:
        self.settings = settings or load_settings()
        self._wait = wait
        self._pending: list[Any] = []
        self._codec = AvroCodec(self.settings)
        self._codec.start_sync("ConversationCommand")
        if producer is None:
            try:  # a refused TLS handshake or login is said now, not after the producer's timeouts
                check(self.settings)
            except KafkaAccessError as exc:
                raise PublishError(f"cannot publish to {self.settings.topic_commands}: {exc}") from None
        self._producer = producer or KafkaProducer(
            **self.settings.kafka_python_config(),
            acks="all",
            linger_ms=5,
            max_in_flight_requests_per_connection=1,  # keeps a ref's commands in order across retries
            max_block_ms=_MAX_BLOCK_MS,
            bootstrap_timeout_ms=_MAX_BLOCK_MS,
            request_timeout_ms=10_000,
            delivery_timeout_ms=_DELIVERY_TIMEOUT_MS,
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
    ) -> Started:
        """StartConversation; `history` is (text, "USER" | "BOT") pairs, `assignment` ("QUEUE" | "SCRIPT", id).

        `text` is the customer's first message: it is sent as a SendMessage right after the start,
        and its command id is the answer's `message_id`.
        """
        body = _start_body(
            name, customer_id, email, phone, company, case_id, language, properties, history, channel_id, assignment
        )
        started = self.publish(ref, "StartConversation", body, command_id)
        return Started(started, self.message(ref, text) if text is not None else None)

    def message(
        self,
        ref: str,
        text: str,
        *,
        author_type: str = "USER",
        attachments: Sequence[Attachment] = (),
        cards: Sequence[tuple[str, Mapping[str, Any]]] = (),
        command_id: str | None = None,
    ) -> str:
        """SendMessage from the customer ("USER") or a bot ("BOT"); Chat Gateway: with files and
        cards (content type, content)."""
        return self.publish(ref, "SendMessage", _message_body(text, author_type, attachments, cards), command_id)

    def typing(self, ref: str, *, active: bool = True, author_type: str = "USER", command_id: str | None = None) -> str:
        """SetTyping (Chat Gateway): the agent sees the customer typing; `active=False` says it stopped."""
        return self.publish(ref, "SetTyping", {"active": active, "author_type": author_type.upper()}, command_id)

    def mark_read(self, ref: str, message_id: str, *, author_type: str = "USER", command_id: str | None = None) -> str:
        """MarkRead (Chat Gateway): a read receipt for every message up to `message_id` (a ChatEvent's)."""
        return self.publish(ref, "MarkRead", {"message_id": message_id, "author_type": author_type.upper()}, command_id)

    def end(self, ref: str, *, reason: str | None = None, command_id: str | None = None) -> str:
        """EndConversation: the customer leaves."""
        return self.publish(ref, "EndConversation", {"reason": reason}, command_id)

    def fetch_transcript(self, ref: str, *, command_id: str | None = None) -> str:
        """FetchTranscript: have the conversation read back and published to chat.transcripts."""
        return self.publish(ref, "FetchTranscript", {"include_raw": True}, command_id)

    def publish(self, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None = None) -> str:
        """Publish one command of `kind` (the Avro record name) for `ref`; its command id.

        Waits for Kafka's acknowledgement unless the publisher was made with `wait=False`.
        """
        command_id, value = self.encode(ref, kind, body, command_id)
        try:
            delivery = self._producer.send(
                self.settings.topic_commands, key=ref.encode(), value=value, headers=tracing.kafka_headers()
            )
            if self._wait:
                delivery.get(timeout=(_DELIVERY_TIMEOUT_MS + _MAX_BLOCK_MS) / 1000)
        except KafkaError as exc:
            raise PublishError(f"cannot publish to {self.settings.topic_commands}: {self._describe(exc)}") from None
        if not self._wait:
            self._pending.append(delivery)
        return command_id

    def encode(self, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None = None) -> tuple[str, bytes]:
        """The command id and the wire-format value of a command, without publishing it."""
        return _encode(self._codec, ref, kind, body, command_id)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every command published so far is acknowledged; PublishError if any was not."""
        deadline = time.monotonic() + (timeout if timeout is not None else (_DELIVERY_TIMEOUT_MS + _MAX_BLOCK_MS) / 1000)
        try:
            self._producer.flush(timeout)
        except KafkaError:
            pass  # each command's own outcome is read below
        pending, self._pending = self._pending, []
        failed: list[KafkaError] = []
        for delivery in pending:
            try:
                delivery.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                failed.append(exc)
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(pending)} commands were not published to {self.settings.topic_commands}: "
                f"{self._describe(failed[0])}"
            )

    def _describe(self, exc: BaseException) -> str:
        """An error of kafka-python, as one line (naming the ACL when Kafka refused the principal)."""
        return describe(exc, self.settings, need=f"Write on Topic {self.settings.topic_commands}")

    def close(self) -> None:
        """Flush (PublishError if a command was not taken) and close the connections."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> CommandPublisher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class ResultWatcher:
    """Reads chat.command-results from its end at creation (no consumer group) to find results by command id.

    Create it before publishing, so that no result can be missed. Kafka refusing to let it read
    raises KafkaAccessError, saying which ACL is missing.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._codec = AvroCodec(settings)
        self._consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
        try:
            assign_all(self._consumer, settings.topic_command_results, from_beginning=False)
        except KafkaError as exc:
            self._consumer.close()
            raise self._refused(exc) from None

    def wait(self, command_ids: Iterable[str], timeout_s: float) -> dict[str, CommandResult]:
        """The results of `command_ids` (command id -> result) seen within `timeout_s`; fewer on timeout."""
        wanted = set(command_ids)
        found: dict[str, CommandResult] = {}
        deadline = time.monotonic() + timeout_s
        while wanted - found.keys() and time.monotonic() < deadline:
            try:
                batches = self._consumer.poll(timeout_ms=200)
            except KafkaError as exc:
                raise self._refused(exc) from None
            for records in batches.values():
                for record in records:
                    try:
                        result = self._codec.decode_sync("CommandResult", record.value)
                    except SchemaError:
                        continue
                    if result["command_id"] in wanted and result["command_id"] not in found:
                        found[result["command_id"]] = CommandResult.from_record(result)
        return found

    def _refused(self, exc: KafkaError) -> KafkaAccessError:
        return KafkaAccessError(describe(exc, self.settings, need=f"Read on Topic {self.settings.topic_command_results}"))

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ResultWatcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncCommandPublisher:
    """CommandPublisher for asyncio services, on aiokafka: the same methods, awaited; `async with` opens it.

    Each call returns once Kafka has acknowledged the command (`PublishError` if it did not); with
    `wait=False` at once, and `flush()` (or leaving the `async with` block) waits for every
    acknowledgement and raises if any command was not taken.
    """

    def __init__(self, settings: Settings | None = None, *, wait: bool = True) -> None:
        self.settings = settings or load_settings()
        self._wait = wait
        self._codec = AvroCodec(self.settings)
        self._producer: Any = None
        self._pending: list[Any] = []

    async def open(self) -> None:
        """Look up the schema, then connect (PublishError at once when Kafka cannot be reached or refuses the login)."""
        from aiokafka import AIOKafkaProducer

        reason = await probe(self.settings)
        if reason is not None:
            raise PublishError(f"cannot publish to {self.settings.topic_commands}: {reason}")
        await self._codec.start("ConversationCommand")
        producer = AIOKafkaProducer(
            **self.settings.kafka_python_config(),
            acks="all",
            linger_ms=5,  # one batch in flight per partition: a ref's commands stay in order
            request_timeout_ms=10_000,
        )
        try:
            await producer.start()
        except Exception as exc:  # aiokafka raises many kinds
            await producer.stop()
            raise PublishError(f"cannot publish to {self.settings.topic_commands}: {self._describe(exc)}") from None
        self._producer = producer

    async def start(
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
    ) -> Started:
        """StartConversation, as `CommandPublisher.start`."""
        body = _start_body(
            name, customer_id, email, phone, company, case_id, language, properties, history, channel_id, assignment
        )
        started = await self.publish(ref, "StartConversation", body, command_id)
        return Started(started, await self.message(ref, text) if text is not None else None)

    async def message(
        self,
        ref: str,
        text: str,
        *,
        author_type: str = "USER",
        attachments: Sequence[Attachment] = (),
        cards: Sequence[tuple[str, Mapping[str, Any]]] = (),
        command_id: str | None = None,
    ) -> str:
        """SendMessage from the customer ("USER") or a bot ("BOT"); Chat Gateway: with files and
        cards (content type, content)."""
        return await self.publish(ref, "SendMessage", _message_body(text, author_type, attachments, cards), command_id)

    async def typing(self, ref: str, *, active: bool = True, author_type: str = "USER", command_id: str | None = None) -> str:
        """SetTyping (Chat Gateway): the agent sees the customer typing; `active=False` says it stopped."""
        return await self.publish(ref, "SetTyping", {"active": active, "author_type": author_type.upper()}, command_id)

    async def mark_read(self, ref: str, message_id: str, *, author_type: str = "USER", command_id: str | None = None) -> str:
        """MarkRead (Chat Gateway): a read receipt for every message up to `message_id` (a ChatEvent's)."""
        return await self.publish(ref, "MarkRead", {"message_id": message_id, "author_type": author_type.upper()}, command_id)

    async def end(self, ref: str, *, reason: str | None = None, command_id: str | None = None) -> str:
        """EndConversation: the customer leaves."""
        return await self.publish(ref, "EndConversation", {"reason": reason}, command_id)

    async def fetch_transcript(self, ref: str, *, command_id: str | None = None) -> str:
        """FetchTranscript: have the conversation read back and published to chat.transcripts."""
        return await self.publish(ref, "FetchTranscript", {"include_raw": True}, command_id)

    async def publish(self, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None = None) -> str:
        """Publish one command of `kind` (the Avro record name) for `ref`; its command id."""
        if self._producer is None:
            raise RuntimeError("AsyncCommandPublisher is not open: use `async with` or await open() first")
        command_id, value = _encode(self._codec, ref, kind, body, command_id)
        try:
            delivery = await self._producer.send(
                self.settings.topic_commands, key=ref.encode(), value=value, headers=tracing.kafka_headers()
            )
            if self._wait:
                await delivery
        except Exception as exc:  # aiokafka raises many kinds
            raise PublishError(f"cannot publish to {self.settings.topic_commands}: {self._describe(exc)}") from None
        if not self._wait:
            self._pending.append(delivery)
        return command_id

    async def flush(self) -> None:
        """Wait until every command published so far is acknowledged; PublishError if any was not."""
        pending, self._pending = self._pending, []
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(pending)} commands were not published to {self.settings.topic_commands}: "
                f"{self._describe(failed[0])}"
            )

    async def close(self) -> None:
        """Flush (PublishError if a command was not taken) and close the connections."""
        try:
            await self.flush()
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self.settings, need=f"Write on Topic {self.settings.topic_commands}")

    async def __aenter__(self) -> AsyncCommandPublisher:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def _start_body(
    name: str,
    customer_id: str | None,
    email: str | None,
    phone: str | None,
    company: str | None,
    case_id: str | None,
    language: str | None,
    properties: Mapping[str, str] | None,
    history: Iterable[tuple[str, str]],
    channel_id: str | None,
    assignment: tuple[str, str] | None,
) -> dict[str, Any]:
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
    return {
        "customer": customer,
        "channel_id": channel_id,
        "assignment": {"type": assignment[0].upper(), "id": assignment[1]} if assignment else None,
        "history": [{"text": t, "author_type": a.upper()} for t, a in history],
    }


def _message_body(
    text: str, author_type: str, attachments: Sequence[Attachment] = (), cards: Sequence[tuple[str, Mapping[str, Any]]] = ()
) -> dict[str, Any]:
    return {
        "text": text,
        "author_type": author_type.upper(),
        "attachments": [dataclasses.asdict(attachment) for attachment in attachments],
        "cards": [{"content_type": kind, "content_json": json.dumps(content)} for kind, content in cards],
    }


def _encode(codec: AvroCodec, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None) -> tuple[str, bytes]:
    command_id = command_id or str(uuid.uuid4())
    record = {
        "command_id": command_id,
        "conversation_ref": ref,
        "created_at": int(time.time() * 1000),
        "command": (f"{_NAMESPACE}.{kind}", dict(body)),
    }
    return command_id, codec.encode("ConversationCommand", record)
