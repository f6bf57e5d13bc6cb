"""The worker on the RocksDB table store (what the Helm chart and docker-compose deploy).

Commands and the agent's events write the `conversations` table; after a clean stop the restarted
worker answers from the state it kept on disk: a command delivered again is re-answered without
calling 8x8, and the conversation goes on.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.commands.conftest import Results
from tests.commands.test_flow import _wait_state

pytestmark = pytest.mark.kafka


def test_state_in_rocksdb_survives_a_restart(start_sandbox, connector_env, start_worker, publisher_for, readers) -> None:
    sandbox = start_sandbox("--exchanges", "0")  # the agent joins and stays
    env = connector_env(sandbox, "chat-gateway-v1", table_store="rocksdb://")
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"rocks-{uuid.uuid4().hex[:8]}"

    started = publisher.start(ref, name="Ann Example")
    first = publisher.message(ref, "Where is my parcel?")
    publisher.flush()
    results.wait_for([started, first], 30)
    joined = _wait_state(env, ref, lambda s: s["status"] == "AGENT_JOINED")  # written by the event agent
    assert any(Path(env["CONNECTOR_DATA_DIR"]).rglob("*.sst")) or any(Path(env["CONNECTOR_DATA_DIR"]).rglob("CURRENT"))

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    start_worker(env)

    again = publisher.message(ref, "Where is my parcel?", command_id=first)  # delivered twice
    second = publisher.message(ref, "Any news?")
    publisher.flush()
    by_id = results.wait_for([second], 60)
    results.read_to_end()
    repeat = [r for r in by_id[again] if r["duplicate"]]
    assert len(repeat) == 1 and repeat[0]["status"] == "SUCCEEDED"
    assert by_id[second][0]["status"] == "SUCCEEDED" and not by_id[second][0]["duplicate"]
    state = _wait_state(env, ref, lambda s: second in s["recent_commands"])
    assert state["conversation_id"] == joined["conversation_id"] and state["status"] == "AGENT_JOINED"
    sent = [r["body"]["text"] for r in sandbox.requests() if r["method"] == "POST" and r["path"].endswith("/messages")]
    assert sent == ["Where is my parcel?", "Any news?"]  # the repeated command did not reach 8x8 again
