"""No accepted webhook is lost: Kafka stopped mid-stream, and a worker killed with SIGKILL mid-stream."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.ingress.conftest import SandboxThread, chat_events, settings_of, wait_for, worker_url
from tests.support.avro import Avro, publish_mapping
from tests.support.topics import read_to_end, wait_consumed

pytestmark = pytest.mark.kafka

STACK = Path(__file__).resolve().parents[2] / "devstack" / "stack"
CONVERSATIONS = 4
# A killed member leaves the group in seconds, not half a minute.
FAST_GROUP = {
    "CONNECTOR_KAFKA_SESSION_TIMEOUT_S": "6",
    "CONNECTOR_KAFKA_HEARTBEAT_INTERVAL_S": "1",
    "CONNECTOR_KAFKA_REBALANCE_TIMEOUT_S": "10",
}


class Stream:
    """8x8 sending agent messages for a few conversations at a steady pace, from a thread."""

    def __init__(self, sandbox: SandboxThread, interval_s: float = 0.05) -> None:
        self._sandbox = sandbox
        self._interval = interval_s
        self._stop = threading.Event()
        self.sent: dict[str, list[str]] = {f"conv-{i}": [] for i in range(CONVERSATIONS)}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def total(self) -> int:
        return sum(len(texts) for texts in self.sent.values())

    def _run(self) -> None:
        sandbox = self._sandbox.sandbox
        url = next(iter(sandbox.store.webhooks.values())).uri
        n = 0
        while not self._stop.is_set():
            conversation = f"conv-{n % CONVERSATIONS}"
            text = f"message {n}"
            event = {"eventType": "TEXT", "messageType": "AGENT", "conversationId": conversation,
                     "timestamp": time.time_ns() // 1_000_000, "agentId": "a1", "agentName": "Ann", "message": text}
            self._sandbox.call(sandbox.deliverer.submit, conversation, url, event)
            self.sent[conversation].append(text)
            n += 1
            time.sleep(self._interval)


def check_all_there_once(env: dict[str, str], stream: Stream, sandbox: SandboxThread) -> None:
    """Every message on chat.events exactly once, keyed by its ref, in order per conversation."""
    wait_for(lambda: sandbox.pending() == 0, timeout=90)
    settings = settings_of(env)
    chat_events(settings, until=lambda got: len(got) >= stream.total(), timeout=60)
    wait_consumed(env, settings.topic_webhooks_raw, timeout=60)  # every webhook handled: a duplicate is in by now
    avro = Avro(settings)
    events = [(record.key.decode(), avro.decode("ChatEvent", record.value)) for record in read_to_end(env, settings.topic_events)]
    for conversation, texts in stream.sent.items():
        got = [record["text"] for key, record in events if key == f"ref-{conversation}"]
        assert got == texts, (conversation, len(got), len(texts), sorted(set(texts) - set(got))[:5])
    assert len(events) == stream.total()


def test_kafka_stopped_mid_stream(ingress_env, sandbox, start_worker):
    env = {**ingress_env, "CONNECTOR_WEBHOOK_APPEND_TIMEOUT_S": "2"}
    settings = settings_of(env)
    start_worker(env)
    for i in range(CONVERSATIONS):
        publish_mapping(settings, f"conv-{i}", f"ref-conv-{i}")
    stream = Stream(sandbox).start()
    try:
        time.sleep(2)
        subprocess.run(["bash", str(STACK), "kafka-stop"], check=True, capture_output=True, timeout=60)
        try:
            wait_for(lambda: any(d["status"] == 503 for d in sandbox.deliveries()), timeout=30)
            ready = httpx.get(f"{worker_url(env)}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["checks"]["kafka"] is False, ready.text
            time.sleep(2)
        finally:
            subprocess.run(["bash", str(STACK), "kafka-start"], check=True, capture_output=True, timeout=180)
        wait_for(lambda: httpx.get(f"{worker_url(env)}/readyz", timeout=10).json()["checks"]["kafka"], timeout=60)
    finally:
        stream.stop()
    check_all_there_once(env, stream, sandbox)


def test_worker_killed_mid_stream(ingress_env, sandbox, start_worker):
    env = {**ingress_env, **FAST_GROUP}
    settings = settings_of(env)
    worker = start_worker(env)
    for i in range(CONVERSATIONS):
        publish_mapping(settings, f"conv-{i}", f"ref-conv-{i}")
    stream = Stream(sandbox).start()
    try:
        time.sleep(3)
        worker.kill()  # SIGKILL
        worker.wait(10)
        time.sleep(1)
        start_worker(env)
        time.sleep(2)
    finally:
        stream.stop()
    check_all_there_once(env, stream, sandbox)
