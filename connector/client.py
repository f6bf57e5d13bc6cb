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

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from connector import tracing
from connector.async_client import AsyncCommandPublisher
from connector.config import Settings, load_settings
from connector.kafka_errors import KafkaAccessError, check, describe
from connector.publishing import Attachment, CommandResult, PublishError, Started, encode_command, message_body, start_body
from connector.schemas import AvroCodec, SchemaError
from connector.topics import assign_all

__all__ = ["AsyncCommandPublisher", "Attachment", "CommandPublisher", "CommandResult", "PublishError", "ResultWatcher", "Started"]

# How long one command may take to be acknowledged, and to find the brokers at all.
_DELIVERY_TIMEOUT_MS = 30_000
_MAX_BLOCK_MS = 15_000
# Long enough for the producer to say whether a record was delivered (it gives up at its delivery timeout).
DELIVERY_WAIT_S = (_DELIVERY_TIMEOUT_MS + _MAX_BLOCK_MS) / 1000


def commands_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """A producer to chat.commands that says within DELIVERY_WAIT_S whether each record was delivered, and keeps
    the records of a ref in order across its retries."""
    return KafkaProducer(
        **settings.kafka_python_config(),
        acks="all",
        max_in_flight_requests_per_connection=1,
        max_block_ms=_MAX_BLOCK_MS,
        bootstrap_timeout_ms=_MAX_BLOCK_MS,
        request_timeout_ms=10_000,
        delivery_timeout_ms=_DELIVERY_TIMEOUT_MS,
        **options,
    )


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
        self._producer = producer or commands_producer(self.settings, linger_ms=5)

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
        body = start_body(
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
        return self.publish(ref, "SendMessage", message_body(text, author_type, attachments, cards), command_id)

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
                delivery.get(timeout=DELIVERY_WAIT_S)
        except KafkaError as exc:
            raise PublishError(f"cannot publish to {self.settings.topic_commands}: {self._describe(exc)}") from None
        if not self._wait:
            self._pending.append(delivery)
        return command_id

    def encode(self, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None = None) -> tuple[str, bytes]:
        """The command id and the wire-format value of a command, without publishing it."""
        return encode_command(self._codec, ref, kind, body, command_id)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every command published so far is acknowledged; PublishError if any was not."""
        deadline = time.monotonic() + (timeout if timeout is not None else DELIVERY_WAIT_S)
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
