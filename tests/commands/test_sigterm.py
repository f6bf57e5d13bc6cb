"""Graceful shutdown: SIGTERM under load stops intake, finishes the work in flight, commits and exits.

Unlike SIGKILL (test_sigkill.py) nothing may be lost or repeated: every command has exactly one
original result and no re-emitted duplicate, no message reaches 8x8 twice, and the worker exits 0
within the pod's grace period (60 s in the chart).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.commands.conftest import (
    Results,
    assert_each_ref_created_once_and_sent_in_order,
    assert_exactly_one_result,
    publish_workload,
)

pytestmark = pytest.mark.kafka

REFS = 100
MESSAGES = 8  # + start + end = 10 commands per ref
GRACE_S = 60


def test_sigterm_under_load_loses_and_repeats_nothing(
    start_sandbox, connector_env, start_worker, publisher_for, readers
) -> None:
    generation = "chat-api-v2"
    sandbox = start_sandbox("--latency-ms", "20", "--exchanges", "0")
    env = connector_env(sandbox, generation, command_max_in_flight=32)
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    refs, ids = publish_workload(publisher, "g", REFS, MESSAGES)

    deadline = time.monotonic() + 60
    while len(results.by_id) < len(ids) // 3 and time.monotonic() < deadline:
        results.poll(0.1)
    done_before = len(results.by_id)
    assert 0 < done_before < len(ids), "SIGTERM must land in the middle of the work"

    stopping = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(GRACE_S) == 0, "the worker must exit cleanly within the grace period"
    stop_s = time.monotonic() - stopping

    start_worker(env)
    by_id = results.wait_for(ids, 150)
    assert assert_exactly_one_result(by_id, ids) == 0, "a graceful stop must not lead to redelivered commands"
    assert all(records[0]["status"] == "SUCCEEDED" for records in by_id.values())

    assert_each_ref_created_once_and_sent_in_order(sandbox, generation, refs, MESSAGES)
    print(f"SIGTERM after {done_before}/{len(ids)} results; stopped in {stop_s:.1f}s")
