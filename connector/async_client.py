"""`AsyncCommandPublisher`: `CommandPublisher`'s API for asyncio services, on aiokafka.

    async with AsyncCommandPublisher() as publisher:
        await publisher.start("order-42", name="Ann", text="Where is my parcel?")
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connector import tracing
from connector.config import Settings, load_settings
from connector.kafka_errors import describe, probe
from connector.publishing import Attachment, PublishError, Started, encode_command, message_body, start_body
from connector.schemas import AvroCodec

__all__ = ["AsyncCommandPublisher"]


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
        body = start_body(
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
        return await self.publish(ref, "SendMessage", message_body(text, author_type, attachments, cards), command_id)

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
        command_id, value = encode_command(self._codec, ref, kind, body, command_id)
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
