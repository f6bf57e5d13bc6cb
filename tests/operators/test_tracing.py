"""A command's W3C traceparent goes with its result, its transcript and its 8x8 requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from connector import tracing
from connector.client import CommandPublisher
from connector.eightbyeight.http import ApiClient
from connector.eightbyeight.transport import HttpxSender
from tests.support.env import settings_of
from tests.support.topics import TopicReader

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_malformed_traceparent_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="is not a W3C traceparent"):
        tracing.traced("00-abc")
    sent = subprocess.run(
        [sys.executable, "-m", "connector", "send", "--traceparent", "nope", "end", "--ref", "r"],
        capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 2 and "--traceparent: 'nope' is not a W3C traceparent" in sent.stderr


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
    with tracing.traced(TRACE):
        ids = [publisher.start(ref, name="Ann"), publisher.end(ref)]
    ids.append(publisher.message(ref, "after the end"))  # outside the block: no header, and its result carries none
    publisher.close()
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    sent = subprocess.run(
        [sys.executable, "-m", "connector", "send", "--traceparent", other, "message", "--ref", ref, "--text", "hi", "--wait"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert sent.returncode == 1 and json.loads(sent.stdout)["error_code"] == "ENDED", sent.stderr

    results = TopicReader(env, settings.topic_command_results, None)
    transcripts = TopicReader(env, settings.topic_transcripts, None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(results.records) < 4 or not transcripts.records):
        results.poll(0.5)
        transcripts.poll(0.2)
    assert len(results.records) == 4 and len(transcripts.records) == 1
    traced = [dict(record.headers).get("traceparent") for record in results.records]
    assert traced == [TRACE.encode(), TRACE.encode(), None, other.encode()], ids
    assert dict(transcripts.records[0].headers)["traceparent"] == TRACE.encode()
    results.close()
    transcripts.close()
