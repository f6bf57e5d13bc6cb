"""`connector platform setup` and `check` against the sandbox and the real Kafka broker and registry.

`setup` is run twice per generation (the second changes nothing); `check` passes on a deployment set up
that way, and fails with the right line for each prerequisite broken in turn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from connector.config import Generation
from connector.platform_setup import checks
from connector.sandbox import RunningSandbox, SandboxConfig, run_in_thread
from connector.sandbox.state import Webhook
from connector.topics import create_topics, partition_counts, topic_specs
from tests.support.env import free_port, settings_of

PUBLIC_URL = "http://connector.example:6066"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with run_in_thread(SandboxConfig(port=0, tenant="acme", api_key="key", api_secret="secret", retry_max_attempts=1)) as running:
        yield running


@pytest.fixture(params=list(Generation), ids=lambda g: g.value)
def env(request: pytest.FixtureRequest, settings_env: dict[str, str], sandbox: RunningSandbox) -> dict[str, str]:
    """An isolated deployment on this generation of the sandbox, its topics created, no channel yet."""
    env = {
        **settings_env,
        "CONNECTOR_PLATFORM_GENERATION": request.param.value,
        "CONNECTOR_PLATFORM_BASE_URL": sandbox.url,
        "CONNECTOR_PLATFORM_TENANT_ID": "acme",
        "CONNECTOR_PLATFORM_API_KEY": "key",
        "CONNECTOR_PLATFORM_API_SECRET": "secret",
        "CONNECTOR_WEB_PUBLIC_URL": f"{PUBLIC_URL}/{settings_env['CONNECTOR_APP_ID']}",
    }
    settings = settings_of(env)
    create_topics(settings)
    names = [spec.name for spec in topic_specs(settings)]
    deadline = time.monotonic() + 30
    while len(partition_counts(settings, names)) < len(names) and time.monotonic() < deadline:
        time.sleep(0.2)  # until every broker's metadata has them
    return env


def test_setup_twice_changes_nothing_the_second_time(env: dict[str, str], sandbox: RunningSandbox) -> None:
    dry = _connector(env, "platform", "setup", "--queue", "101", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create a web-hook" in dry.stdout and "would create a channel" in dry.stdout
    assert "CONNECTOR_PLATFORM_CHANNEL_ID" not in dry.stdout
    before = len(sandbox.sandbox.store.webhooks), len(sandbox.sandbox.store.channels)

    first = _connector(env, "platform", "setup", "--queue", "101")
    assert first.returncode == 0, first.stderr
    assert "created web-hook" in first.stdout and "created channel" in first.stdout
    channel_id = first.stdout.strip().splitlines()[-1].removeprefix("CONNECTOR_PLATFORM_CHANNEL_ID=")
    after = len(sandbox.sandbox.store.webhooks), len(sandbox.sandbox.store.channels)
    assert after == (before[0] + 1, before[1] + 1)

    again = _connector(env, "platform", "setup", "--queue", "101")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and "already" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == f"CONNECTOR_PLATFORM_CHANNEL_ID={channel_id}"
    assert (len(sandbox.sandbox.store.webhooks), len(sandbox.sandbox.store.channels)) == after

    channel = sandbox.sandbox.store.channels[channel_id]
    webhook = sandbox.sandbox.store.webhooks[channel.webhook_id]
    assert webhook.uri == env["CONNECTOR_WEB_PUBLIC_URL"] + "/webhooks/8x8" and channel.queue_id == "101"

    ok = _connector({**env, "CONNECTOR_PLATFORM_CHANNEL_ID": channel_id}, "platform", "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [line.split()[0] for line in ok.stdout.splitlines()] == ["OK"] * 7


def test_setup_without_a_queue_creates_nothing(env: dict[str, str], sandbox: RunningSandbox) -> None:
    before = len(sandbox.sandbox.store.webhooks)
    answer = _connector(env, "platform", "setup")
    assert answer.returncode == 1 and "--queue" in answer.stderr
    assert len(sandbox.sandbox.store.webhooks) == before


def test_check_fails_for_each_broken_prerequisite(env: dict[str, str], sandbox: RunningSandbox) -> None:
    store = sandbox.sandbox.store
    generation = Generation(env["CONNECTOR_PLATFORM_GENERATION"])
    hook = _webhook(sandbox, generation, env["CONNECTOR_WEB_PUBLIC_URL"] + "/webhooks/8x8")
    elsewhere = _webhook(sandbox, generation, "https://elsewhere.example/webhooks/8x8")
    good = sandbox.sandbox.add_channel(generation, "good", hook.id, "101")
    stray = sandbox.sandbox.add_channel(generation, "stray", elsewhere.id, "101")
    orphan = sandbox.sandbox.add_channel(generation, "orphan", "999999", "101")
    env = {**env, "CONNECTOR_PLATFORM_CHANNEL_ID": good.id}
    assert [c for c in checks(settings_of(env)) if not c.ok] == []

    def failed(**overrides: str) -> dict[str, str]:
        return {c.name: c.detail for c in checks(settings_of({**env, **overrides})) if not c.ok}

    assert failed(CONNECTOR_PLATFORM_API_KEY="wrong").keys() == {"8x8 credentials"}
    assert "CONNECTOR_PLATFORM_API_KEY" in failed(CONNECTOR_PLATFORM_API_KEY="wrong")["8x8 credentials"]
    assert failed(CONNECTOR_PLATFORM_CHANNEL_ID="") == {"channel": "CONNECTOR_PLATFORM_CHANNEL_ID is empty (`connector platform setup` prints it)"}
    assert failed(CONNECTOR_PLATFORM_CHANNEL_ID="424242") == {"channel": "8x8 has no channel 424242 (CONNECTOR_PLATFORM_CHANNEL_ID)"}
    assert failed(CONNECTOR_PLATFORM_CHANNEL_ID=stray.id) == {
        "web-hook": f"web-hook {elsewhere.id} points at https://elsewhere.example/webhooks/8x8, not at {hook.uri}"
    }
    assert failed(CONNECTOR_PLATFORM_CHANNEL_ID=orphan.id) == {
        "web-hook": f"channel {orphan.id} is bound to web-hook 999999, which 8x8 does not have"
    }
    assert "CONNECTOR_WEB_PUBLIC_URL is not set" in failed(CONNECTOR_WEB_PUBLIC_URL="")["web-hook"]
    keys = [c for c in checks(settings_of(env), kid="no-such-key") if not c.ok]
    assert [c.name for c in keys] == ["signing keys"] and "answered HTTP 404" in keys[0].detail
    assert failed(CONNECTOR_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}").keys() == {"Kafka"}
    assert failed(CONNECTOR_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{free_port()}").keys() == {"Schema Registry"}
    missing = failed(CONNECTOR_TOPIC_TRANSCRIPTS=env["CONNECTOR_TOPIC_TRANSCRIPTS"] + ".absent")
    assert missing == {"topics": f"missing: {env['CONNECTOR_TOPIC_TRANSCRIPTS']}.absent (`connector topics create`)"}
    assert failed(CONNECTOR_KAFKA_PARTITIONS="2")["topics"].startswith("expected 2 partitions (CONNECTOR_KAFKA_PARTITIONS): ")
    del store.channels[orphan.id], store.channels[stray.id]


def test_check_prints_one_line_per_check_and_exits_1(env: dict[str, str]) -> None:
    answer = _connector({**env, "CONNECTOR_PLATFORM_CHANNEL_ID": "424242"}, "platform", "check")
    assert answer.returncode == 1
    lines = answer.stdout.splitlines()
    assert len(lines) == 6 and lines[1].startswith("FAILED channel") and "424242" in lines[1]
    assert "secret" not in answer.stdout + answer.stderr


def _webhook(sandbox: RunningSandbox, generation: Generation, uri: str) -> Webhook:
    """A web-hook in the sandbox's store (made off its loop, so without the WEB_HOOK_VERIFY it would post)."""
    webhook = Webhook(sandbox.sandbox.store.new_number(), generation, uri, uri, "v2.0")
    sandbox.sandbox.store.webhooks[webhook.id] = webhook
    return webhook


def _connector(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )

