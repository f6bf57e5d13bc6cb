"""A command's W3C traceparent goes with its result, its transcript and its 8x8 requests."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from kafka import KafkaProducer

from connector import tracing
from connector.client import CommandPublisher
from connector.eightbyeight.http import ApiClient
from connector.eightbyeight.transport import HttpxSender
from tests.support.env import settings_of
from tests.support.topics import TopicReader

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_only_a_well_formed_traceparent_is_taken() -> None:
    assert tracing.of_headers([("traceparent", TRACE.encode())]) == TRACE
    assert tracing.of_headers({"TraceParent": TRACE.encode()}) == TRACE
    assert tracing.of_headers([("traceparent", b"00-abc\r\nX-Injected: 1")]) is None
    assert tracing.of_headers([("traceparent", b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]) is None
    assert tracing.of_headers(None) is None and tracing.kafka_headers() == []


async def test_8x8_requests_carry_the_running_commands_traceparent() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200, json={})

    api = ApiClient(HttpxSender(httpx.MockTransport(answer)), 4)
    await api.request("get", "GET", "https://api.test/x")
    token = tracing.current.set(TRACE)
    try:
        await api.request("get", "GET", "https://api.test/x")
    finally:
        tracing.current.reset(token)
    await api.aclose()
    assert seen == [None, TRACE]


@pytest.mark.kafka
def test_results_and_transcripts_carry_the_commands_traceparent(sandbox, connector_env, start_worker) -> None:
    env = connector_env(sandbox, "chat-api-v2")
    start_worker(env)
    settings = settings_of(env)
    ref = f"trace-{uuid.uuid4().hex[:8]}"
    publisher = CommandPublisher(settings)
    producer = KafkaProducer(**settings.kafka_python_config(), acks="all")
    ids = []
    for kind, body in (("StartConversation", {"customer": {"name": "Ann"}}), ("EndConversation", {})):
        command_id, value = publisher.encode(ref, kind, body)
        producer.send(settings.topic_commands, key=ref.encode(), value=value, headers=[("traceparent", TRACE.encode())]).get(30)
        ids.append(command_id)
    untraced = publisher.message(ref, "after the end")  # no header: its result carries none
    producer.close()
    publisher.close()

    results = TopicReader(env, settings.topic_command_results, None)
    transcripts = TopicReader(env, settings.topic_transcripts, None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(results.records) < 3 or not transcripts.records):
        results.poll(0.5)
        transcripts.poll(0.2)
    assert len(results.records) == 3 and len(transcripts.records) == 1
    traced = [dict(record.headers).get("traceparent") for record in results.records]
    assert traced == [TRACE.encode(), TRACE.encode(), None], f"{ids + [untraced]}"
    assert dict(transcripts.records[0].headers)["traceparent"] == TRACE.encode()
    results.close()
    transcripts.close()
