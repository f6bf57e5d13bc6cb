"""The auto-end policy end to end: the agent leaves without a transfer, nobody writes, the worker ends it.

A second conversation gets a customer message right after its agent left: it is re-opened (a new
interaction), so the policy must not end it for that departure (only, maybe, for the next one).
"""

from __future__ import annotations

import uuid

import pytest

from tests.commands.conftest import Results
from tests.commands.test_flow import _state, _wait_state

pytestmark = pytest.mark.kafka


def test_auto_end_after_the_agent_left(start_sandbox, connector_env, start_worker, publisher_for, readers) -> None:
    # One exchange, then the agent leaves; a free agent for each conversation.
    sandbox = start_sandbox("--exchanges", "1", "--agents", "4")
    env = connector_env(sandbox, "chat-api-v2", command_auto_end_s="2")
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    idle, busy = (f"auto-{name}-{uuid.uuid4().hex[:6]}" for name in ("idle", "busy"))

    started = [publisher.start(ref, name="Ann Example") for ref in (idle, busy)]
    publisher.flush()
    results.wait_for(started, 30)
    for ref in (idle, busy):
        _wait_state(env, ref, lambda s: s["status"] == "AGENT_JOINED")
        publisher.message(ref, "Where is my parcel?")
    publisher.flush()
    left = {ref: _wait_state(env, ref, lambda s: s["status"] == "AGENT_LEFT") for ref in (idle, busy)}
    # The customer of `busy` writes again at once: a new interaction, queued for an agent.
    reopened = publisher.message(busy, "One more question")
    publisher.flush()
    results.wait_for([reopened], 20)

    ended = _wait_state(env, idle, lambda s: s["status"] == "ENDED", timeout=30)
    assert ended["interaction_count"] == 1
    auto_id = f"auto-end:{idle}:{left[idle]['agent_left_at']}"
    (result,) = results.wait_for([auto_id], 20)[auto_id]
    assert result["status"] == "SUCCEEDED" and result["command_type"] == "END_CONVERSATION" and not result["duplicate"]
    conversation_id = ended["conversation_id"]
    ends = [r for r in sandbox.requests() if conversation_id in r["path"] and r["method"] == "DELETE"]
    assert len(ends) == 1 and ends[0]["status"] == 204

    # `busy`: re-opened; its first departure is never auto-ended (the next agent may leave too, later).
    busy_state = _state(env, busy)
    assert busy_state is not None and busy_state["interaction_count"] == 2
    first_departure = f"auto-end:{busy}:{left[busy]['agent_left_at']}"
    assert not [r for r in results.records if r["command_id"] == first_departure and r["status"] == "SUCCEEDED"]
    if busy_state["status"] == "ENDED":
        assert busy_state["agent_left_at"] > left[busy]["agent_left_at"]
