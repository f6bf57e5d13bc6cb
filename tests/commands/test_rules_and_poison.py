"""Commands that make no sense, redelivered commands, and poison records: clear answers, the stream goes on."""

from __future__ import annotations

import struct
import uuid

import pytest
from kafka import KafkaProducer

from tests.commands.conftest import Results, settings_of

pytestmark = pytest.mark.kafka


def test_rules_duplicates_and_poison(sandbox, connector_env, start_worker, publisher_for, readers) -> None:
    generation = "chat-api-v2"
    env = connector_env(sandbox, generation)
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    dlq = readers(env["CONNECTOR_TOPIC_COMMANDS_DLQ"], env, None)
    run = uuid.uuid4().hex[:6]
    ref, other, never = f"a-{run}", f"b-{run}", f"never-{run}"
    producer = KafkaProducer(**settings_of(env).kafka_python_config(), acks="all")
    topic = env["CONNECTOR_TOPIC_COMMANDS"]

    ids = {}
    ids["orphan"] = publisher.message(never, "hello?")
    ids["start"] = publisher.start(ref, name="Ann")
    ids["start again"] = publisher.start(ref, name="Ann")
    ids["message"] = publisher.message(ref, "hi")
    ids["redelivered"] = publisher.message(ref, "hi", command_id=ids["message"])
    publisher.flush()
    producer.send(topic, key=ref.encode(), value=b"not avro at all")
    producer.send(topic, key=ref.encode(), value=b"\x00" + struct.pack(">I", 999_999) + b"\x02")  # unknown schema id
    producer.send(topic, key=ref.encode(), value=None)
    producer.flush()
    _, wrong_key = publisher.encode(other, "EndConversation", {"reason": None})
    producer.send(topic, key=b"someone-else", value=wrong_key, headers=[("trace", b"t-1")])
    producer.flush()
    ids["too many properties"] = publisher.start(other, name="Bob", properties={f"k{i}": "v" for i in range(30)})
    ids["assignment on v2"] = publisher.start(f"{other}-2", name="Bob", assignment=("QUEUE", "1"))
    ids["end"] = publisher.end(ref)
    ids["after end"] = publisher.message(ref, "still there?")
    ids["restart ended ref"] = publisher.start(ref, name="Ann")
    ids["transcript"] = publisher.fetch_transcript(ref)
    publisher.flush()

    by_id = results.wait_for(list(ids.values()), 60)

    def only(name: str) -> dict:
        records = by_id[ids[name]]
        assert len(records) == 1 or name in ("message",), (name, records)
        return records[0]

    expect = {
        "orphan": ("FAILED", "NOT_STARTED"),
        "start": ("SUCCEEDED", None),
        "start again": ("FAILED", "ALREADY_ACTIVE"),
        "message": ("SUCCEEDED", None),
        "too many properties": ("FAILED", "INVALID_COMMAND"),
        "assignment on v2": ("FAILED", "INVALID_COMMAND"),
        "end": ("SUCCEEDED", None),
        "after end": ("FAILED", "ENDED"),
        "restart ended ref": ("FAILED", "ENDED"),
        "transcript": ("SUCCEEDED", None),
    }
    for name, (status, code) in expect.items():
        result = only(name)
        assert (result["status"], result["error_code"]) == (status, code), (name, result)
        if status == "FAILED":
            assert result["error_message"], name
    assert "no conversation was started" in only("orphan")["error_message"]
    assert "30" in only("too many properties")["error_message"]

    # The redelivered command id is answered from the table, flagged, and not sent again.
    first, again = by_id[ids["message"]]
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert again["status"] == first["status"] and again["processed_at"] == first["processed_at"]
    sends = [r for r in sandbox.requests() if r["operation"] == "sendmessagetocctransaction"]
    assert [r["body"]["text"] for r in sends] == ["hi"]
    assert not any(r["operation"] == "createcctransaction" and r["status"] != 202 for r in sandbox.requests())
    assert len([r for r in sandbox.requests() if r["operation"] == "createcctransaction"]) == 1

    # Poison records: a FAILED result under <topic>:<partition>:<offset> and the DLQ, original bytes and key.
    poison = [r for records in results.by_id.values() for r in records if r["error_code"] == "UNDECODABLE"]
    assert len(poison) == 3 and all(r["conversation_ref"] == ref and r["command_type"] == "UNKNOWN" for r in poison)
    wrong_key = [r for records in results.by_id.values() for r in records if r["error_code"] == "INVALID_COMMAND" and "key" in r["error_message"]]
    assert len(wrong_key) == 1

    deadline_records = []
    for _ in range(40):
        dlq.poll(0.3)
        deadline_records = dlq.records
        if len(deadline_records) >= 10:
            break
    headers = [dict(r.headers) for r in deadline_records]
    values = [r.value for r in deadline_records]
    assert b"not avro at all" in values and None in values
    for h in headers:
        assert {"__connect.errors.topic", "__connect.errors.partition", "__connect.errors.offset",
                "__connect.errors.exception.class.name", "__connect.errors.exception.message", "connector.error.code"} <= set(h)
        assert h["__connect.errors.topic"].decode() == topic
    codes = sorted(h["connector.error.code"].decode() for h in headers)
    assert codes.count("UNDECODABLE") == 3 and codes.count("INVALID_COMMAND") == 3
    assert {"NOT_STARTED", "ALREADY_ACTIVE", "ENDED"} <= set(codes)
    traced = [h for h in headers if "trace" in h]
    assert traced and traced[0]["trace"] == b"t-1"  # original headers kept
    assert all(b"sandbox-api-secret" not in r.value if r.value else True for r in deadline_records)
    producer.close()

