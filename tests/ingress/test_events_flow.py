"""Every event type of both generations, sent by the sandbox, ends up as the right ChatEvent keyed by ref."""

from __future__ import annotations

import json

import pytest

from connector.sandbox.events import Agent
from connector.sandbox.state import Message, now_ms
from tests.ingress.conftest import chat_events, settings_of, wait_for
from tests.support.avro import publish_mapping

pytestmark = pytest.mark.kafka

# What the sandbox's script below sends, normalised: (event_type, raw_event_type, a few fields).
EXPECTED = {
    "chat-api-v2": [
        ("QUEUED", "QUEUED", {"queue_id": "101", "queue_name": "Queue 101"}),
        ("AGENT_JOINED", "AGENT_JOINED", {"agent_id": "agent-7", "agent_name": "Ann"}),
        ("MESSAGE", "TEXT", {"text": "Hello, I am Ann", "sender_type": "agent", "agent_id": "agent-7"}),
        ("TRANSFER", "TRANSFER", {}),
        ("AGENT_LEFT", "AGENT_LEFT", {"agent_id": "agent-7"}),
        ("UNKNOWN", "SURVEY_COMPLETED", {}),
    ],
    "chat-gateway-v1": [
        ("CONVERSATION_UPDATE", "CONVERSATION_UPDATE", {"conversation_state": "created", "assignment_type": "queue"}),
        ("QUEUED", "QUEUED", {"queue_id": "101", "queue_name": "Queue 101"}),
        ("AGENT_JOINED", "MEMBERS_CHANGED", {"agent_id": "agent-7", "member_type": "agent", "member_change": "joined"}),
        ("CONVERSATION_UPDATE", "CONVERSATION_UPDATE", {"conversation_state": "active", "assignment_id": "agent-7"}),
        ("ACTIVITY", "ACTIVITY", {"activity_name": "typing", "typing": True, "activity_user_ids": ["agent-7"]}),
        ("MESSAGE", "MESSAGE", {"text": "Hello, I am Ann", "sender_type": "agent", "is_echo": False, "message_id": "m1"}),
        # (the echo of the customer's "thanks", a message the connector sent itself, is dropped)
        ("TRANSFER", "TRANSFER", {}),
        ("AGENT_LEFT", "MEMBERS_CHANGED", {"agent_id": "agent-7", "member_change": "left"}),
        ("MEMBERS_CHANGED", "MEMBERS_CHANGED", {"member_type": "user", "member_change": "left"}),
        ("CONVERSATION_UPDATE", "CONVERSATION_UPDATE", {"conversation_state": "idle"}),
        ("UNKNOWN", "SURVEY_COMPLETED", {}),
    ],
}


def script(sandbox, generation_value: str) -> str:
    """Open a conversation and have 8x8 send every kind of event for it; answer its 8x8 id."""
    from connector.config import Generation

    generation = Generation(generation_value)
    channel = next(c for c in sandbox.store.channels.values() if c.generation is generation)
    conversation = sandbox.open_conversation(generation, channel, {"name": "Bo"}, None, [])
    notifier, agent = sandbox.notifier, Agent("agent-7", "Ann")
    notifier.agent_joined(conversation, agent)
    notifier.typing(conversation, agent, True)
    notifier.agent_message(conversation, agent, Message("m1", "i1", "agent", agent.id, "Hello, I am Ann", now_ms()))
    notifier.user_message(conversation, Message("m2", "i1", "user", conversation.customer_id, "thanks", now_ms()))
    notifier.transfer(conversation)
    notifier.agent_left(conversation, agent, idle=False)
    notifier.user_left(conversation)
    webhook = sandbox.store.webhook_of(conversation)
    unknown = {"eventType": "SURVEY_COMPLETED", "conversationId": conversation.id, "timestamp": now_ms(), "score": 5}
    sandbox.deliverer.submit(conversation.id, webhook.uri, unknown)
    return conversation.id


@pytest.mark.parametrize("generation", ["chat-api-v2", "chat-gateway-v1"])
def test_every_event_type_becomes_its_chat_event_keyed_by_ref_in_order(generation, ingress_env, sandbox, start_worker):
    env = {**ingress_env, "CONNECTOR_PLATFORM_GENERATION": generation}
    settings = settings_of(env)
    start_worker(env)
    expected = EXPECTED[generation]

    # A: the mapping is known before the events. B: the events come first and are held until it is.
    first = sandbox.call(script, sandbox.sandbox, generation)
    publish_mapping(settings, first, "ref-A", generation)
    second = sandbox.call(script, sandbox.sandbox, generation)
    wait_for(lambda: sandbox.pending() == 0, timeout=30)
    publish_mapping(settings, second, "ref-B", generation)

    events = chat_events(settings, until=lambda got: len(got) >= 2 * len(expected), timeout=30)
    assert len(events) == 2 * len(expected), [e[1]["raw_event_type"] for e in events]
    for ref, conversation_id in (("ref-A", first), ("ref-B", second)):
        mine = [record for key, record in events if key == ref]
        assert [(r["event_type"], r["raw_event_type"]) for r in mine] == [(t, raw) for t, raw, _ in expected]
        for record, (_, _, fields) in zip(mine, expected):
            assert {name: record[name] for name in fields} == fields
            assert record["conversation_ref"] == ref
            assert record["conversation_id"] == conversation_id
            assert record["generation"] == generation
            assert record["tenant_id"] == "sandbox-tenant"
            assert record["interaction_count"] == 1  # held or not, counted at arrival; the transfer opens none
            assert json.loads(record["raw_json"])["conversationId"] == conversation_id
        assert len({r["event_id"] for r in mine}) == len(mine)
