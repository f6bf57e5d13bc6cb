"""State that stays bounded, on the real broker: compacted changelogs, and ended conversations deleted.

With a short retention, an ended conversation leaves the table, `connector conversations show`
and the changelogs (tombstones), so a worker restarted after it does not load it again; a command
for its ref is then answered as for a ref never started, and its 8x8 id's `refs` entry is gone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from connector.config import Settings
from connector.retention import CHANGELOG_CONFIG
from connector.schemas import AvroCodec
from connector.topics import changelog_topics, create_topics
from tests.commands.conftest import Results
from tests.commands.test_flow import _state, _wait_state
from tests.secure.conftest import secure_env
from tests.support.env import drop_topics, settings_of
from tests.support.topics import TopicReader, read_to_end

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_an_ended_conversation_is_deleted_after_the_retention_time(
    store, start_sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    sandbox = start_sandbox("--exchanges", "0")  # the agent joins and stays
    env = connector_env(sandbox, "chat-gateway-v1", table_store=store, state_retention_s=3, events_hold_s=1)
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    run = uuid.uuid4().hex[:8]
    ended, going = f"gone-{run}", f"kept-{run}"

    started = [publisher.start(ended, name="Ann Example"), publisher.start(going, name="Bob Example")]
    publisher.flush()
    results.wait_for(started, 30)
    conversation_id = _wait_state(env, ended, lambda s: s["status"] == "AGENT_JOINED")["conversation_id"]
    end = publisher.end(ended)
    publisher.flush()
    assert results.wait_for([end], 30)[end][0]["status"] == "SUCCEEDED"
    ended_at = time.monotonic()

    _wait_gone(env, ended, 30)
    assert time.monotonic() - ended_at >= 2  # not before its time (3 s after its last change)
    shown = subprocess.run(
        [sys.executable, "-m", "connector", "conversations", "show", ended], env=env, capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 1 and f"no conversation with ref {ended}" in shown.stderr, shown
    assert _state(env, going)["status"] == "AGENT_JOINED"  # a conversation still going stays

    # Tombstones in the changelogs: the conversation by its ref, its refs entry and interaction count by the 8x8 id.
    _wait_tombstone(env, "conversations", ended)
    _wait_tombstone(env, "refs", conversation_id)
    _wait_tombstone(env, "interactions", conversation_id)
    # A command for the deleted ref is answered as for a ref never started, and leaves no entry.
    late = publisher.message(ended, "Still there?")
    publisher.flush()
    answer = results.wait_for([late], 30)[late][0]
    assert (answer["status"], answer["error_code"]) == ("FAILED", "NOT_STARTED"), answer
    # An event for the deleted 8x8 id is published keyed by the 8x8 id, without a ref, counted from 1 again;
    # with no ref whose expiry would delete it, that count is forgotten the retention time after it.
    late = f"late-{run}"
    _append_webhook(env, conversation_id, late)
    key, event = _chat_events(env, until=late)[-1]
    assert (key, event["conversation_ref"], event["interaction_count"]) == (conversation_id, None, 1)
    _wait_tombstone(env, "interactions", conversation_id, after=1)

    # A worker that recovers the tables (from RocksDB and the changelogs) does not load it again,
    # even with a retention that would keep it.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    start_worker({**env, "CONNECTOR_STATE_RETENTION_S": str(7 * 24 * 3600)})
    assert _wait_state(env, going, lambda s: s["status"] == "AGENT_JOINED")["conversation_id"]
    assert _state(env, ended) is None


def test_changelogs_are_created_compacted_with_the_retention_settings(settings: Settings) -> None:
    create_topics(settings)
    for name, configs in _configs(settings, changelog_topics(settings), CHANGELOG_CONFIG).items():
        assert configs == CHANGELOG_CONFIG, name


def test_a_worker_creates_missing_changelogs_with_the_retention_settings(
    start_sandbox, settings_env, worker_port, start_worker
) -> None:
    """Where nobody ran `topics create` and the worker's principal may create topics, Faust creates the changelogs."""
    sandbox = start_sandbox()
    env = {
        **settings_env,
        "CONNECTOR_WEB_PORT": str(worker_port),
        "CONNECTOR_PLATFORM_GENERATION": "chat-gateway-v1",
        "CONNECTOR_PLATFORM_BASE_URL": sandbox.url,
        "CONNECTOR_PLATFORM_TENANT_ID": "sandbox-tenant",
        "CONNECTOR_PLATFORM_CHANNEL_ID": sandbox.channel("chat-gateway-v1"),
    }
    settings = settings_of(env)
    start_worker(env)
    for name, configs in _configs(settings, changelog_topics(settings), CHANGELOG_CONFIG).items():
        assert configs == CHANGELOG_CONFIG, name


