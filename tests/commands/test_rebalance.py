"""A rebalance while 8x8 is slow: the revoked worker hands back what it has not started, finishes what it has
within its grace, and starts no 8x8 call for a partition it no longer owns.

Without that, the revoked worker drains its whole backlog (here far longer than the rebalance
timeout), is dropped from the group meanwhile, and keeps calling 8x8 while the new owner replays
the same commands: messages sent twice, conversations created twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.commands.conftest import (
    Results,
    assert_each_ref_created_once_and_sent_in_order,
    assert_exactly_one_result,
    publish_workload,
)
from tests.support.env import free_port

pytestmark = pytest.mark.kafka

REFS = 16
MESSAGES = 2  # + start = 3 commands per ref: with 2 calls in flight at 1 s each, ~24 s of work for one worker
REBALANCE_TIMEOUT_S = 10


def test_a_rebalance_under_a_slow_8x8_repeats_nothing(
    start_sandbox, connector_env, start_worker, publisher_for, readers, tmp_path: Path
) -> None:
    generation = "chat-api-v2"
    sandbox = start_sandbox("--latency-ms", "1000", "--exchanges", "0")
    env = connector_env(
        sandbox,
        generation,
        command_max_in_flight=2,
        kafka_rebalance_timeout_s=REBALANCE_TIMEOUT_S,
        command_revoke_grace_s=3,
        log_level="INFO",
    )
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    refs, ids = publish_workload(publisher, "rb", REFS, MESSAGES, end=False)

    deadline = time.monotonic() + 30
    while not results.by_id and time.monotonic() < deadline:
        results.poll(0.2)
    assert 0 < len(results.by_id) < len(ids) // 2, "the rebalance must land in the middle of the work"

    joining = time.monotonic()
    start_worker({**env, "CONNECTOR_WEB_PORT": str(free_port()), "CONNECTOR_ADMIN_PORT": str(free_port())}, timeout=2 * REBALANCE_TIMEOUT_S)
    joined_s = time.monotonic() - joining

    by_id = results.wait_for(ids, 120)
    assert_exactly_one_result(by_id, ids)
    assert all(records[0]["status"] == "SUCCEEDED" for records in by_id.values())
    assert_each_ref_created_once_and_sent_in_order(sandbox, generation, refs, MESSAGES)
    handed_back = (tmp_path / "worker-0.log").read_text().count("left to the next owner")
    assert handed_back >= 1, "the first worker saw no revocation"
    print(f"second worker ready {joined_s:.1f}s after it started (rebalance timeout {REBALANCE_TIMEOUT_S}s)")
