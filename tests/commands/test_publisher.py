"""The Python API and `connector send` never report a command as published when Kafka did not take it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from connector.client import CommandPublisher, PublishError
from connector.topics import create_topics
from tests.support.env import free_port, settings_of

pytestmark = pytest.mark.kafka


def test_send_exits_non_zero_when_kafka_is_unreachable(settings_env) -> None:
    env = {**settings_env, "CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}  # nothing listens there
    started = time.monotonic()
    sent = subprocess.run(
        [sys.executable, "-m", "connector", "send", "start", "--ref", "r-1", "--name", "Ann"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 1, (sent.stdout, sent.stderr)
    assert sent.stdout == "", "no command id may be printed for a command Kafka never took"
    assert f"error: cannot publish to {env['CONNECTOR_TOPIC_COMMANDS']}" in sent.stderr
    assert "Traceback" not in sent.stderr
    assert time.monotonic() - started < 60


def test_a_publish_kafka_refuses_raises_and_a_start_with_text_gives_both_ids(settings_env) -> None:
    settings = settings_of(settings_env)
    create_topics(settings)
    ref = f"p-{uuid.uuid4().hex[:6]}"
    with CommandPublisher(settings) as publisher:
        started = publisher.start(ref, name="Ann", text="Hello")
        assert started.message_id and started.command_ids == [str(started), started.message_id]
        alone = publisher.start(f"{ref}-2", name="Bob")
        assert alone.message_id is None and alone.command_ids == [str(alone)]

        _refuse_everything(settings_env)
        with pytest.raises(PublishError, match="cannot publish to .*TooLarge"):
            publisher.message(ref, "this one is refused by the topic")

    bulk = CommandPublisher(settings, wait=False)
    try:
        for n in range(5):
            bulk.message(ref, f"#{n}")
        with pytest.raises(PublishError, match="5 of 5 commands were not published"):
            bulk.flush()
    finally:
        bulk._producer.close()


def _refuse_everything(env: dict[str, str]) -> None:
    """chat.commands takes no record from now on (each is larger than its limit)."""
    admin = KafkaAdminClient(**settings_of(env).kafka_python_config())
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, env["CONNECTOR_TOPIC_COMMANDS"], configs={"max.message.bytes": "64"})]
        )
    finally:
        admin.close()
