"""A customer message after the agent left re-opens the conversation, end to end, on both generations.

start -> queued -> agent joins, answers and leaves -> the customer writes again -> a new interaction is
queued where the last one was -> an agent joins it, with the whole history in front of them; the
worker counts two interactions and chat.events carries both, keyed by the ref, each event with the
interaction it belongs to (`interaction_count`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.commands.conftest import GENERATIONS, Results

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("generation", GENERATIONS)
def test_a_message_after_the_agent_left_opens_a_new_interaction(
    generation, start_sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    sandbox = start_sandbox("--exchanges", "1")  # each agent answers one message, then leaves
    env = connector_env(sandbox, generation)
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    events = readers(env["CONNECTOR_TOPIC_EVENTS"], env, "ChatEvent")
    ref = f"reopen-{uuid.uuid4().hex[:8]}"

    started = publisher.start(ref, name="Ann Example")
    first = publisher.message(ref, "Where is my parcel?")
    publisher.flush()
    results.wait_for([started, first], 30)
    conversation_id = results.final(started)["conversation_id"]
    left = _wait_state(env, ref, lambda s: s["status"] == "AGENT_LEFT")
    assert left["interaction_count"] == 1

    again = publisher.message(ref, "One more question")
    publisher.flush()
    results.wait_for([again], 20)
    assert results.final(again)["status"] == "SUCCEEDED" and results.final(again)["conversation_id"] == conversation_id
    joined = _wait_state(env, ref, lambda s: s["interaction_count"] == 2 and s["status"] in ("AGENT_JOINED", "AGENT_LEFT"))
    assert joined["conversation_id"] == conversation_id

    # chat.events: two interactions, each queued on the same queue and joined by an agent, all keyed by the ref.
    mine = _wait_events(events, ref, lambda kinds: kinds.count("AGENT_JOINED") == 2)
    kinds = [e["event_type"] for e in mine]
    first_left = kinds.index("AGENT_LEFT")
    assert kinds[:first_left].count("QUEUED") == 1 and kinds[first_left:].count("QUEUED") == 1, kinds
    assert kinds.index("AGENT_JOINED", first_left) > kinds.index("QUEUED", first_left), kinds
    queues = {e["queue_id"] for e in mine if e["event_type"] == "QUEUED"}
    assert len(queues) == 1, queues
    assert {e["conversation_id"] for e in mine} == {conversation_id}
    assert mine[first_left]["agent_id"] == mine[kinds.index("AGENT_JOINED")]["agent_id"] is not None
    # Each event carries the interaction it belongs to: 1 up to the first agent's leaving, 2 for the new one.
    assert {e["interaction_count"] for e in mine[: first_left + 1]} == {1}, [(e["event_type"], e["interaction_count"]) for e in mine]
    reopened = [e["interaction_count"] for e in mine[first_left:] if e["event_type"] in ("QUEUED", "AGENT_JOINED")]
    assert reopened == [2, 2], [(e["event_type"], e["interaction_count"]) for e in mine]

    # 8x8's side: one conversation, two interactions; the second agent has the whole history and answers after it.
    seen = sandbox.conversation(conversation_id)
    texts = [m["text"] for m in seen["messages"]]
    assert texts.index("Where is my parcel?") < texts.index("One more question") < len(texts) - 1, texts
    assert len(seen["interactions"]) == 2, seen["interactions"]

    ended = publisher.end(ref)
    publisher.flush()
    results.wait_for([ended], 20)
    assert results.final(ended)["status"] == "SUCCEEDED"
    assert _wait_state(env, ref, lambda s: s["status"] == "ENDED")["interaction_count"] == 2


def _wait_state(env: dict[str, str], ref: str, check, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        response = httpx.get(f"http://127.0.0.1:{env['CONNECTOR_ADMIN_PORT']}/conversations/{ref}", timeout=5)
        state = response.json() if response.status_code == 200 else None
        if state is not None and check(state):
            return state
        time.sleep(0.1)
    pytest.fail(f"state of {ref} never matched: {state}")


def _wait_events(reader, ref: str, check, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    mine: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        reader.poll(0.3)
        mine = sorted((e for e in reader.records if e["conversation_ref"] == ref), key=lambda e: e["timestamp"])
        if check([e["event_type"] for e in mine]):
            return mine
    pytest.fail(f"events of {ref} never matched: {[e['event_type'] for e in mine]}")
