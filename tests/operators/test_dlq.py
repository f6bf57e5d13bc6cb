"""A failed command as an operator meets it: one WARNING line, `connector dlq tail`, `connector dlq replay`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from connector.client import CommandPublisher
from tests.commands.conftest import Results
from tests.support.env import settings_of

pytestmark = pytest.mark.kafka

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_failed_command_logged_once_tailed_and_replayed(sandbox, connector_env, start_worker, readers, tmp_path: Path) -> None:
    env = connector_env(sandbox, "chat-api-v2", log_format="json", log_level="INFO")
    start_worker(env)
    results: Results = readers(Results, env)
    ref = f"dlq-{uuid.uuid4().hex[:8]}"
    settings = settings_of(env)
    publisher = CommandPublisher(settings)
    command_id, value = publisher.encode(ref, "SendMessage", {"text": "anyone there?", "author_type": "USER"})
    producer = KafkaProducer(**settings.kafka_python_config(), acks="all")
    producer.send(settings.topic_commands, key=ref.encode(), value=value, headers=[("traceparent", TRACEPARENT.encode())]).get(30)
    producer.close()
    assert results.wait_for([command_id], 60)[command_id][0]["error_code"] == "NOT_STARTED"

    warnings = _log_lines(tmp_path / "worker-0.log", lambda line: line["level"] == "WARNING" and line.get("ref") == ref)
    assert len(warnings) == 1, warnings
    (logged,) = warnings
    assert logged["command_id"] == command_id and logged["error_code"] == "NOT_STARTED" and logged["reason"]
    assert logged["traceparent"] == TRACEPARENT and command_id in logged["message"] and "FAILED" in logged["message"]

    tailed = _connector(env, "dlq", "tail", "--json", "--from-beginning", "--timeout", "2")
    assert tailed.returncode == 0, tailed.stderr
    (record,) = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert (record["ref"], record["command_id"], record["error_code"]) == (ref, command_id, "NOT_STARTED")
    assert record["source"]["topic"] == settings.topic_commands and record["exception_class"] == "CommandFailed"
    assert record["headers"] == {"traceparent": TRACEPARENT}  # the original headers, without the error ones

    dry = _connector(env, "dlq", "replay", "--ref", ref, "--dry-run")
    assert dry.returncode == 0 and f"would replay {settings.topic_commands_dlq}[" in dry.stdout
    assert "would replay 1 record(s), skipped 0" in dry.stderr
    assert len(readers(settings.topic_commands, env).read_to_end()) == 1, "a dry run sends nothing"

    started = publisher.start(ref, name="Ann")
    publisher.close()
    assert results.wait_for([started], 60)[started][0]["status"] == "SUCCEEDED"

    same = _connector(env, "dlq", "replay", "--ref", ref)  # same id: never answered from the table, so it runs now
    assert same.returncode == 0 and "replayed 1 record(s)" in same.stderr, same.stderr
    _wait(lambda: len(results.poll(0.3) or results.by_id[command_id]) and len(results.by_id[command_id]) == 2)
    assert results.by_id[command_id][1]["status"] == "SUCCEEDED"

    renewed = _connector(env, "dlq", "replay", "--all", "--new-ids")
    assert renewed.returncode == 0, renewed.stderr
    new_id = re.search(r"command \S+ as (\S+)\)", renewed.stdout).group(1)
    assert new_id != command_id
    assert results.wait_for([new_id], 60)[new_id][0]["status"] == "SUCCEEDED"

    neither = _connector(env, "dlq", "replay")
    assert neither.returncode == 2 and "--ref REF or --all" in neither.stderr


def _connector(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=90)


def _log_lines(path: Path, wanted, wait_s: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + wait_s
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line]
        found = [line for line in lines if wanted(line)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
