"""The command agent's failure paths, driven for real: no partition stalls, no offset committed without its
result, one result per command, no state for garbage.

Each test makes Kafka, the registry or 8x8 fail the way the issue describes (a topic that refuses a
record, a registry that answers 503, an 8x8 answer nobody foresaw), on the real broker.
"""

from __future__ import annotations

import json
import signal
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from connector.schemas import load_schema
from tests.commands.conftest import Results, created_by_ref
from tests.commands.proxy import Answer, running_proxy
from tests.support.env import REGISTRY, settings_of
from tests.support.topics import TopicReader, committed, partition_of, wait_consumed

pytestmark = pytest.mark.kafka

GRACE_S = 60


def test_a_hostile_stream_leaves_every_valid_command_answered_once_in_order(
    sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    env = connector_env(sandbox, "chat-api-v2")
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    topic = env["CONNECTOR_TOPIC_COMMANDS"]
    run = uuid.uuid4().hex[:6]
    ref, never = f"h-{run}", f"never-{run}"
    partition = partition_of(ref, int(env["CONNECTOR_KAFKA_PARTITIONS"]))
    limit = settings_of(env).kafka_max_message_bytes
    producer = KafkaProducer(**settings_of(env).kafka_python_config(), acks="all", max_request_size=limit + 65_536)

    # name -> (the record's value, what its FAILED result and DLQ record must say)
    hostile = {
        "garbage": (b"not avro at all", "not in Confluent wire format"),
        "wrong magic byte": (b"\x01" + struct.pack(">I", 1) + b"\x02", "not in Confluent wire format"),
        "unknown schema id": (_framed(987_654_321, b"\x02"), "unknown to the registry"),
        "JSON-Schema-framed": (_framed(_register(f"{topic}-json-value", _JSON_SCHEMA, "JSON"), b'{"a": 1}'), "JSON schema, not Avro"),
        "Protobuf-framed": (_framed(_register(f"{topic}-proto-value", _PROTO_SCHEMA, "PROTOBUF"), b"\x0a\x01x"), "not an Avro schema"),
        "unknown command type": (_unknown_command(topic, ref), "not a valid ConversationCommand record"),
        "just under the size limit": (b"\x07" * (limit - 2_000), "not in Confluent wire format"),
    }
    valid = [
        ("start", lambda: publisher.start(ref, name="Ann")),
        *[(f"message {n}", lambda n=n: publisher.message(ref, f"{ref} #{n}")) for n in range(3)],
        ("end", lambda: publisher.end(ref)),
    ]
    ids: dict[str, str] = {}
    offsets: dict[str, int] = {}
    bad = list(hostile.items())
    for position in range(max(len(valid), len(bad))):  # one partition: valid and hostile records alternate
        if position < len(valid):
            name, publish = valid[position]
            ids[name] = publish()
            publisher.flush()
        if position < len(bad):
            name, (value, _) = bad[position]
            offsets[name] = producer.send(topic, key=ref.encode(), value=value, partition=partition).get(30).offset
    producer.close()
    orphan = publisher.message(never, "anyone?")
    publisher.message(never, "anyone?", command_id=orphan)  # the same command again
    publisher.flush()

    poison_ids = {name: f"{topic}:{partition}:{offset}" for name, offset in offsets.items()}
    by_id = results.wait_for([*ids.values(), orphan, *poison_ids.values()], 90)

    answered = [by_id[ids[name]] for name, _ in valid]
    assert all(len(records) == 1 and records[0]["status"] == "SUCCEEDED" for records in answered), answered
    order = [records[0]["processed_at"] for records in answered]
    assert order == sorted(order), "the valid commands were not run in order"
    assert [(r["status"], r["error_code"]) for r in by_id[orphan]] == [("FAILED", "NOT_STARTED")] * 2

    for name, command_id in poison_ids.items():
        (result,) = by_id[command_id]
        assert (result["status"], result["error_code"]) == ("FAILED", "UNDECODABLE"), (name, result)
        assert hostile[name][1] in result["error_message"], (name, result["error_message"])

    dlq = _dlq_by_source(readers(env["CONNECTOR_TOPIC_COMMANDS_DLQ"], env, None), len(hostile) + 2)
    for name, offset in offsets.items():
        record = dlq[(partition, offset)]
        assert record.value == hostile[name][0], f"{name}: the DLQ must keep the original bytes"
        headers = dict(record.headers)
        assert headers["connector.error.code"] == b"UNDECODABLE"
        assert hostile[name][1] in headers["__connect.errors.exception.message"].decode()
        assert headers["__connect.errors.topic"].decode() == topic

    changelog = readers(f"{env['CONNECTOR_APP_ID']}-conversations-changelog", env, None)
    changelog.read_to_end()  # its result is out, so a table write of that command would be in by now
    assert never.encode() not in {r.key for r in changelog.records}, "a command for a ref never started made a table entry"

    wait_consumed(env, topic)
    stopping = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(GRACE_S) == 0, "the worker must stop cleanly within its grace period"
    print(f"hostile stream: {len(hostile)} poison records, lag 0, stopped in {time.monotonic() - stopping:.1f}s")


def test_a_dlq_copy_the_dlq_cannot_take_goes_there_without_its_body(
    sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    env = connector_env(sandbox, "chat-api-v2")
    _set_topic_config(env, env["CONNECTOR_TOPIC_COMMANDS_DLQ"], {"max.message.bytes": "20000"})
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    topic = env["CONNECTOR_TOPIC_COMMANDS"]
    ref = f"big-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(**settings_of(env).kafka_python_config(), acks="all")
    big = b"\x00" + b"\xfe" * 100_000
    offset = producer.send(topic, key=ref.encode(), value=big, partition=1).get(30).offset
    producer.close()
    started = publisher.start(ref, name="Ann")
    publisher.flush()

    by_id = results.wait_for([started, f"{topic}:1:{offset}"], 60)
    assert by_id[started][0]["status"] == "SUCCEEDED"
    (record,) = _dlq_by_source(readers(env["CONNECTOR_TOPIC_COMMANDS_DLQ"], env, None), 1).values()
    headers = dict(record.headers)
    assert record.value is None and record.key == ref.encode()
    assert headers["connector.error.code"] == b"UNDECODABLE"
    assert headers["__connect.errors.offset"] == str(offset).encode() and headers["__connect.errors.partition"] == b"1"
    assert headers["connector.source.size"] == str(len(big) + len(ref)).encode()
    assert b"TooLarge" in headers["connector.dlq.body.omitted"]


def test_a_registry_blip_makes_the_partition_wait_instead_of_failing_the_command(
    sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    with running_proxy(REGISTRY.split("/apis/")[0]) as registry:
        env = connector_env(sandbox, "chat-gateway-v1", schema_registry_url=f"{registry.url}/apis/ccompat/v7")
        topic = env["CONNECTOR_TOPIC_COMMANDS"]
        start_worker(env)
        publisher = publisher_for(env)
        results: Results = readers(Results, env)
        # A newer compatible version of the command schema: its id is new to the worker.
        newer = load_schema("ConversationCommand")
        newer = {**newer, "fields": [*newer["fields"], {"name": "origin", "type": ["null", "string"], "default": None}]}
        schema_id = _register(f"{topic}-value", json.dumps(newer), "AVRO")
        failing_until = time.monotonic() + 4
        registry.rule = lambda method, path: (
            Answer(503, b'{"error_code": 50302, "message": "unavailable"}')
            if path.startswith(f"/apis/ccompat/v7/schemas/ids/{schema_id}") and time.monotonic() < failing_until
            else None
        )
        ref = f"blip-{uuid.uuid4().hex[:6]}"
        command_id = str(uuid.uuid4())
        record = {
            "command_id": command_id,
            "conversation_ref": ref,
            "created_at": int(time.time() * 1000),
            "command": ("io.kafka8x8.chat.StartConversation", {"customer": {"name": "Ann"}}),
            "origin": "crm",
        }
        producer = KafkaProducer(**settings_of(env).kafka_python_config(), acks="all")
        producer.send(topic, key=ref.encode(), value=_framed(schema_id, _avro(newer, record))).get(30)
        after = publisher.message(ref, "hello")
        publisher.flush()
        producer.close()

        by_id = results.wait_for([command_id, after], 60)
        assert [(r["status"], r["error_code"]) for r in by_id[command_id]] == [("SUCCEEDED", None)]
        assert by_id[after][0]["status"] == "SUCCEEDED"
        assert len(registry.overridden) >= 2, "the worker should have asked the registry again"


def test_a_result_that_cannot_be_published_is_not_acked(
    sandbox, connector_env, start_worker, publisher_for, readers, tmp_path: Path
) -> None:
    env = connector_env(sandbox, "chat-api-v2")
    results_topic = env["CONNECTOR_TOPIC_COMMAND_RESULTS"]
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"r-{uuid.uuid4().hex[:6]}"
    started = _start_refused_by(results_topic, env, worker, publisher, ref, tmp_path)  # every result is too large
    results.read_to_end()  # the worker has stopped: nothing more comes
    assert started not in results.by_id
    offsets = committed(env, env["CONNECTOR_TOPIC_COMMANDS"])
    partition = partition_of(ref, int(env["CONNECTOR_KAFKA_PARTITIONS"]))
    assert offsets.get(partition, 0) == 0, "the command's offset was committed although its result was never stored"

    _reset_topic_config(env, results_topic, ["max.message.bytes"])
    start_worker(env)
    by_id = results.wait_for([started], 60)
    assert [r["status"] for r in by_id[started]] == ["SUCCEEDED"]
    assert len(created_by_ref(sandbox, "chat-api-v2")[ref]) == 1, "the replay created the conversation again"


@pytest.mark.parametrize(
    ("generation", "broken", "answer", "cause"),
    [
        ("chat-api-v2", "/messages", Answer(200, b"<html>maintenance</html>", "text/html"), "not JSON"),
        ("chat-gateway-v1", "/participants", Answer(200, b"[1, 2]"), "a JSON list where an object was expected"),
    ],
)
def test_an_end_whose_transcript_read_fails_has_exactly_one_result(
    generation, broken, answer, cause, sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    with running_proxy(sandbox.url) as platform:
        env = connector_env(sandbox, generation, platform_base_url=platform.url, command_max_attempts=1)
        platform.rule = lambda method, path: answer if method == "GET" and path.split("?")[0].endswith(broken) else None
        start_worker(env)
        publisher = publisher_for(env)
        results: Results = readers(Results, env)
        ref = f"t-{uuid.uuid4().hex[:6]}"
        ids = [publisher.start(ref, name="Ann"), publisher.message(ref, "hi"), publisher.end(ref)]
        publisher.flush()
        by_id = results.wait_for(ids, 60)
        transcripts = readers(env["CONNECTOR_TOPIC_TRANSCRIPTS"], env, "ConversationTranscript")
        deadline = time.monotonic() + 20
        while not transcripts.records and time.monotonic() < deadline:
            transcripts.poll(0.5)
        results.read_to_end()  # the transcript comes after the end's result: a second result would be in by now
        assert [[(r["status"], r["error_code"]) for r in by_id[i]] for i in ids] == [[("SUCCEEDED", None)]] * 3
        (transcript,) = transcripts.records
        assert transcript["conversation_ref"] == ref and transcript["reason"] == "ENDED"
        assert cause in transcript["error"] and transcript["messages"] == [] and transcript["participants"] == []
        assert platform.overridden, "the broken answer was never asked for"


def test_the_mapping_is_stored_before_the_start_is_remembered(
    sandbox, connector_env, start_worker, publisher_for, readers, tmp_path: Path
) -> None:
    env = connector_env(sandbox, "chat-gateway-v1")
    raw = env["CONNECTOR_TOPIC_WEBHOOKS_RAW"]
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"m-{uuid.uuid4().hex[:6]}"
    started = _start_refused_by(raw, env, worker, publisher, ref, tmp_path)  # the mapping record cannot be stored

    changelog = readers(f"{env['CONNECTOR_APP_ID']}-conversations-changelog", env, None)
    changelog.read_to_end()  # the worker has stopped: nothing more comes
    entries = [json.loads(r.value) for r in changelog.records if r.key == ref.encode()]
    assert entries and all(started not in entry.get("recent_commands", {}) for entry in entries), entries

    _reset_topic_config(env, raw, ["max.message.bytes"])
    start_worker(env)
    by_id = results.wait_for([started], 60)
    assert [r["status"] for r in by_id[started]] == ["SUCCEEDED"]
    (conversation_id,) = created_by_ref(sandbox, "chat-gateway-v1")[ref]  # looked up by connectorRef, not created again
    assert by_id[started][0]["conversation_id"] == conversation_id
    message = publisher.message(ref, "are you there?")
    publisher.flush()
    results.wait_for([message], 30)
    events = readers(env["CONNECTOR_TOPIC_EVENTS"], env, "ChatEvent")
    deadline = time.monotonic() + 30
    mine: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not any(e["event_type"] == "MESSAGE" for e in mine):
        events.poll(0.5)
        mine = [e for e in events.records if e["conversation_id"] == conversation_id]
    assert mine and all(e["conversation_ref"] == ref for e in mine), mine


# --- helpers ------------------------------------------------------------------------------------------

_JSON_SCHEMA = '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"a": {"type": "integer"}}}'
_PROTO_SCHEMA = 'syntax = "proto3";\nmessage M { string a = 1; }\n'


def _start_refused_by(topic: str, env: dict[str, str], worker: Any, publisher: Any, ref: str, tmp_path: Path) -> str:
    """Make `topic` refuse every record, publish a start for `ref`, and check that the worker stops, saying
    why and that it commits nothing, rather than go on without that record; the start's command id."""
    _set_topic_config(env, topic, {"max.message.bytes": "64"})
    started = publisher.start(ref, name="Ann")
    publisher.flush()
    assert worker.wait(GRACE_S) != 0, f"the worker must stop when {topic} refuses a record for good"
    log = (tmp_path / "worker-0.log").read_text()
    assert f"{topic} refused a record for good" in log and "without committing" in log
    return started


def _framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body


def _register(subject: str, schema: str, schema_type: str) -> int:
    """Register a schema of any type straight through the registry's Confluent API; its id."""
    payload: dict[str, Any] = {"schema": schema}
    if schema_type != "AVRO":
        payload["schemaType"] = schema_type
    answer = httpx.post(f"{REGISTRY}/subjects/{subject}/versions", json=payload, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def _avro(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def _unknown_command(topic: str, ref: str) -> bytes:
    """A command whose union holds a record type this connector does not know, under its own subject."""
    schema = load_schema("ConversationCommand")
    command = next(f for f in schema["fields"] if f["name"] == "command")
    transfer = {"type": "record", "name": "TransferConversation", "fields": [{"name": "queue", "type": "string"}]}
    newer = {**schema, "fields": [f if f is not command else {**command, "type": [*command["type"], transfer]} for f in schema["fields"]]}
    schema_id = _register(f"{topic}-future-value", json.dumps(newer), "AVRO")
    record = {
        "command_id": str(uuid.uuid4()),
        "conversation_ref": ref,
        "created_at": int(time.time() * 1000),
        "command": ("io.kafka8x8.chat.TransferConversation", {"queue": "q1"}),
    }
    return _framed(schema_id, _avro(newer, record))


def _dlq_by_source(reader: TopicReader, count: int) -> dict[tuple[int, int], Any]:
    """The DLQ records by the source partition and offset in their headers, once `count` are there."""
    deadline = time.monotonic() + 30
    while len(reader.records) < count and time.monotonic() < deadline:
        reader.poll(0.5)
    return {
        (int(dict(r.headers)["__connect.errors.partition"]), int(dict(r.headers)["__connect.errors.offset"])): r
        for r in reader.records
    }


def _admin(env: dict[str, str]) -> KafkaAdminClient:
    return KafkaAdminClient(**settings_of(env).kafka_python_config(), request_timeout_ms=30_000)


def _set_topic_config(env: dict[str, str], topic: str, configs: dict[str, str]) -> None:
    admin = _admin(env)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        admin.close()


def _reset_topic_config(env: dict[str, str], topic: str, keys: list[str]) -> None:
    admin = _admin(env)
    try:
        admin.reset_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={key: None for key in keys})])
    finally:
        admin.close()
