"""The event agent's hold and dedupe, in-process: in-memory tables, a recording chat.events, no Kafka."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from faust.types import TP

from connector import events
from connector.config import load_settings

RAW_TOPIC = "chat.webhooks.raw"


class Tables:
    """Writes to in-memory tables as the appender makes them (each write's future resolved at once)."""

    async def put(self, table: dict[str, Any], key: str, value: Any, partition: int) -> asyncio.Future[None]:
        table[key] = value
        return _done()

    async def delete(self, table: dict[str, Any], key: str, partition: int) -> asyncio.Future[None] | None:
        return None if table.pop(key, None) is None else _done()


class ChatEvents:
    """chat.events: records what is sent (key, ChatEvent)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(self, *, key: bytes, value: dict[str, Any]) -> asyncio.Future[None]:
        self.sent.append((key, value))
        return _done()


class Codec:
    """ChatEvents encode as themselves; raw records decode from the bytes they were handed in as."""

    def __init__(self) -> None:
        self.raw: dict[bytes, dict[str, Any]] = {}

    def encode(self, schema: str, record: dict[str, Any]) -> dict[str, Any]:
        return record

    async def decode(self, schema: str, data: bytes) -> dict[str, Any]:
        return self.raw[data]


class Agent:
    """An event agent on in-memory tables; `handle` feeds it one raw record of partition 0."""

    def __init__(self, **settings: Any) -> None:
        self.settings = load_settings(**settings)
        self.app = SimpleNamespace(
            consumer_generation_id=1,
            rebalancing=False,
            tables=SimpleNamespace(actives_ready=True),
            assignor=SimpleNamespace(assigned_actives=lambda: {TP(RAW_TOPIC, 0)}),
        )
        self.codec = Codec()
        self.events = ChatEvents()
        self.refs: dict[str, str] = {}
        connector = SimpleNamespace(
            settings=self.settings,
            app=self.app,
            appender=Tables(),
            codec=self.codec,
            events=self.events,
            refs=self.refs,
            held_events={},
            seen_events={},
        )
        self.agent = events._EventAgent(connector, self.settings)

    async def webhook(self, conversation_id: str, event_id: str, event_type: str = "QUEUED") -> None:
        body = json.dumps({"eventType": event_type, "conversationId": conversation_id, "timestamp": 1_700_000_000_000}).encode()
        raw = {
            "kind": "WEBHOOK",
            "generation": "chat-api-v2",
            "body": body,
            "headers": {"x-8x8-event-id": event_id},
            "received_at": 1_700_000_000_000,
            "conversation_ref": None,
        }
        value = f"{conversation_id}/{event_id}".encode()
        self.codec.raw[value] = raw
        await self.agent._handle(conversation_id, raw, value, 0)

    async def mapping(self, conversation_id: str, ref: str) -> None:
        raw = {"kind": "REF_MAPPING", "generation": "chat-api-v2", "body": b"", "headers": {}, "received_at": 0, "conversation_ref": ref}
        await self.agent._handle(conversation_id, raw, b"", 0)

    def published(self) -> list[tuple[str, str, str | None]]:
        """(key, event id, ref) of each ChatEvent sent."""
        return [(key.decode(), event["event_id"], event["conversation_ref"]) for key, event in self.events.sent]


@pytest.fixture
def agent() -> Agent:
    return Agent()


async def test_a_mapped_event_is_published_keyed_by_its_ref_and_a_retry_of_it_is_dropped(agent: Agent) -> None:
    await agent.mapping("c1", "ref-1")
    await agent.webhook("c1", "e1")
    await agent.webhook("c1", "e1")  # 8x8's retry
    await agent.webhook("c1", "e2")
    assert agent.published() == [("ref-1", "e1", "ref-1"), ("ref-1", "e2", "ref-1")]
    assert agent.refs == {"c1": "ref-1"}


async def test_an_event_before_its_mapping_is_held_then_published_with_its_ref_in_order(agent: Agent) -> None:
    await agent.webhook("c1", "e1")
    await agent.webhook("c1", "e1")  # a retry while held: held once
    await agent.webhook("c1", "e2", "AGENT_JOINED")
    assert agent.published() == []
    await agent.mapping("c1", "ref-1")
    assert agent.published() == [("ref-1", "e1", "ref-1"), ("ref-1", "e2", "ref-1")]
    await agent.webhook("c1", "e1")  # a retry after: remembered as published
    assert len(agent.published()) == 2


async def test_an_event_held_past_the_time_bound_is_published_by_its_8x8_id_and_again_when_its_ref_comes() -> None:
    agent = Agent(events_hold_s=0.01)
    await agent.webhook("c1", "e1")
    await agent.agent.release_expired()  # the worker is settled from now: the hold clock starts
    assert agent.published() == []
    await asyncio.sleep(0.02)
    await agent.agent.release_expired()
    assert agent.published() == [("c1", "e1", None)]
    await agent.mapping("c1", "ref-1")  # late, within the remap window
    assert agent.published() == [("c1", "e1", None), ("ref-1", "e1", "ref-1")]


async def test_the_hold_clock_waits_while_the_worker_rebalances() -> None:
    agent = Agent(events_hold_s=0.01)
    await agent.webhook("c1", "e1")
    agent.app.rebalancing = True
    await asyncio.sleep(0.02)
    await agent.agent.release_expired()
    agent.app.rebalancing = False
    await agent.agent.release_expired()  # settled only now
    assert agent.published() == []


async def test_past_the_count_bound_the_longest_held_conversation_is_published_unmapped() -> None:
    agent = Agent(events_hold_max=1)
    await agent.webhook("c1", "e1")
    await asyncio.sleep(0.002)
    await agent.webhook("c2", "e2")
    assert agent.published() == [("c1", "e1", None)]
    await agent.mapping("c2", "ref-2")
    assert agent.published()[-1] == ("ref-2", "e2", "ref-2")


async def test_event_ids_are_forgotten_after_the_dedupe_window() -> None:
    agent = Agent(events_dedupe_window_s=0.01)
    await agent.mapping("c1", "ref-1")
    await agent.webhook("c1", "e1")
    await asyncio.sleep(0.02)
    await agent.agent.release_expired()
    await agent.webhook("c1", "e1")  # long after: a new delivery, not a retry
    assert [event_id for _, event_id, _ in agent.published()] == ["e1", "e1"]


async def test_no_more_ids_than_the_bound_are_remembered_per_partition() -> None:
    agent = Agent(events_dedupe_per_partition=2)
    await agent.mapping("c1", "ref-1")
    for event_id in ("e1", "e2", "e3"):
        await agent.webhook("c1", event_id)
    await agent.webhook("c1", "e1")  # forgotten: the oldest beyond the bound
    await agent.webhook("c1", "e3")  # remembered
    assert [event_id for _, event_id, _ in agent.published()] == ["e1", "e2", "e3", "e1"]


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
