"""Stand-ins for what the command agent talks to, so that its decisions are tested in-process without Kafka.

A fake 8x8 `Platform` that records its calls and fails on demand, the `Connector` parts the agent
uses (settings, an in-memory `conversations` table, a recording appender, a pass-through codec, an
app with a consumer generation), and Faust events with `ack`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from connector.appender import NotDelivered
from connector.config import Settings, load_settings
from connector.eightbyeight import NewConversation, PlatformError, ReadBack
from connector.schemas import SchemaError

TOPIC = "chat.commands"


def fast_settings(**overrides: Any) -> Settings:
    """Settings whose retries and revocation grace take milliseconds."""
    values: dict[str, Any] = {
        "command_backoff_base_s": 0.001,
        "command_backoff_cap_s": 0.001,
        "command_revoke_grace_s": 0.05,
        "platform_channel_id": "channel-1",
    }
    return load_settings(**{**values, **overrides})


def unknown_outcome(operation: str) -> PlatformError:
    """A call that timed out: it may have taken effect, and may be tried again."""
    return PlatformError(operation, "timed out", retryable=True, outcome_unknown=True, reason="timeout")


def busy(operation: str, **kwargs: Any) -> PlatformError:
    """A 503: try again."""
    return PlatformError(operation, "busy", http_status=503, retryable=True, **kwargs)


class FakePlatform:
    """8x8 as far as the command runner sees it: records each call; `fail[op]` errors are raised first, in turn.

    `effect[op]`: the call takes effect even when its error is raised (a timeout after 8x8 acted).
    `gate[op]`: the call waits for that event before it does anything.
    """

    generation = "chat-gateway-v1"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, list[PlatformError]] = defaultdict(list)
        self.effect: set[str] = set()
        self.gate: dict[str, asyncio.Event] = {}
        self.by_ref: dict[str, str] = {}
        self.messages_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.ended: list[str] = []
        self._ids = itertools.count(1)

    def check(self, conversation: NewConversation) -> None:
        conversation.check()

    async def create(self, conversation: NewConversation) -> str:
        async def act() -> str:
            return self.by_ref.setdefault(conversation.ref, f"cid-{next(self._ids)}")

        return await self._call("create", conversation.ref, act)

    async def send(self, conversation_id: str, text: str, author_type: str, **kwargs: Any) -> None:
        async def act() -> None:
            self.messages_of[conversation_id].append({"text": text, "author_type": author_type.upper(), "created_at": None})

        await self._call("send", (conversation_id, text), act)

    async def end(self, conversation_id: str) -> None:
        async def act() -> None:
            self.ended.append(conversation_id)

        await self._call("end", conversation_id, act)

    async def find_by_ref(self, ref: str) -> str | None:
        async def act() -> str | None:
            return self.by_ref.get(ref)

        return await self._call("find_by_ref", ref, act)

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        async def act() -> list[dict[str, Any]]:
            return list(self.messages_of[conversation_id])

        return await self._call("messages", conversation_id, act)

    async def read_back(self, conversation_id: str) -> ReadBack:
        async def act() -> ReadBack:
            return ReadBack(status="ENDED", conversation={"id": conversation_id}, messages=[], participants=[], interactions=[])

        return await self._call("read_back", conversation_id, act)

    def made(self, operation: str) -> list[Any]:
        """The arguments of every `operation` call made, in order."""
        return [argument for name, argument in self.calls if name == operation]

    async def _call(self, operation: str, argument: Any, act: Any) -> Any:
        self.calls.append((operation, argument))
        if operation in self.gate:
            await self.gate[operation].wait()
        if self.fail[operation]:
            error = self.fail[operation].pop(0)
            if operation in self.effect:
                await act()
            raise error
        return await act()


@dataclass
class Delivered:
    """A record the appender was given: a topic's record or a table write."""

    topic: str
    key: Any
    value: Any
    headers: list[tuple[str, bytes]] | None = None


class FakeAppender:
    """Records what is appended, in order (table writes as topic `table:<key>`); `refuse[topic]` raises it there."""

    def __init__(self) -> None:
        self.log: list[Delivered] = []
        self.refuse: dict[str, list[BaseException]] = defaultdict(list)

    async def deliver(self, topic: str, key: bytes | None, value: Any, *, partition: int | None = None, headers: Any = None) -> Any:
        await asyncio.sleep(0)  # Kafka's ack comes later: other lanes run meanwhile
        if self.refuse[topic]:
            raise NotDelivered(topic, self.refuse[topic].pop(0))
        self.log.append(Delivered(topic, key, value, list(headers) if headers is not None else None))
        return None

    async def put_durably(self, table: dict[str, Any], key: str, value: Any, partition: int) -> None:
        table[key] = value
        await self.deliver("table", key, value)

    def on(self, topic: str) -> list[Delivered]:
        return [record for record in self.log if record.topic == topic]


