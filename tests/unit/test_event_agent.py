"""The event agent's hold and dedupe, in-process: in-memory tables, a recording appender, no Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from faust.types import TP

from connector import events
from connector.appender import NotDelivered
from connector.config import load_settings
from connector.schemas import AvroCodec, RegistryUnavailable

RAW_TOPIC = "chat.webhooks.raw"


class Appender:
    """Writes to in-memory tables as the appender makes them (each write's future resolved at once), and records
    what is delivered to chat.events (key, ChatEvent); `fail[event id]` is raised when that event's ChatEvent is."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []
        self.fail: dict[str, BaseException] = {}

    async def deliver(self, topic: str, key: bytes, value: dict[str, Any], *, partition: int | None = None, headers: Any = None) -> None:
        assert topic == "chat.events" and partition is None  # partitioned by its key, the ref, as the conversations
        await asyncio.sleep(0)  # Kafka's ack comes later
        if value["event_id"] in self.fail:
            raise self.fail.pop(value["event_id"])
        self.sent.append((key, value))

    async def put(self, table: dict[str, Any], key: str, value: Any, partition: int) -> asyncio.Future[None]:
        table[key] = value
        return _done()

    async def delete(self, table: dict[str, Any], key: str, partition: int) -> asyncio.Future[None] | None:
        return None if table.pop(key, None) is None else _done()


class Table(dict):
    """An in-memory table whose store is itself, as `compat.table_keys` walks it."""

    @property
    def data(self) -> SimpleNamespace:
        return SimpleNamespace(data=self)


class Codec:
    """ChatEvents encode as themselves; raw records decode from the bytes they were handed in as, after
    `blips` RegistryUnavailable (the registry away); `decode_waiting` is the real codec's."""

    decode_waiting = AvroCodec.decode_waiting

    def __init__(self) -> None:
        self.raw: dict[bytes, dict[str, Any]] = {}
        self.blips = 0

    def encode(self, schema: str, record: dict[str, Any]) -> dict[str, Any]:
        return record

    async def decode(self, schema: str, data: bytes) -> dict[str, Any]:
        if self.blips:
            self.blips -= 1
            raise RegistryUnavailable("schema registry: connection refused")
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
        self.appender = Appender()
        self.refs: dict[str, str] = {}
        self.interactions = Table()
        connector = SimpleNamespace(
            settings=self.settings,
            app=self.app,
            appender=self.appender,
            codec=self.codec,
            refs=self.refs,
            held_events={},
            seen_events={},
            interactions=self.interactions,
        )
        self.agent = events._EventAgent(connector, self.settings)

    async def webhook(
        self, conversation_id: str, event_id: str, event_type: str = "QUEUED", partition: int = 0, **fields: Any
    ) -> None:
        event = {"eventType": event_type, "conversationId": conversation_id, "timestamp": 1_700_000_000_000, **fields}
        raw = {
            "kind": "WEBHOOK",
            "generation": "chat-gateway-v1" if "data" in fields else "chat-api-v2",
            "body": json.dumps(event).encode(),
            "headers": {"x-8x8-event-id": event_id},
            "received_at": 1_700_000_000_000,
            "conversation_ref": None,
        }
        value = f"{conversation_id}/{event_id}".encode()
        self.codec.raw[value] = raw
        await self.agent._handle(conversation_id, raw, value, partition)

    async def mapping(self, conversation_id: str, ref: str) -> None:
        raw = {"kind": "REF_MAPPING", "generation": "chat-api-v2", "body": b"", "headers": {}, "received_at": 0, "conversation_ref": ref}
        await self.agent._handle(conversation_id, raw, b"", 0)

    async def expired(self, conversation_id: str) -> None:
        raw = {"kind": "REF_EXPIRED", "generation": "chat-api-v2", "body": b"", "headers": {}, "received_at": 0, "conversation_ref": "r"}
        await self.agent._handle(conversation_id, raw, b"", 0)

    def published(self) -> list[tuple[str, str, str | None]]:
        """(key, event id, ref) of each ChatEvent sent."""
        return [(key.decode(), event["event_id"], event["conversation_ref"]) for key, event in self.appender.sent]

    def counts(self) -> list[tuple[str, int | None]]:
        """(event id, interaction count) of each ChatEvent sent."""
        return [(event["event_id"], event["interaction_count"]) for _, event in self.appender.sent]


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


# --- failures -------------------------------------------------------------------------------------


async def test_an_event_too_large_for_chat_events_is_logged_skipped_and_not_tried_again(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    class RecordTooLargeError(Exception):
        pass

    await agent.mapping("c1", "ref-1")
    agent.appender.fail["e1"] = NotDelivered("chat.events", RecordTooLargeError("larger than max.message.bytes"))
    await agent.webhook("c1", "e1")
    await agent.webhook("c1", "e2")  # the agent goes on
    await agent.webhook("c1", "e1")  # 8x8's retry of the refused one: dropped, as if published
    assert agent.published() == [("ref-1", "e2", "ref-1")]
    (refused,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert "e1" in refused.getMessage() and "RecordTooLargeError" in refused.getMessage()


async def test_a_chat_events_that_refuses_every_record_makes_the_event_wait_not_vanish(
    agent: Agent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not authorised (an ACL missing) would refuse every event: skipping would drop them all, so it waits."""

    class TopicAuthorizationFailedError(Exception):
        pass

    monkeypatch.setattr(events, "_REFUSED_FIRST_S", 0.001)
    await agent.mapping("c1", "ref-1")
    agent.appender.fail["e1"] = NotDelivered("chat.events", TopicAuthorizationFailedError("chat.events"))
    await agent.webhook("c1", "e1")
    assert agent.published() == [("ref-1", "e1", "ref-1")]  # once the refusal is over
    (refused,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert "e1 waits" in refused.getMessage()


async def test_held_events_stay_held_until_all_of_them_are_published_with_their_ref(agent: Agent) -> None:
    await agent.webhook("c1", "e1")
    await agent.webhook("c1", "e2")
    agent.appender.fail["e2"] = RuntimeError("the worker stopped")  # mid-loop, after e1 was published
    with pytest.raises(RuntimeError):
        await agent.mapping("c1", "ref-1")
    assert [entry["event_id"] for entry in agent.agent._held["c1"]] == ["e1", "e2"]
    await agent.mapping("c1", "ref-1")  # the REF_MAPPING again, not acked: e2 is not lost (e1 twice at worst)
    assert agent.published() == [("ref-1", "e1", "ref-1"), ("ref-1", "e1", "ref-1"), ("ref-1", "e2", "ref-1")]
    assert agent.agent._held == {}


async def test_held_events_wait_for_the_registry_when_their_ref_comes(agent: Agent) -> None:
    await agent.webhook("c1", "e1")
    agent.codec.blips = 1
    await agent.mapping("c1", "ref-1")
    assert agent.published() == [("ref-1", "e1", "ref-1")]


async def test_an_error_in_the_hold_timer_is_logged_and_the_next_tick_tries_again(caplog: pytest.LogCaptureFixture) -> None:
    agent = Agent(events_hold_s=0.01)
    await agent.webhook("c1", "e1")
    await agent.agent.release_expired()
    await asyncio.sleep(0.02)
    agent.appender.fail["e1"] = RuntimeError("a bug")
    await agent.agent.release_expired()  # does not raise: Faust would crash the worker
    assert agent.published() == []
    assert any("hold timer failed" in record.getMessage() for record in caplog.records)
    await agent.agent.release_expired()
    assert agent.published() == [("c1", "e1", None)]


# --- interaction counts ---------------------------------------------------------------------------


async def test_events_carry_the_interaction_they_belong_to(agent: Agent) -> None:
    await agent.mapping("c1", "ref-1")
    flow = ["QUEUED", "AGENT_JOINED", "TEXT", "AGENT_LEFT", "QUEUED", "AGENT_JOINED", "TRANSFER", "AGENT_LEFT", "AGENT_JOINED"]
    for n, event_type in enumerate(flow):
        await agent.webhook("c1", f"e{n}", event_type)
    assert [count for _, count in agent.counts()] == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    await agent.mapping("c2", "ref-2")
    await agent.webhook("c2", "f0", "AGENT_JOINED")  # each conversation counts its own
    assert agent.counts()[-1] == ("f0", 1)


async def test_a_held_event_carries_the_count_of_its_arrival_unmapped_and_mapped() -> None:
    agent = Agent(events_hold_s=0.01)
    for n, event_type in enumerate(["QUEUED", "AGENT_LEFT", "QUEUED"]):
        await agent.webhook("c1", f"e{n}", event_type)
    await agent.agent.release_expired()
    await asyncio.sleep(0.02)
    await agent.agent.release_expired()  # published by the 8x8 id
    await agent.mapping("c1", "ref-1")  # and again with the ref
    assert agent.counts() == [("e0", 1), ("e1", 1), ("e2", 2)] * 2


async def test_an_event_counted_before_the_worker_stopped_counts_once_when_it_comes_again(agent: Agent) -> None:
    await agent.mapping("c1", "ref-1")
    await agent.webhook("c1", "e1", "AGENT_JOINED")
    await agent.webhook("c1", "e2", "AGENT_LEFT")
    await agent.agent._count("c1", "e3", "QUEUED", 0)  # counted, then the worker stopped before publishing it
    await agent.webhook("c1", "e3", "QUEUED")
    await agent.webhook("c1", "e4", "AGENT_JOINED")
    assert agent.counts()[-2:] == [("e3", 2), ("e4", 2)]


async def test_echoes_and_events_of_no_conversation_are_not_counted(agent: Agent) -> None:
    await agent.mapping("c1", "ref-1")
    await agent.webhook("c1", "e1", "MESSAGE", data={"isEcho": True, "text": "hi", "sender": {"type": "user"}})
    assert agent.published() == [] and agent.interactions == {}
    await agent.webhook("e2", "e2", "WEB_HOOK_VERIFY")  # no conversation: keyed by its event id
    assert agent.counts() == [("e2", None)] and agent.interactions == {}


async def test_ref_expired_deletes_the_count_with_the_ref(agent: Agent) -> None:
    await agent.mapping("c1", "ref-1")
    await agent.webhook("c1", "e1")
    assert set(agent.interactions) == {"c1"}
    await agent.expired("c1")
    assert agent.refs == {} and agent.interactions == {}


async def test_the_sweep_forgets_the_counts_of_owned_conversations_with_no_ref_past_the_retention() -> None:
    agent = Agent(state_retention_s=0.05)
    await agent.mapping("c1", "ref-1")
    await agent.webhook("c1", "e1")  # has a ref: kept until REF_EXPIRED
    await agent.webhook("c2", "e2")  # no ref
    await agent.webhook("c3", "e3", partition=1)  # no ref, but not this worker's partition
    await agent.agent.forget_interactions()
    assert set(agent.interactions) == {"c1", "c2", "c3"}  # not old enough
    await asyncio.sleep(0.06)
    agent.app.rebalancing = True
    await agent.agent.forget_interactions()
    assert set(agent.interactions) == {"c1", "c2", "c3"}  # not while the worker is not settled
    agent.app.rebalancing = False
    await agent.agent.forget_interactions()
    assert set(agent.interactions) == {"c1", "c3"}


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