def test_an_existing_changelog_gets_the_settings_it_lacks(settings: Settings) -> None:
    """A deployment made before: its changelogs are compacted and nothing more; `topics create` sets the rest."""
    old = changelog_topics(settings)[0]
    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        admin.create_topics([NewTopic(old, settings.kafka_partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    assert _configs(settings, [old])[old]["min.compaction.lag.ms"] != CHANGELOG_CONFIG["min.compaction.lag.ms"]

    outcome = create_topics(settings)

    assert outcome[old].startswith("exists") and "; set " in outcome[old], outcome[old]
    assert _configs(settings, [old], CHANGELOG_CONFIG)[old] == CHANGELOG_CONFIG
    assert "; set " not in create_topics(settings)[old]  # nothing left to change


def test_topics_create_says_which_acls_the_compaction_settings_need(tmp_path) -> None:
    """A least-privileged principal (no DescribeConfigs, no AlterConfigs) gets the existing topics' outcome
    with the ACLs to grant or the kafka-configs settings, not a failure."""
    env = secure_env(uuid.uuid4().hex[:8], tmp_path, "sasl")
    try:
        create_topics(settings_of(env))
        outcome = create_topics(settings_of(env))
    finally:
        drop_topics([env])
    for name in changelog_topics(settings_of(env)):
        assert "needs DescribeConfigs and AlterConfigs on Topic " + name in outcome[name], outcome[name]
        assert "delete.retention.ms=86400000" in outcome[name]


def _configs(settings: Settings, topics: list[str], expected: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The retention settings of `topics` as the broker describes them, waiting up to 10s for `expected` in each
    (the broker applies a new topic and a config change a moment after it answers)."""
    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(CHANGELOG_CONFIG)) for name in topics]
        deadline = time.monotonic() + 10
        while True:
            described = admin.describe_configs(resources, config_filter="all")["topic"]
            found = {name: {key: entry["value"] for key, entry in configs.items()} for name, configs in described.items()}
            complete = all(len(found.get(name, ())) == len(CHANGELOG_CONFIG) for name in topics)
            if complete and all(expected is None or found[name] == expected for name in topics) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        admin.close()



def test_a_conversation_with_a_command_in_its_lane_is_not_deleted(
    start_sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    """Past its retention time, an ended conversation whose ref has a command running stays until the command
    is answered (its result remembered in the entry), and goes the retention time after that."""
    sandbox = start_sandbox("--exchanges", "0")
    env = connector_env(sandbox, "chat-gateway-v1", state_retention_s=1, command_transcript_on_end="false")
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"busy-{uuid.uuid4().hex[:8]}"
    started = publisher.start(ref, name="Ann Example")
    publisher.flush()
    results.wait_for([started], 30)
    end = publisher.end(ref)
    publisher.flush()
    results.wait_for([end], 30)

    sandbox.faults({"latency_ms": 1500})  # each 8x8 call of the transcript's read-back takes 1.5 s (timeout: 2 s)
    fetch = publisher.fetch_transcript(ref)
    publisher.flush()
    answer = results.wait_for([fetch], 60)[fetch][0]
    assert (answer["status"], answer["error_code"]) == ("SUCCEEDED", None), answer
    _wait_gone(env, ref, 30)


def test_an_event_id_is_remembered_for_the_dedupe_window(start_sandbox, connector_env, start_worker) -> None:
    """A retry within the window is dropped; after it, the id is forgotten (its entry deleted) and published again."""
    env = connector_env(start_sandbox(), "chat-gateway-v1", events_dedupe_window_s=3, events_hold_s=0)
    start_worker(env)
    run = uuid.uuid4().hex[:8]
    conversation_id, event_id = f"conv-{run}", f"event-{run}"

    _append_webhook(env, conversation_id, event_id)
    _append_webhook(env, conversation_id, event_id)  # 8x8's retry
    _append_webhook(env, conversation_id, f"other-{run}")
    assert [event["event_id"] for _, event in _chat_events(env, until=f"other-{run}")] == [event_id, f"other-{run}"]

    deadline = time.monotonic() + 30
    while _last_value(env, "seen-events", event_id) is not None:
        assert time.monotonic() < deadline, "the event id was not forgotten after the dedupe window"
        time.sleep(0.5)
    _append_webhook(env, conversation_id, event_id)
    _append_webhook(env, conversation_id, f"last-{run}")
    published = [event["event_id"] for _, event in _chat_events(env, until=f"last-{run}")]
    assert published == [event_id, f"other-{run}", event_id, f"last-{run}"]

def _wait_gone(env: dict[str, str], ref: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _state(env, ref) is not None:
        assert time.monotonic() < deadline, f"{ref} still in the table after {timeout}s"
        time.sleep(0.2)


def _wait_tombstone(env: dict[str, str], table: str, key: str, timeout: float = 10.0, after: int = 0) -> None:
    """Wait until the last record of `key` in the changelog of `table` is a tombstone, and not one of the first
    `after` tombstones of `key` (the entry was written again since)."""
    deadline = time.monotonic() + timeout
    while (values := _values(env, table, key))[-1] is not None or values.count(None) <= after:
        assert time.monotonic() < deadline, f"no new tombstone of {key} in the {table} changelog after {timeout}s"
        time.sleep(0.2)


def _last_value(env: dict[str, str], table: str, key: str) -> bytes | None:
    """The value of the last record of `key` in the changelog of `table` now (None: a tombstone)."""
    return _values(env, table, key)[-1]


def _values(env: dict[str, str], table: str, key: str) -> list[bytes | None]:
    """The values of the records of `key` in the changelog of `table` now, oldest first (None: a tombstone)."""
    records = [record for record in read_to_end(env, f"{env['CONNECTOR_APP_ID']}-{table}-changelog") if record.key == key.encode()]
    assert records, f"no record of {key} in the {table} changelog"
    return [record.value for record in records]


def _append_webhook(env: dict[str, str], conversation_id: str, event_id: str) -> None:
    """Append a webhook of `conversation_id` to chat.webhooks.raw as the edge does."""
    settings = settings_of(env)
    codec = AvroCodec(settings)
    codec.start_sync("RawWebhook")
    body = json.dumps({"eventType": "ACTIVITY", "conversationId": conversation_id, "data": {"name": "typing"}}).encode()
    record = {
        "kind": "WEBHOOK",
        "generation": "chat-gateway-v1",
        "body": body,
        "headers": {"x-8x8-event-id": event_id},
        "received_at": int(time.time() * 1000),
        "conversation_ref": None,
    }
    producer = KafkaProducer(**settings.kafka_python_config(), acks="all")
    try:
        producer.send(settings.topic_webhooks_raw, key=conversation_id.encode(), value=codec.encode("RawWebhook", record)).get(30)
    finally:
        producer.close()


def _chat_events(env: dict[str, str], until: str, timeout: float = 30) -> list[tuple[str, dict]]:
    """The (key, ChatEvent) records of chat.events from the start, up to the one with event id `until`."""
    settings = settings_of(env)
    codec = AvroCodec(settings)
    reader = TopicReader(env, settings.topic_events, None)
    found: list[tuple[str, dict]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in reader.poll(0.5):
                found.append((record.key.decode(), codec.decode_sync("ChatEvent", record.value)))
                if found[-1][1]["event_id"] == until:
                    return found
    finally:
        reader.close()
    pytest.fail(f"no ChatEvent {until} in {timeout}s")