class FakeCodec:
    """Encodes a record as itself; decodes a dict as itself and anything else as undecodable."""

    async def start(self) -> None:
        pass

    def encode(self, schema: str, record: dict[str, Any]) -> dict[str, Any]:
        return record

    async def decode_waiting(self, schema: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise SchemaError("not a record of ConversationCommand: no magic byte")
        return dict(data)


class FakeApp:
    """The Faust app's part the agent uses: its consumer generation, and `crash`."""

    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.crashed: list[BaseException] = []

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


@dataclass
class FakeConnector:
    settings: Settings = field(default_factory=fast_settings)
    app: FakeApp = field(default_factory=FakeApp)
    codec: FakeCodec = field(default_factory=FakeCodec)
    conversations: dict[str, Any] = field(default_factory=dict)
    appender: FakeAppender = field(default_factory=FakeAppender)


class FakePublished:
    """Whether a command's result is in the results topic: `ids` are; records each question."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.asked: list[str] = []

    async def has(self, partition: int, command_id: str, since_ms: int) -> bool:
        self.asked.append(command_id)
        return command_id in self.ids

    def forget(self) -> None:
        pass


@dataclass
class FakeMessage:
    """A Faust Message: where a record was read and what it holds."""

    offset: int
    key: bytes | None
    value: Any
    partition: int = 0
    topic: str = TOPIC
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    generation_id: int = 1
    acked: bool = False
    timestamp: float = field(default_factory=time.time)  # when it was published, epoch seconds

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


class FakeEvent:
    """A Faust event: its message and `ack`, which records the offset in `acks` (shared by the events of a test)."""

    def __init__(self, message: FakeMessage, acks: list[int]) -> None:
        self.message = message
        self._acks = acks

    def ack(self) -> None:
        self._acks.append(self.message.offset)


class Worker:
    """A `CommandProcessor` on the fakes above, fed records in offset order; its platform is `platform`."""

    def __init__(self, monkeypatch: Any, **settings: Any) -> None:
        from connector import processor

        self.platform = FakePlatform()
        self.connector = FakeConnector(settings=fast_settings(**settings))
        monkeypatch.setattr(processor, "open_platform", lambda _settings: self.platform)
        self.processor = processor.CommandProcessor(self.connector)  # type: ignore[arg-type]
        self.published = FakePublished()
        self.processor.published = self.processor.runner.published = self.published  # type: ignore[assignment]
        self.acked: list[int] = []
        self._offsets = itertools.count()

    @property
    def settings(self) -> Settings:
        return self.connector.settings

    @property
    def table(self) -> dict[str, Any]:
        return self.connector.conversations

    async def submit(
        self, record: Any, *, key: bytes | None | str = "ref", offset: int | None = None, partition: int = 0, **message: Any
    ) -> FakeEvent:
        """Hand one record to the processor (key: the record's ref unless given); returns its event."""
        if key == "ref":
            key = record["conversation_ref"].encode()
        at = next(self._offsets) if offset is None else offset
        event = FakeEvent(FakeMessage(at, key, record, partition=partition, **message), self.acked)
        await self.processor.submit(event)  # type: ignore[arg-type]
        return event

    async def run(self, *records: Any) -> None:
        """Submit `records` and wait until every lane is idle."""
        for record in records:
            await self.submit(record)
        await self.processor.lanes.join()

    def results(self) -> list[dict[str, Any]]:
        """The CommandResult records published, in order."""
        return [record.value for record in self.connector.appender.on(self.settings.topic_command_results)]

    def result_of(self, command_id: str) -> dict[str, Any]:
        (answer,) = [answer for answer in self.results() if answer["command_id"] == command_id]
        return answer

    def dlq(self) -> list[Delivered]:
        return self.connector.appender.on(self.settings.topic_commands_dlq)


def start(command_id: str, ref: str, **body: Any) -> dict[str, Any]:
    """A decoded StartConversation record."""
    return _record(command_id, ref, "StartConversation", {"customer": {"name": "Ada"}, **body})


def send(command_id: str, ref: str, text: str = "hello") -> dict[str, Any]:
    """A decoded SendMessage record."""
    return _record(command_id, ref, "SendMessage", {"text": text, "author_type": "USER"})


def end(command_id: str, ref: str) -> dict[str, Any]:
    """A decoded EndConversation record."""
    return _record(command_id, ref, "EndConversation", {"reason": None})


def fetch_transcript(command_id: str, ref: str) -> dict[str, Any]:
    """A decoded FetchTranscript record."""
    return _record(command_id, ref, "FetchTranscript", {})


def _record(command_id: str, ref: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"command_id": command_id, "conversation_ref": ref, "created_at": 0, "command": (f"io.kafka8x8.chat.{name}", body)}
