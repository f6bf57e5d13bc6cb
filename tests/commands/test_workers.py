"""Several workers, one stopped in the middle of the work: SIGKILL (a third starts 10 s later) or SIGTERM (it
starts again). Whatever happens, every command has exactly one original result, no conversation is
created twice, no customer message reaches 8x8 twice or out of order, every conversation ends, and
every event reaches chat.events with its ref.

The sandbox posts its webhooks to the first worker, which is never stopped here; the stopped one
owns half the partitions of every topic, so its commands, its mappings and its share of the events
move to another worker mid-flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer

from connector._faust_compat import _NeverEmpty
from connector.app import REFS_TABLE
from connector.topics import create_topics
from tests.commands.conftest import (
    Results,
    assert_each_ref_created_once_and_sent_in_order,
    assert_exactly_one_result,
    publish_workload,
)
from tests.support.env import free_port, settings_of
from tests.support.topics import partition_of, resumed_after

pytestmark = pytest.mark.kafka

REFS = 400
MESSAGES = 4  # + start + end = 6 commands per ref
GRACE_S = 60


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_worker_stopped_mid_load_loses_repeats_and_unmaps_nothing(
    stop, start_sandbox, connector_env, start_worker, publisher_for, readers, capsys
) -> None:
    generation = "chat-api-v2"
    sandbox = start_sandbox("--latency-ms", "20", "--exchanges", "0")
    env = connector_env(sandbox, generation, command_max_in_flight=64)
    start_worker(env)
    other = {**env, "CONNECTOR_WEB_PORT": str(free_port()), "CONNECTOR_ADMIN_PORT": str(free_port())}
    stopped = start_worker(other)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    refs, ids = publish_workload(publisher, "w", REFS, MESSAGES)

    deadline = time.monotonic() + 90
    while len(results.by_id) < len(ids) // 3 and time.monotonic() < deadline:
        results.poll(0.1)
    assert 0 < len(results.by_id) < len(ids), "the stop must land in the middle of the work"
    held = _owned_partitions(other)
    assert held, "the worker to stop holds no partition"
    its_ref = next(ref for ref in refs if partition_of(ref, int(env["CONNECTOR_KAFKA_PARTITIONS"])) in held)
    stopped_at = time.time()
    if stop == "SIGKILL":
        os.killpg(stopped.pid, signal.SIGKILL)
        stopped.wait(10)
        # Until the group notices, the killed worker still owns its partitions: asked about one of its refs,
        # the survivor says so (503), and the CLI exits 1 naming the reason.
        asked = subprocess.run(
            [sys.executable, "-m", "connector", "conversations", "show", its_ref],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        )
        assert asked.returncode == 1 and "answered 503" in asked.stderr and "is unavailable now" in asked.stderr, asked
        results.poll(max(0.0, 10 - (time.time() - stopped_at)))  # 10 s after the kill, a third worker joins
        start_worker({**env, "CONNECTOR_WEB_PORT": str(free_port()), "CONNECTOR_ADMIN_PORT": str(free_port())}, timeout=90)
    else:
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(GRACE_S) == 0, "the worker must stop cleanly within its grace period"
        start_worker(other, timeout=90)

    by_id = results.wait_for(ids, 240)
    re_emitted = assert_exactly_one_result(by_id, ids)
    assert all(records[0]["status"] == "SUCCEEDED" for records in by_id.values()), "a command failed"

    ref_of = assert_each_ref_created_once_and_sent_in_order(sandbox, generation, refs, MESSAGES)

    unmapped, events = _events_without_ref(readers, env, ref_of)
    assert not unmapped, f"{len(unmapped)} of {events} events reached chat.events without their ref: {unmapped[:3]}"

    resumed = resumed_after(by_id, stopped_at, int(env["CONNECTOR_KAFKA_PARTITIONS"]))
    with capsys.disabled():
        print(
            f"\n{stop} of one of two workers: {re_emitted} results re-emitted (duplicate=true); every partition "
            f"answering again {max(resumed.values()):.1f}s after the stop (per partition: "
            + ", ".join(f"{p}: {s:.1f}s" for p, s in sorted(resumed.items()))
            + f"); {events} events, all with their ref"
        )


def _owned_partitions(env: dict[str, str]) -> set[int]:
    """The partitions of chat.commands a worker holds, from Faust's routing map on its admin port."""
    port = env["CONNECTOR_ADMIN_PORT"]
    routes = httpx.get(f"http://127.0.0.1:{port}/router/topics", timeout=10).raise_for_status().json()
    mine = [topics for host, topics in routes.items() if host.endswith(f":{port}")]
    assert mine, routes
    return set(mine[0].get(env["CONNECTOR_TOPIC_COMMANDS"], []))


