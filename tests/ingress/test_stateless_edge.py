"""`connector edge` on its own: no consumer group, no Faust; it keeps answering 2xx while every worker restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from connector.config import Settings
from kafka.admin import KafkaAdminClient

from tests.support.avro import Avro, publish_mapping
from tests.support.env import free_port
from tests.support.topics import read_to_end, wait_consumed
from tests.ingress.conftest import (
    admin_url,
    consume,
    post,
    settings_of,
    signed_headers,
    wait_for,
    worker_url,
)

pytestmark = pytest.mark.kafka

CONVERSATIONS = 4
# As Kubernetes does: SIGKILL for a worker still running this long after its SIGTERM.
GRACE_S = 60
# A stopped worker hands its partitions over in seconds.
FAST_GROUP = {
    "CONNECTOR_KAFKA_SESSION_TIMEOUT_S": "6",
    "CONNECTOR_KAFKA_HEARTBEAT_INTERVAL_S": "1",
    "CONNECTOR_KAFKA_REBALANCE_TIMEOUT_S": "10",
}


def text_event(conversation: str, text: str) -> bytes:
    event = {"eventType": "TEXT", "messageType": "AGENT", "conversationId": conversation,
             "timestamp": time.time_ns() // 1_000_000, "agentId": "a1", "agentName": "Ann", "message": text}
    return json.dumps(event).encode()


def agent_event(conversation: str, event_type: str) -> bytes:
    """A Chat API v2 QUEUED, AGENT_JOINED or AGENT_LEFT event of `conversation`."""
    event = {"eventType": event_type, "conversationId": conversation, "timestamp": time.time_ns() // 1_000_000,
             "queueId": "7", "queueName": "Support", "agentId": "a1", "agentName": "Ann"}
    return json.dumps(event).encode()


def worker_env(ingress_env: dict[str, str]) -> dict[str, str]:
    """A worker of the test's connector that leaves webhooks to the edge, on ports of its own."""
    return {
        **ingress_env,
        **FAST_GROUP,
        "CONNECTOR_WORKER_SERVE_WEBHOOKS": "false",
        "CONNECTOR_WEB_PORT": str(free_port()),
        "CONNECTOR_ADMIN_PORT": str(free_port()),
    }


