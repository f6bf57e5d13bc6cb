"""`connector send ... --wait` as a person runs it: one JSON result per command, exit 1 when it FAILED."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.kafka


def _send(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", "send", *args, "--wait", "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_send_wait_prints_the_result_and_exits_by_its_status(sandbox, connector_env, start_worker) -> None:
    env = connector_env(sandbox, "chat-gateway-v1")
    start_worker(env)
    ref = f"cli-{uuid.uuid4().hex[:8]}"

    started = _send(env, "start", "--ref", ref, "--name", "Ann Example", "--email", "ann@example.com", "--text", "Hello")
    assert started.returncode == 0, started.stderr
    start, first = (json.loads(line) for line in started.stdout.splitlines())  # --text: the start, then a message
    assert (start["command_type"], first["command_type"]) == ("START_CONVERSATION", "SEND_MESSAGE")
    assert start["status"] == first["status"] == "SUCCEEDED" and start["conversation_ref"] == ref
    assert first["conversation_id"] == start["conversation_id"] is not None

    never = _send(env, "message", "--ref", f"{ref}-never-started", "--text", "anyone?")
    assert never.returncode == 1
    failed = json.loads(never.stdout)
    assert failed["status"] == "FAILED" and failed["error_code"] == "NOT_STARTED"
    assert "no conversation was started" in failed["error_message"]

    ended = _send(env, "end", "--ref", ref)
    assert ended.returncode == 0, ended.stderr
    assert json.loads(ended.stdout)["command_type"] == "END_CONVERSATION"

    after = _send(env, "message", "--ref", ref, "--text", "still there?")
    assert after.returncode == 1 and json.loads(after.stdout)["error_code"] == "ENDED"
