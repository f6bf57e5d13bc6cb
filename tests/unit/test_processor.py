"""The command processor, in-process: lanes and order, in-order acks, poison records, halting, revocation."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from tests.unit.fakes import Worker, end, send, start


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Worker:
    return Worker(monkeypatch)


async def until(condition, timeout: float = 2.0) -> None:
    """Wait (yielding to the lanes) until `condition()` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


async def test_commands_of_a_ref_run_in_order_and_refs_in_parallel(worker: Worker) -> None:
    await worker.run(start("s1", "r1"), start("s2", "r2"))
    worker.platform.gate["send"] = gate = asyncio.Event()
    for record in (send("a", "r1", "first"), send("b", "r1", "second"), send("c", "r2", "other")):
        await worker.submit(record)
    await until(lambda: len(worker.platform.made("send")) == 2)
    # r2's send is under way while r1's first one is; r1's second waits for its first.
    assert worker.platform.made("send") == [("cid-1", "first"), ("cid-2", "other")]
    gate.set()
    await worker.processor.lanes.join()
    assert worker.platform.made("send") == [("cid-1", "first"), ("cid-2", "other"), ("cid-1", "second")]
    assert worker.acked == [0, 1, 2, 3, 4]


async def test_offsets_are_acked_in_order_when_a_later_record_finishes_first(worker: Worker) -> None:
    await worker.run(start("s1", "r1"), start("s2", "r2"))
    worker.platform.gate["send"] = gate = asyncio.Event()
    await worker.submit(send("a", "r1"))  # offset 2: held at 8x8
    await worker.submit(start("s3", "r3"))  # offset 3: finishes first
    await until(lambda: not worker.processor.lanes.holds("r3"))  # answered and done
    assert worker.result_of("s3")["status"] == "SUCCEEDED"
    assert worker.acked == [0, 1]
    gate.set()
    await worker.processor.lanes.join()
    assert worker.acked == [0, 1, 2, 3]


async def test_a_record_read_again_in_the_same_generation_is_not_run_again(worker: Worker) -> None:
    await worker.submit(start("s1", "r1"), offset=0)
    await worker.submit(start("s1", "r1"), offset=0)
    await worker.processor.lanes.join()
    assert worker.platform.made("create") == ["r1"]
    assert len(worker.results()) == 1
    assert worker.acked == [0, 0]


async def test_an_undecodable_record_gets_a_failed_result_and_a_dlq_copy_and_its_offset_goes(worker: Worker) -> None:
    await worker.submit(b"\x00garbage", key=b"r1", offset=5)
    answer = worker.result_of("chat.commands:0:5")
    assert (answer["status"], answer["error_code"], answer["command_type"], answer["conversation_ref"]) == (
        "FAILED",
        "UNDECODABLE",
        "UNKNOWN",
        "r1",
    )
    (copy,) = worker.dlq()
    assert (copy.key, copy.value) == (b"r1", b"\x00garbage")
    assert dict(copy.headers or [])["__connect.errors.exception.class.name"] == b"SchemaError"
    assert worker.acked == [5]
    assert worker.platform.calls == []


async def test_a_command_keyed_by_another_ref_is_invalid_and_answered_under_its_key(worker: Worker) -> None:
    await worker.submit(start("s1", "r1"), key=b"other", offset=0)
    (answer,) = worker.results()
    assert (answer["command_id"], answer["error_code"]) == ("s1", "INVALID_COMMAND")
    (result_record,) = worker.connector.appender.on(worker.settings.topic_command_results)
    assert result_record.key == b"other"
    assert len(worker.dlq()) == 1 and worker.acked == [0]


async def test_a_bug_while_running_answers_the_command_once_and_the_lane_goes_on(worker: Worker) -> None:
    await worker.run(start("s1", "r1"))
    worker.platform.fail["send"].append(RuntimeError("a bug"))  # type: ignore[arg-type]
    await worker.run(send("a", "r1", "one"), send("b", "r1", "two"))
    answer = worker.result_of("a")
    assert (answer["status"], answer["error_code"]) == ("FAILED", "INTERNAL_ERROR")
    assert "RuntimeError: a bug" in answer["error_message"]
    assert worker.result_of("b")["status"] == "SUCCEEDED"
    assert len(worker.dlq()) == 1 and worker.acked == [0, 1, 2]


async def test_a_result_kafka_refuses_for_good_halts_the_worker_without_releasing_the_offset(worker: Worker) -> None:
    worker.connector.appender.refuse[worker.settings.topic_command_results].append(TopicAuthorizationFailedError())
    first = await worker.submit(start("s1", "r1"))
    await worker.processor.lanes.join()
    await until(lambda: worker.connector.app.crashed)
    assert worker.acked == [] and first.message.acked  # handed back to Faust unacked
    assert worker.processor.ownership.halted
    # Nothing more goes to 8x8 while the worker stops.
    await worker.run(start("s2", "r2"))
    assert worker.platform.made("create") == ["r1"]
    assert worker.acked == [] and len(worker.connector.app.crashed) == 1


