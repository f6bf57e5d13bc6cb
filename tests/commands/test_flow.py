"""The 8x8 conversation flow driven by commands, both generations, with events coming back through the ingress.

start -> queued -> agent joined -> messages both ways -> transfer -> agent left -> a customer
message re-queues it (new interaction) -> end, then the transcript.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.commands.conftest import GENERATIONS, Results

pytestmark = pytest.mark.kafka


def _state(env: dict[str, str], ref: str) -> dict[str, Any] | None:
    """The worker's view of `ref`, from its internal admin port."""
    response = httpx.get(f"http://127.0.0.1:{env['CONNECTOR_ADMIN_PORT']}/conversations/{ref}", timeout=5)
    return response.json() if response.status_code == 200 else None


def _wait_state(env: dict[str, str], ref: str, check, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = _state(env, ref)
        if state is not None and check(state):
            return state
        time.sleep(0.1)
    pytest.fail(f"state of {ref} never matched: {state}")


@pytest.mark.parametrize("generation", GENERATIONS)
def test_full_flow(generation, start_sandbox, connector_env, start_worker, publisher_for, readers) -> None:
    sandbox = start_sandbox("--exchanges", "1", "--transfer-probability", "1")
    env = connector_env(sandbox, generation)
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"flow-{uuid.uuid4().hex[:8]}"

    started = publisher.start(ref, name="Ann Example", email="ann@example.com", properties={"tier": "gold"})
    publisher.flush()
    results.wait_for([started], 30)
    assert results.final(started)["status"] == "SUCCEEDED", results.final(started)
    conversation_id = results.final(started)["conversation_id"]
    agent = _wait_state(env, ref, lambda s: s["status"] == "AGENT_JOINED")["agent_id"]

    first = publisher.message(ref, "Where is my parcel?")
    publisher.flush()
    # The agent answers, transfers and leaves (not an end); another agent joins.
    _wait_state(env, ref, lambda s: s["status"] == "AGENT_JOINED" and s["agent_id"] not in (None, agent))
    second = publisher.message(ref, "Thanks, anything else?")
    publisher.flush()
    state = _wait_state(env, ref, lambda s: s["status"] == "AGENT_LEFT")
    assert state["interaction_count"] == 1

    requeue = publisher.message(ref, "One more question")
    publisher.flush()
    results.wait_for([requeue], 20)
    state = _wait_state(env, ref, lambda s: s["interaction_count"] == 2 and s["status"] in ("QUEUED", "AGENT_JOINED"))

    ended = publisher.end(ref)
    publisher.flush()
    by_id = results.wait_for([started, first, second, requeue, ended], 30)
    for command_id in (started, first, second, requeue, ended):
        (result,) = by_id[command_id]
        assert result["status"] == "SUCCEEDED" and result["conversation_id"] == conversation_id, result
        assert not result["duplicate"] and result["generation"] == generation
    state = _wait_state(env, ref, lambda s: s["status"] == "ENDED")
    assert state["conversation_id"] == conversation_id and len(state["recent_commands"]) == 5

    # The requests 8x8 got: one create, the three messages in order, the end; all valid per the sandbox.
    mine = [r for r in sandbox.requests() if conversation_id in r["path"] or r["operation"].startswith("createcctransaction")]
    kinds = [(r["method"], r["path"].rsplit("/", 1)[-1], (r["body"] or {}).get("text")) for r in mine if r["method"] != "GET"]
    assert kinds[0][:2] == ("POST", "conversations")
    assert [k[2] for k in kinds if k[1] == "messages"] == ["Where is my parcel?", "Thanks, anything else?", "One more question"]
    assert kinds[-1][0] in ("DELETE", "PATCH")
    assert all(r["status"] in (200, 202, 204) for r in mine)
    create = next(r for r in mine if r["method"] == "POST" and r["path"].endswith("/conversations"))
    body = json.dumps(create["body"])
    assert '"connectorRef"' in body and ref in body

    # The transcript, read back at the end.
    transcripts = readers(env["CONNECTOR_TOPIC_TRANSCRIPTS"], env, "ConversationTranscript")
    deadline = time.monotonic() + 20
    while not transcripts.records and time.monotonic() < deadline:
        transcripts.poll(0.3)
    (transcript,) = transcripts.records
    assert transcript["conversation_ref"] == ref and transcript["reason"] == "ENDED"
    texts = [m["text"] for m in transcript["messages"]]
    assert "Where is my parcel?" in texts and "One more question" in texts
    assert any(m["author_type"] == "agent" for m in transcript["messages"])
    if generation == "chat-gateway-v1":
        assert len(transcript["interactions"]) == 2

    # `connector conversations show` answers through the worker.
    shown = subprocess.run(
        [sys.executable, "-m", "connector", "conversations", "show", ref],
        env={**env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "ENDED"
