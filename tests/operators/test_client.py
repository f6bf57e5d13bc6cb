"""The Python API as enterprise code uses it: typed results, the asyncio publisher, an unreachable broker."""

from __future__ import annotations

import datetime
import uuid

import pytest

from connector.client import AsyncCommandPublisher, CommandPublisher, CommandResult, PublishError, ResultWatcher
from tests.support.env import free_port, settings_of

pytestmark = pytest.mark.kafka


async def test_async_publisher_runs_a_conversation_and_results_are_typed(sandbox, connector_env, start_worker) -> None:
    env = connector_env(sandbox, "chat-gateway-v1")
    start_worker(env)
    settings = settings_of(env)
    ref = f"async-{uuid.uuid4().hex[:8]}"
    with ResultWatcher(settings) as watcher:
        async with AsyncCommandPublisher(settings) as publisher:
            started = await publisher.start(ref, name="Ann", text="Where is my parcel?")
            ended = await publisher.end(ref)
        results = watcher.wait([*started.command_ids, ended], 60)
    start, message, end = (results[command_id] for command_id in [*started.command_ids, ended])
    assert all(isinstance(result, CommandResult) for result in (start, message, end))
    assert (start.command_type, message.command_type, end.command_type) == ("START_CONVERSATION", "SEND_MESSAGE", "END_CONVERSATION")
    assert not any(result.failed for result in (start, message, end)) and start.status == "SUCCEEDED"
    assert start.conversation_id and start.conversation_id == end.conversation_id and start.conversation_ref == ref
    assert isinstance(start.processed_at, datetime.datetime)
    assert start.to_json()["processed_at"] == round(start.processed_at.timestamp() * 1000)


async def test_async_publisher_without_waiting_flushes_and_says_what_was_not_taken(settings) -> None:
    from connector.topics import create_topics

    create_topics(settings)
    publisher = AsyncCommandPublisher(settings, wait=False)
    await publisher.open()
    ids = [await publisher.message(f"bulk-{n % 3}", f"#{n}") for n in range(20)]
    await publisher.close()  # flushes: every command acknowledged, or PublishError
    assert len(set(ids)) == 20
    with pytest.raises(RuntimeError, match="not open"):
        await publisher.message("bulk-0", "after close")


def test_the_publisher_raises_when_the_broker_is_unreachable(settings_env: dict[str, str]) -> None:
    with pytest.raises(PublishError, match="cannot publish to .*nothing listens at 127.0.0.1"):
        CommandPublisher(_nowhere(settings_env))


async def test_the_async_publisher_raises_when_the_broker_is_unreachable(settings_env: dict[str, str]) -> None:
    with pytest.raises(PublishError, match="cannot publish to .*nothing listens at 127.0.0.1"):
        async with AsyncCommandPublisher(_nowhere(settings_env)):
            pass


def _nowhere(env: dict[str, str]):
    """Settings whose bootstrap address has no broker behind it."""
    return settings_of({**env, "CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})


def test_the_cli_names_the_schema_registry_not_kafka_when_the_registry_is_away(settings_env: dict[str, str]) -> None:
    import os
    import subprocess
    import sys

    from connector.topics import create_topics

    create_topics(settings_of(settings_env))
    registry = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    env = {**os.environ, **settings_env, "CONNECTOR_SCHEMA_REGISTRY_URL": registry}
    sent = subprocess.run(
        [sys.executable, "-m", "connector", "send", "start", "--ref", "r1", "--name", "Ann"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 1, sent.stderr
    assert f"error: cannot send: Schema Registry at {registry}: " in sent.stderr
    assert "Kafka at" not in sent.stderr
