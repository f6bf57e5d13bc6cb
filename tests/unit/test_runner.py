"""Running one command, in-process: table before result, replays, reconciling with 8x8, retries, FAILED and the DLQ."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aiokafka.errors import RecordTooLargeError

from connector.eightbyeight import PlatformError
from connector.results import now_ms
from connector.conversation import Conversation, Status
from tests.unit.fakes import Worker, busy, end, fetch_transcript, send, start, unknown_outcome

KIP_298 = [
    "__connect.errors.topic",
    "__connect.errors.partition",
    "__connect.errors.offset",
    "__connect.errors.exception.class.name",
    "__connect.errors.exception.message",
    "connector.error.code",
]


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Worker:
    return Worker(monkeypatch)


async def test_a_start_is_stored_and_mapped_before_it_is_answered(worker: Worker) -> None:
    await worker.run(start("c1", "r1"))
    assert worker.platform.made("create") == ["r1"]
    assert [record.topic for record in worker.connector.appender.log] == [
        "table",  # CREATING: a create may happen
        worker.settings.topic_webhooks_raw,  # the id -> ref mapping for the event agent
        "table",  # QUEUED, with the result remembered
        worker.settings.topic_command_results,
    ]
    answer = worker.result_of("c1")
    assert (answer["status"], answer["conversation_id"], answer["duplicate"]) == ("SUCCEEDED", "cid-1", False)
    stored = Conversation.from_dict(worker.table["r1"])
    assert (stored.status, stored.conversation_id) == (Status.QUEUED, "cid-1")
    assert stored.recent_commands["c1"]["offset"] == 0
    assert worker.acked == [0]


async def test_a_command_delivered_again_is_answered_from_the_table_as_a_duplicate(worker: Worker) -> None:
    await worker.run(start("c1", "r1"), start("c1", "r1"))
    assert worker.platform.made("create") == ["r1"]
    first, again = worker.results()
    assert again == {**first, "duplicate": True}
    assert worker.published.asked == []  # an earlier record's result is in Kafka: its offset went only after it
    assert worker.acked == [0, 1]


@pytest.mark.parametrize("in_kafka", [True, False])
async def test_the_same_record_replayed_asks_the_results_topic_whether_it_is_a_duplicate(worker: Worker, in_kafka: bool) -> None:
    """A crash between the table write and the offset commit: the record comes again, in a later generation."""
    await worker.run(start("c1", "r1"))
    if in_kafka:
        worker.published.ids.add("c1")
    worker.connector.app.consumer_generation_id = 2
    await worker.submit(start("c1", "r1"), offset=0, generation_id=2)
    await worker.processor.lanes.join()
    assert worker.platform.made("create") == ["r1"]
    assert worker.published.asked == ["c1"]
    assert worker.results()[-1]["duplicate"] is in_kafka


async def test_a_create_whose_outcome_is_unknown_is_looked_up_before_creating_again(worker: Worker) -> None:
    worker.platform.fail["create"].append(unknown_outcome("create"))
    worker.platform.effect.add("create")  # the timed-out create did reach 8x8
    await worker.run(start("c1", "r1"))
    assert [name for name, _ in worker.platform.calls] == ["create", "find_by_ref"]
    answer = worker.result_of("c1")
    assert (answer["status"], answer["conversation_id"], answer["attempts"]) == ("SUCCEEDED", "cid-1", 2)


async def test_a_create_whose_outcome_is_unknown_and_that_did_not_happen_is_made_again(worker: Worker) -> None:
    worker.platform.fail["create"].append(unknown_outcome("create"))
    await worker.run(start("c1", "r1"))
    assert [name for name, _ in worker.platform.calls] == ["create", "find_by_ref", "create"]
    assert worker.result_of("c1")["status"] == "SUCCEEDED"


async def test_a_start_replayed_after_a_crash_mid_create_looks_the_conversation_up_first(worker: Worker) -> None:
    worker.table["r1"] = Conversation(ref="r1", status=Status.CREATING, created_at=now_ms() - 5_000).to_dict()
    worker.platform.by_ref["r1"] = "cid-9"  # created before the crash
    await worker.run(start("c1", "r1"))
    assert [name for name, _ in worker.platform.calls] == ["find_by_ref"]
    assert worker.result_of("c1")["conversation_id"] == "cid-9"
    assert Conversation.from_dict(worker.table["r1"]).status is Status.QUEUED


async def test_a_start_replayed_after_its_events_moved_the_entry_on_looks_the_conversation_up_and_keeps_them(worker: Worker) -> None:
    """A crash between the create and the start's result; the conversation's events, read again by the next
    owner, moved the CREATING entry on before the start comes again."""
    worker.table["r1"] = Conversation(
        ref="r1", status=Status.AGENT_JOINED, agent_id="a-1", created_at=now_ms() - 5_000
    ).to_dict()
    worker.platform.by_ref["r1"] = "cid-9"  # created before the crash
    await worker.run(start("c1", "r1"))
    assert [name for name, _ in worker.platform.calls] == ["find_by_ref"]
    answer = worker.result_of("c1")
    assert (answer["status"], answer["conversation_id"]) == ("SUCCEEDED", "cid-9")
    stored = Conversation.from_dict(worker.table["r1"])
    assert (stored.status, stored.agent_id, stored.conversation_id) == (Status.AGENT_JOINED, "a-1", "cid-9")


async def test_a_send_stores_its_intent_before_the_call_and_settles_it_after(worker: Worker) -> None:
    await worker.run(start("c1", "r1"))
    worker.platform.gate["send"] = gate = asyncio.Event()
    await worker.submit(send("c2", "r1"))
    while not worker.platform.made("send"):
        await asyncio.sleep(0)
    during = Conversation.from_dict(worker.table["r1"])
    assert during.sending == "c2" and during.sending_at is not None
    gate.set()
    await worker.processor.lanes.join()
    after = Conversation.from_dict(worker.table["r1"])
    assert after.sending is None and "c2" in after.recent_commands
    assert worker.result_of("c2")["status"] == "SUCCEEDED"


@pytest.mark.parametrize("on_8x8", [True, False])
async def test_a_send_intent_replayed_is_sent_only_when_8x8_does_not_have_it(worker: Worker, on_8x8: bool) -> None:
    await worker.run(start("c1", "r1"))
    intent = now_ms() - 1_000
    worker.table["r1"] = dataclasses.replace(Conversation.from_dict(worker.table["r1"]), sending="c2", sending_at=intent).to_dict()
    if on_8x8:
        worker.platform.messages_of["cid-1"].append({"text": "hello", "author_type": "USER", "created_at": intent + 10})
    await worker.run(send("c2", "r1"))
    assert worker.platform.made("messages") == ["cid-1"]
    assert worker.platform.made("send") == ([] if on_8x8 else [("cid-1", "hello")])
    answer = worker.result_of("c2")
    assert (answer["status"], answer["attempts"]) == ("SUCCEEDED", 0 if on_8x8 else 1)
    assert Conversation.from_dict(worker.table["r1"]).sending is None


@pytest.mark.parametrize("took_effect", [True, False])
async def test_a_send_whose_outcome_is_unknown_is_looked_up_before_sending_again(worker: Worker, took_effect: bool) -> None:
    """A timeout or a 5xx after the request went out: the retry asks 8x8 for the message first, so the customer's
    message is never sent twice, and is sent again only when 8x8 does not have it."""
    await worker.run(start("c1", "r1"))
    worker.platform.fail["send"].append(unknown_outcome("send"))
    if took_effect:
        worker.platform.effect.add("send")
    await worker.run(send("c2", "r1"))
    assert worker.platform.made("messages") == ["cid-1"]
    assert len(worker.platform.made("send")) == (1 if took_effect else 2)
    assert [held["text"] for held in worker.platform.messages_of["cid-1"]] == ["hello"]
    assert worker.result_of("c2")["status"] == "SUCCEEDED"


async def test_an_older_message_with_the_same_text_does_not_count_as_sent(worker: Worker) -> None:
    await worker.run(start("c1", "r1"))
    intent = now_ms()
    worker.table["r1"] = dataclasses.replace(Conversation.from_dict(worker.table["r1"]), sending="c2", sending_at=intent).to_dict()
    worker.platform.messages_of["cid-1"].append({"text": "hello", "author_type": "USER", "created_at": intent - 60_000})
    await worker.run(send("c2", "r1"))
    assert worker.platform.made("send") == [("cid-1", "hello")]


async def test_retries_stop_at_the_maximum_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(monkeypatch, command_max_attempts=3)
    await worker.run(start("c1", "r1"))
    worker.platform.fail["send"].extend(busy("send", retry_after=0) for _ in range(10))
    await worker.run(send("c2", "r1"))
    assert len(worker.platform.made("send")) == 3
    answer = worker.result_of("c2")
    assert (answer["status"], answer["error_code"], answer["attempts"], answer["http_status"]) == ("FAILED", "RETRIES_EXHAUSTED", 3, 503)
    assert len(worker.dlq()) == 1


async def test_retries_stop_when_the_next_wait_would_pass_the_maximum_time(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(monkeypatch, command_retry_max_s=1.0)
    await worker.run(start("c1", "r1"))
    worker.platform.fail["end"].append(busy("end", retry_after=5.0))
    await worker.run(end("c2", "r1"))
    assert len(worker.platform.made("end")) == 1
    answer = worker.result_of("c2")
    assert (answer["error_code"], answer["attempts"]) == ("RETRIES_EXHAUSTED", 1)
    assert Conversation.from_dict(worker.table["r1"]).status is Status.QUEUED  # not ended


async def test_a_retry_that_succeeds_counts_its_attempts(worker: Worker) -> None:
    await worker.run(start("c1", "r1"))
    worker.platform.fail["send"].extend([busy("send"), busy("send")])
    await worker.run(send("c2", "r1"))
    answer = worker.result_of("c2")
    assert (answer["status"], answer["attempts"]) == ("SUCCEEDED", 3)
    assert worker.dlq() == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PlatformError("send", "no such conversation", http_status=404), "REJECTED_BY_8X8"),
        (PlatformError("send", "unauthorised", http_status=401), "AUTH_FAILED"),
    ],
)
async def test_a_final_refusal_is_not_retried(worker: Worker, error: PlatformError, code: str) -> None:
    await worker.run(start("c1", "r1"))
    worker.platform.fail["send"].append(error)
    await worker.run(send("c2", "r1"))
    assert len(worker.platform.made("send")) == 1
    answer = worker.result_of("c2")
    assert (answer["status"], answer["error_code"], answer["attempts"]) == ("FAILED", code, 1)


async def test_every_failed_result_comes_with_a_dlq_copy_of_the_record_and_the_error_in_headers(worker: Worker) -> None:
    trace = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = send("c1", "nobody")
    await worker.submit(record, offset=7, headers=[("traceparent", trace)])
    await worker.processor.lanes.join()
    answer = worker.result_of("c1")
    assert (answer["status"], answer["error_code"]) == ("FAILED", "NOT_STARTED")
    (copy,) = worker.dlq()
    assert (copy.key, copy.value) == (b"nobody", record)
    headers = dict(copy.headers or [])
    assert [name for name, _ in copy.headers or []] == ["traceparent", *KIP_298]
    assert headers["__connect.errors.offset"] == b"7"
    assert headers["connector.error.code"] == b"NOT_STARTED"
    assert headers["traceparent"] == trace
    assert "nobody" not in worker.table  # a ref never started gets no entry
    assert worker.platform.calls == []


async def test_an_end_stores_ended_answers_and_publishes_the_transcript(worker: Worker) -> None:
    await worker.run(start("c1", "r1"), end("c2", "r1"))
    assert worker.platform.ended == ["cid-1"]
    assert worker.result_of("c2")["status"] == "SUCCEEDED"
    (transcript,) = worker.connector.appender.on(worker.settings.topic_transcripts)
    assert (transcript.value["reason"], transcript.value["command_id"], transcript.value["error"]) == ("ENDED", "c2", None)
    assert Conversation.from_dict(worker.table["r1"]).status is Status.ENDED


async def test_a_transcript_that_cannot_be_read_is_published_empty_with_its_error_and_no_second_result(worker: Worker) -> None:
    await worker.run(start("c1", "r1"))
    worker.platform.fail["read_back"].append(PlatformError("read_back", "gone", http_status=404))
    await worker.run(end("c2", "r1"))
    assert [answer["command_id"] for answer in worker.results()] == ["c1", "c2"]
    assert worker.result_of("c2")["status"] == "SUCCEEDED"
    (transcript,) = worker.connector.appender.on(worker.settings.topic_transcripts)
    assert transcript.value["error"] == "REJECTED_BY_8X8: gone" and transcript.value["messages"] == []


@pytest.mark.parametrize("kind", ["FetchTranscript", "EndConversation"])
async def test_a_transcript_too_large_for_its_topic_is_reported_and_the_worker_goes_on(worker: Worker, kind: str) -> None:
    """Kafka refusing a transcript as too large for good must not stop the worker (a restart would meet it
    again, and the partition would stall): FetchTranscript fails with the reason, an end's transcript is
    published empty with its error, and the records are acked."""
    await worker.run(start("c1", "r1"))
    worker.connector.appender.refuse[worker.settings.topic_transcripts].append(RecordTooLargeError())
    await worker.run(fetch_transcript("c2", "r1") if kind == "FetchTranscript" else end("c2", "r1"))
    assert not worker.connector.app.crashed and len(worker.acked) == 2
    answer = worker.result_of("c2")
    if kind == "FetchTranscript":
        assert (answer["status"], answer["error_code"]) == ("FAILED", "RECORD_TOO_LARGE")
        assert worker.settings.topic_transcripts in answer["error_message"]
    else:
        assert answer["status"] == "SUCCEEDED"
        (transcript,) = worker.connector.appender.on(worker.settings.topic_transcripts)
        assert "NotDelivered" in transcript.value["error"] and transcript.value["messages"] == []


async def test_every_failed_result_has_exactly_one_dlq_copy_and_no_success_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(monkeypatch, command_max_attempts=2)
    worker.platform.fail["send"].extend([busy("send", retry_after=0), busy("send", retry_after=0)])
    worker.platform.fail["end"].append(PlatformError("end", "gone", http_status=404))
    await worker.run(
        start("c1", "r1"),
        send("c2", "r1"),  # retries exhausted
        start("c3", "r1"),  # already active
        send("c4", "nobody"),  # never started
        end("c5", "r1"),  # refused by 8x8
        send("c6", "r1"),  # succeeds
    )
    failed = sorted(answer["command_id"] for answer in worker.results() if answer["status"] == "FAILED")
    assert failed == ["c2", "c3", "c4", "c5"]
    copies = sorted(int(dict(copy.headers or [])["__connect.errors.offset"]) for copy in worker.dlq())
    assert copies == [1, 2, 3, 4]  # the offsets of c2..c5, each once


@pytest.mark.parametrize("due", [True, False])
async def test_an_auto_end_runs_only_while_the_conversation_is_still_due(monkeypatch: pytest.MonkeyPatch, due: bool) -> None:
    worker = Worker(monkeypatch, command_auto_end_s=60)
    await worker.run(start("c1", "r1"))
    left_at = now_ms() - (61_000 if due else 1_000)
    worker.table["r1"] = dataclasses.replace(
        Conversation.from_dict(worker.table["r1"]), status=Status.AGENT_LEFT, agent_left_at=left_at
    ).to_dict()
    await worker.run(end(f"auto-end:r1:{left_at}", "r1"))
    answer = worker.results()[-1]
    assert (answer["status"], answer["error_code"]) == (("SUCCEEDED", None) if due else ("FAILED", "AUTO_END_CANCELLED"))
    assert worker.platform.ended == (["cid-1"] if due else [])