async def test_a_poison_record_whose_dlq_copy_kafka_refuses_gets_one_result_after_the_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DLQ copy goes before the result: a restart after Kafka refused it writes both once, never a second result."""
    worker = Worker(monkeypatch)
    worker.connector.appender.refuse[worker.settings.topic_commands_dlq].append(TopicAuthorizationFailedError())
    await worker.submit(b"\x00garbage", key=b"r1", offset=5)
    await until(lambda: worker.connector.app.crashed)
    assert worker.acked == []
    restarted = Worker(monkeypatch)  # the same record again, from its uncommitted offset
    await restarted.submit(b"\x00garbage", key=b"r1", offset=5)
    assert [answer["command_id"] for answer in worker.results() + restarted.results()] == ["chat.commands:0:5"]
    assert len(worker.dlq() + restarted.dlq()) == 1 and restarted.acked == [5]


async def test_a_dlq_copy_kafka_refuses_for_good_halts_too(worker: Worker) -> None:
    worker.connector.appender.refuse[worker.settings.topic_commands_dlq].append(TopicAuthorizationFailedError())
    await worker.submit(b"garbage", key=b"r1")
    await until(lambda: worker.connector.app.crashed)
    assert worker.acked == []


async def test_an_end_revoked_before_its_transcript_is_read_publishes_the_transcript_as_missing(worker: Worker) -> None:
    """The end's result is out; the partition's next owner answers the end from the table and reads nothing
    back, so this worker says that the transcript is missing rather than nothing."""
    await worker.run(start("s1", "r1"))
    worker.platform.gate["end"] = gate = asyncio.Event()
    ending = await worker.submit(end("e1", "r1"))
    await until(lambda: worker.platform.made("end"))
    worker.connector.app.consumer_generation_id = 2
    worker.processor.revoke()
    gate.set()
    await worker.processor.lanes.join()
    assert worker.result_of("e1")["status"] == "SUCCEEDED" and worker.platform.made("read_back") == []
    (transcript,) = worker.connector.appender.on(worker.settings.topic_transcripts)
    assert "moved to another worker" in transcript.value["error"] and transcript.value["command_id"] == "e1"
    assert ending.message.acked is False  # its offset is the next owner's to commit


async def test_a_revocation_hands_back_commands_not_started_and_fences_calls_not_made(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(monkeypatch, command_max_in_flight=1)
    await worker.run(start("s1", "r1"), start("s2", "r2"))
    worker.platform.gate["send"] = gate = asyncio.Event()
    running = await worker.submit(send("a", "r1", "running"))  # offset 2: takes the one 8x8 slot
    waiting = await worker.submit(send("b", "r1", "waiting"))  # offset 3: queued behind it in r1's lane
    fenced = await worker.submit(send("c", "r2", "fenced"))  # offset 4: started, waits for the slot
    await until(lambda: worker.platform.made("send"))
    worker.connector.app.consumer_generation_id = 2
    worker.processor.revoke()
    gate.set()
    await worker.processor.lanes.join()
    assert worker.platform.made("send") == [("cid-1", "running")]  # the call under way finishes; no other starts
    assert [answer["command_id"] for answer in worker.results()] == ["s1", "s2", "a"]
    assert worker.acked == [0, 1, 2]
    assert waiting.message.acked and fenced.message.acked  # Faust stops waiting for them; their offsets stay
    assert running.message.acked is False  # acked through Faust's own ack

    late = await worker.submit(send("d", "r2"), generation_id=1)  # fetched before the revocation
    await worker.processor.lanes.join()
    assert late.message.acked and worker.acked == [0, 1, 2] and len(worker.results()) == 3


async def test_commands_still_running_when_the_grace_ends_are_cancelled_unanswered(worker: Worker) -> None:
    await worker.run(start("s1", "r1"))
    worker.platform.gate["send"] = asyncio.Event()  # never set: 8x8 does not answer
    await worker.submit(send("a", "r1"))
    await until(lambda: worker.platform.made("send"))
    worker.connector.app.consumer_generation_id = 2
    worker.processor.revoke()
    await asyncio.wait_for(worker.processor.lanes.join(), 2.0)  # the grace is 50 ms
    assert [answer["command_id"] for answer in worker.results()] == ["s1"]
    assert worker.acked == [0] and worker.processor.lanes.buffered == 0
