"""The connector on the secured listeners (SASL_SSL with SCRAM, mutual TLS), as least-privileged users only:
the connector's user creates the topics and runs the worker, the enterprise publisher's user sends commands
and reads results and events. Each user has exactly the ACLs of devstack/secure-acls.txt (README, ACLs)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from connector.client import CommandPublisher, ResultWatcher
from tests.support.env import settings_of
from tests.secure.conftest import as_user, connector

pytestmark = pytest.mark.kafka


def test_topics_schemas_worker_send_tail_and_publisher(
    listener: str, settings_env: dict[str, str], sandbox, connector_env, start_worker
) -> None:
    created = connector(settings_env, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert f"{settings_env['CONNECTOR_TOPIC_COMMANDS']}: created" in created.stdout
    registered = connector(settings_env, "schemas", "register")
    assert registered.returncode == 0, registered.stderr

    env = connector_env(sandbox, "chat-gateway-v1")  # the worker's settings: the sandbox as 8x8
    start_worker(env)
    publisher = as_user(env, "publisher")
    ref = f"secure-{uuid.uuid4().hex[:8]}"

    sent = connector(publisher, "send", "start", "--ref", ref, "--name", "Ann Example", "--text", "Hello", "--wait")
    assert sent.returncode == 0, sent.stderr
    assert [json.loads(line)["status"] for line in sent.stdout.splitlines()] == ["SUCCEEDED", "SUCCEEDED"]

    # The sandbox's agent takes the conversation: its webhooks come back through the worker as ChatEvents.
    deadline, seen = time.monotonic() + 60, []
    while not seen and time.monotonic() < deadline:
        tail = connector(publisher, "events", "tail", "--from-beginning", "--json", "--timeout", "2")
        assert tail.returncode == 0, tail.stderr
        seen = [event for line in tail.stdout.splitlines() if (event := json.loads(line))["conversation_ref"] == ref]
    assert seen, f"no ChatEvent of {ref} within 60 s"

    with ResultWatcher(settings_of(publisher)) as watcher:
        with CommandPublisher(settings_of(publisher)) as commands:
            ended = commands.end(ref)
        result = watcher.wait([ended], 60)[ended]
    assert (result.command_type, result.status) == ("END_CONVERSATION", "SUCCEEDED")