def _events_without_ref(readers, env: dict[str, str], ref_of: dict[str, str]) -> tuple[list[dict], int]:
    """The events of our conversations that carry no ref (or a wrong one), once chat.events has stopped growing."""
    reader = readers(env["CONNECTOR_TOPIC_EVENTS"], env, "ChatEvent")
    quiet_since, deadline = time.monotonic(), time.monotonic() + 90
    while time.monotonic() - quiet_since < 5 and time.monotonic() < deadline:
        if reader.poll(1):
            quiet_since = time.monotonic()
    mine = [event for event in reader.records if event["conversation_id"] in ref_of]
    assert mine, "no events at all"
    return [e for e in mine if e["conversation_ref"] != ref_of[e["conversation_id"]]], len(mine)


@pytest.mark.parametrize("before", ["nothing", "a run that committed"])
def test_a_worker_restoring_its_tables_runs_every_command_waiting_for_it(
    before, start_sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    """Commands published while no worker runs are all run, in order, by the next one, while it restores its
    tables (being written to). Faust resumes the stream partitions before it seeks them to their committed
    offsets and empties the streams' queues after that seek, so the records its fetcher hands out meanwhile
    would be emptied out: in a partition nobody committed, nothing would read them again (a stall); after
    a commit, the records below the last one handed out would be skipped until a later rebalance (late and
    out of order). `_faust_compat.resume_streams_after_seek` holds the partitions back until the seek is over."""
    generation = "chat-api-v2"
    sandbox = start_sandbox("--latency-ms", "50", "--exchanges", "0")
    # One command at a time: the command stream's queue keeps what the fetcher hands out meanwhile.
    env = connector_env(sandbox, generation, kafka_partitions=16, command_max_buffered=1)
    settings = settings_of(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    earlier: list[str] = []
    if before != "nothing":
        first = start_worker(env)
        earlier, earlier_ids = publish_workload(publisher, "c", 16, 1)
        results.wait_for(earlier_ids, 60)
        first.send_signal(signal.SIGTERM)
        assert first.wait(GRACE_S) == 0
    changelog = f"{settings.app_id}-{REFS_TABLE}-changelog"
    producer = KafkaProducer(**settings.kafka_python_config())
    # Something to restore in every partition of a table: mappings of conversations that are not ours.
    for partition in range(settings.kafka_partitions):
        for n in range(100):
            producer.send(changelog, key=f"other-{partition}-{n}".encode(), value=b'"other"', partition=partition)
    producer.flush()
    refs, ids = publish_workload(publisher, "u", 50, 1)
    # And the table written to while the worker starts, as another worker's standby partitions are: each
    # write it fetches wakes Faust's fetcher, which then hands records out before the seek is over.
    writing = threading.Event()
    writing.set()

    def write() -> None:
        n = 0
        while writing.is_set():
            producer.send(changelog, key=f"more-{n}".encode(), value=b'"other"', partition=n % settings.kafka_partitions)
            n += 1
            time.sleep(0.002)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        start_worker(env)
        by_id = results.wait_for(ids, 60)
    finally:
        writing.clear()
        writer.join(5)
        producer.close()
    assert_exactly_one_result(by_id, ids)
    assert_each_ref_created_once_and_sent_in_order(sandbox, generation, earlier + refs, 1)


async def test_the_fetcher_leaves_the_records_of_paused_partitions_to_aiokafka(settings_env) -> None:
    """aiokafka's `fetched_records` returns the records of every partition when the set of partitions it is given
    is empty, as Faust's fetcher gives it while a rebalance ends with every partition paused; Faust then drops
    them, aiokafka's position past them. The live view the connector gives instead is never empty
    (`_faust_compat.fetch_only_active_partitions`): the records stay for when their partition is resumed."""
    settings = settings_of(settings_env)
    create_topics(settings)
    topic = settings.topic_commands
    producer = KafkaProducer(**settings.kafka_python_config())
    for partition in (0, 1):
        producer.send(topic, key=b"k", value=b"v", partition=partition)
    producer.flush()
    producer.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([first, second])
        await consumer.seek_to_beginning(first, second)
        active: set[TopicPartition] = {first}
        fetcher = consumer._fetcher
        assert list(await fetcher.fetched_records(active, timeout=10)) == [first]
        await asyncio.sleep(1)  # the second partition's record is fetched meanwhile
        active.clear()  # every partition paused

        assert await fetcher.fetched_records(_NeverEmpty(active), timeout=1) == {}
        assert list(await fetcher.fetched_records(active, timeout=1)) == [second], "aiokafka no longer returns every record for an empty set"
    finally:
        await consumer.stop()