def is_ready(env: dict[str, str]) -> bool:
    try:
        return httpx.get(f"{worker_url(env)}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Poster:
    """Signed webhooks posted to the edge one after another from a thread, every answer (or failure) kept."""

    def __init__(self, env: dict[str, str], key, kid: str) -> None:
        self._url = f"{worker_url(env)}/webhooks/8x8"
        self._key, self._kid = key, kid
        self._stop = threading.Event()
        self.sent: dict[str, list[str]] = {f"conv-{i}": [] for i in range(CONVERSATIONS)}
        self.answers: list[int | str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Poster":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def total(self) -> int:
        return sum(len(texts) for texts in self.sent.values())

    def _run(self) -> None:
        n = 0
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                conversation = f"conv-{n % CONVERSATIONS}"
                text = f"message {n} {uuid.uuid4().hex[:6]}"
                body = text_event(conversation, text)
                try:
                    status: int | str = client.post(
                        self._url, content=body, headers=signed_headers(body, self._key, self._kid)
                    ).status_code
                except httpx.HTTPError as exc:  # a timeout or a refused connection is a failed answer too
                    status = type(exc).__name__
                self.answers.append(status)
                if status == 204:
                    self.sent[conversation].append(text)
                n += 1
                time.sleep(0.01)


def test_edge_alone(ingress_env, sandbox, start_edge):
    """Webhooks accepted and appended with no worker running; no consumer group; metrics on the admin port only."""
    env = ingress_env
    settings = settings_of(env)
    edge = start_edge(env)
    ready = httpx.get(f"{worker_url(env)}/readyz", timeout=10).json()
    assert ready == {"ready": True, "checks": {"kafka": True, "jwk": True, "schemas": True}}
    body = text_event("conv-1", "hello")
    assert post(env, body, signed_headers(body, sandbox.sandbox.key, sandbox.sandbox.kid)).status_code == 204
    assert post(env, body, signed_headers(body, sandbox.sandbox.key, "no-such-kid")).status_code == 401
    records = consume(settings, settings.topic_webhooks_raw, until=lambda got: len(got) >= 1, timeout=20)
    assert [record.key for record in records] == [b"conv-1"]

    metrics = httpx.get(f"{admin_url(env)}/metrics", timeout=10).text
    assert 'connector_webhook_requests_total{outcome="accepted"} 1.0' in metrics
    assert httpx.get(f"{worker_url(env)}/metrics", timeout=10).status_code == 404
    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        groups = {group["group_id"] for group in admin.list_groups()}
    finally:
        admin.close()
    assert settings.app_id not in groups, "the edge must not join the workers' consumer group"

    edge.send_signal(signal.SIGTERM)
    assert edge.wait(15) == 0


def test_edge_exits_1_naming_kafka_when_it_cannot_start(ingress_env):
    env = {**ingress_env, "CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    edge = subprocess.run([sys.executable, "-m", "connector", "edge"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert edge.returncode == 1, edge.stderr[-2000:]
    assert f"cannot start: Kafka at {env['CONNECTOR_KAFKA_BOOTSTRAP_SERVERS']}" in edge.stderr
    assert "Unclosed" not in edge.stderr, "the failed producer is closed"


# Together, as the chart's StatefulSet (podManagementPolicy: Parallel) restarts them; or one after the
# other, so that the second one's joining moves partitions with a backlog the first one has begun.
@pytest.mark.parametrize("restart", ["together", "one after the other"])
def test_edge_answers_2xx_while_every_worker_restarts(ingress_env, sandbox, start_worker, start_edge, restart):
    """Both workers SIGTERMed and restarted mid-stream: every POST to the edge gets 204, and each accepted
    webhook reaches chat.events once, keyed by its ref, after the workers are back."""
    settings, workers_env, workers = _two_workers_and_an_edge(ingress_env, start_worker, start_edge)
    body = text_event("conv-0", "to a worker")
    refused = post(workers_env[0], body, signed_headers(body, sandbox.sandbox.key, sandbox.sandbox.kid))
    assert refused.status_code == 404, "a worker serves webhooks only when CONNECTOR_WORKER_SERVE_WEBHOOKS says so"

    poster = Poster(ingress_env, sandbox.sandbox.key, sandbox.sandbox.kid).start()
    try:
        time.sleep(2)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        down_at = poster.total()
        time.sleep(3)
        assert poster.total() > down_at, "the edge must keep accepting while no worker runs"
        edge_ready = httpx.get(f"{worker_url(ingress_env)}/readyz", timeout=10)
        assert edge_ready.status_code == 200, edge_ready.text
        for env in workers_env:
            start_worker(env, wait_ready=restart != "together", timeout=90)
        for env in workers_env:
            wait_for(lambda: is_ready(env), timeout=90)
        time.sleep(2)
    finally:
        poster.stop()

    failed = [answer for answer in poster.answers if answer != 204]
    assert not failed, f"{len(failed)} of {len(poster.answers)} answers were not 204: {sorted(set(map(str, failed)))}"
    wait_consumed(ingress_env, settings.topic_webhooks_raw, timeout=120)  # the workers have finished every record
    avro = Avro(settings)
    events = [(record.key.decode(), avro.decode("ChatEvent", record.value)) for record in read_to_end(ingress_env, settings.topic_events)]
    keys = Counter(key for key, _ in events)
    for conversation, texts in poster.sent.items():
        got = [record["text"] for key, record in events if key == f"ref-{conversation}"]
        assert got == texts, (conversation, len(got), len(texts), sorted(set(texts) - set(got))[:5], keys)
        assert all(
            record["conversation_ref"] == f"ref-{conversation}"
            for key, record in events
            if record["conversation_id"] == conversation
        )
    assert len(events) == poster.total()


def test_webhooks_reach_chat_events_with_their_ref_while_a_worker_is_killed_and_replaced(
    ingress_env, sandbox, start_worker, start_edge
):
    """One of two workers SIGKILLed mid-stream and a replacement started: every POST to the edge gets 204,
    and every accepted webhook reaches chat.events keyed by its ref, in order, whichever worker owned its
    conversation (after a kill a record may come twice: the event agent's dedupe is not transactional)."""
    settings, workers_env, workers = _two_workers_and_an_edge(ingress_env, start_worker, start_edge)

    poster = Poster(ingress_env, sandbox.sandbox.key, sandbox.sandbox.kid).start()
    try:
        time.sleep(2)
        os.killpg(workers[1].pid, signal.SIGKILL)
        workers[1].wait(10)
        time.sleep(2)
        replacement = worker_env(ingress_env)
        start_worker(replacement, timeout=90)
        wait_for(lambda: is_ready(workers_env[0]) and is_ready(replacement), timeout=90)
        time.sleep(2)
    finally:
        poster.stop()

    failed = [answer for answer in poster.answers if answer != 204]
    assert not failed, f"{len(failed)} of {len(poster.answers)} answers were not 204: {sorted(set(map(str, failed)))}"
    wait_consumed(ingress_env, settings.topic_webhooks_raw, timeout=120)
    avro = Avro(settings)
    events = [(record.key.decode(), avro.decode("ChatEvent", record.value)) for record in read_to_end(ingress_env, settings.topic_events)]
    for conversation, texts in poster.sent.items():
        got = [record["text"] for key, record in events if key == f"ref-{conversation}"]
        first_seen = list(dict.fromkeys(got))
        assert first_seen == texts, (conversation, len(first_seen), len(texts), sorted(set(texts) - set(got))[:5])
    unmapped = [record for key, record in events if not key.startswith("ref-")]
    assert not unmapped, f"{len(unmapped)} events reached chat.events without their ref: {unmapped[:2]}"


def test_interaction_counts_survive_every_worker_killed_between_two_interactions(
    ingress_env, sandbox, start_worker, start_edge
):
    """Each conversation's first interaction (queued, joined, left) goes through two workers; both are
    SIGKILLed; the second interaction's events, accepted by the edge meanwhile, reach chat.events after two new
    workers recovered the `interactions` table from its changelog: they carry 2, the first ones 1."""
    settings, workers_env, workers = _two_workers_and_an_edge(ingress_env, start_worker, start_edge)
    key, kid = sandbox.sandbox.key, sandbox.sandbox.kid
    conversations = [f"conv-{i}" for i in range(CONVERSATIONS)]
    avro = Avro(settings)

    def deliver(*event_types: str) -> None:
        for conversation in conversations:
            for event_type in event_types:
                body = agent_event(conversation, event_type)
                assert post(ingress_env, body, signed_headers(body, key, kid)).status_code == 204

    def counts() -> dict[str, list[tuple[str, int | None]]]:
        seen: set[str] = set()
        got: dict[str, list[tuple[str, int | None]]] = {c: [] for c in conversations}
        for record in read_to_end(ingress_env, settings.topic_events):
            event = avro.decode("ChatEvent", record.value)
            if event["event_id"] not in seen:  # after a kill an event may come twice
                seen.add(event["event_id"])
                got[event["conversation_id"]].append((event["event_type"], event["interaction_count"]))
        return got

    deliver("QUEUED", "AGENT_JOINED", "AGENT_LEFT")
    wait_for(lambda: all(len(events) == 3 for events in counts().values()), timeout=60)
    for worker in workers:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    deliver("QUEUED", "AGENT_JOINED")
    for env in workers_env:
        start_worker(env, timeout=90)

    first, second = [("QUEUED", 1), ("AGENT_JOINED", 1), ("AGENT_LEFT", 1)], [("QUEUED", 2), ("AGENT_JOINED", 2)]
    wait_for(lambda: all(len(events) == 5 for events in counts().values()), timeout=120)
    assert counts() == {conversation: first + second for conversation in conversations}


def _two_workers_and_an_edge(
    ingress_env: dict[str, str], start_worker: Any, start_edge: Any
) -> tuple[Settings, list[dict[str, str]], list[subprocess.Popen]]:
    """The mappings of the test's conversations, two ready workers and the edge: (settings, their envs, workers)."""
    settings = settings_of(ingress_env)
    for i in range(CONVERSATIONS):
        publish_mapping(settings, f"conv-{i}", f"ref-conv-{i}")
    workers_env = [worker_env(ingress_env), worker_env(ingress_env)]
    workers = [start_worker(env, timeout=90) for env in workers_env]
    start_edge(ingress_env)
    return settings, workers_env, workers
