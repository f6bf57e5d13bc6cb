"""SIGKILL of the worker in the middle of 2,000 commands over 200 refs, then a restart.

"Exactly one result per command" means (see `assert_exactly_one_result`): every command id has a
CommandResult; all records of one id carry the same outcome; at most one is an original
(duplicate=false), any other re-emits it, flagged duplicate=true, because the command was
redelivered after the crash and answered from the table. A consumer deduplicating by command_id
therefore sees exactly one outcome per command.

No message reaches 8x8 twice: a send's intent is in the table before its 8x8 call, and a replay that
finds an intent without an outcome looks for the message on 8x8 before sending it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.commands.conftest import Results, assert_exactly_one_result, created_by_ref, publish_workload, sends_by_ref

pytestmark = pytest.mark.kafka

REFS = 200
MESSAGES = 8  # + start + end = 10 commands per ref


@pytest.mark.parametrize("generation", ["chat-api-v2"])
def test_sigkill_and_restart(generation, start_sandbox, connector_env, start_worker, publisher_for, readers, capsys) -> None:
    sandbox = start_sandbox("--latency-ms", "15", "--exchanges", "0")
    env = connector_env(sandbox, generation, command_max_in_flight=64)
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    refs, ids = publish_workload(publisher, "k", REFS, MESSAGES)
    assert len(ids) == 2000

    deadline = time.monotonic() + 60
    while len(results.by_id) < 700 and time.monotonic() < deadline:
        results.poll(0.1)
    done_before = len(results.by_id)
    assert 0 < done_before < len(ids), "the kill must land in the middle of the work"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)

    start_worker(env)
    by_id = results.wait_for(ids, 150)

    re_emitted = assert_exactly_one_result(by_id, ids)
    failed = [records[0] for records in by_id.values() if records[0]["status"] != "SUCCEEDED"]
    assert not failed, failed[:3]

    created = created_by_ref(sandbox, generation)
    assert sorted(created) == sorted(refs)
    twice = {ref: c for ref, c in created.items() if len(c) > 1}
    assert not twice, f"conversations created twice: {twice}"

    ref_of = {conversation_id: ref for ref, (conversation_id,) in created.items()}
    sent = sends_by_ref(sandbox.requests(), ref_of)
    repeats = 0
    for ref in refs:
        numbers = [int(text.rsplit("#", 1)[1]) for text in sent[ref]]
        assert sorted(set(numbers)) == list(range(MESSAGES)), (ref, numbers)
        assert numbers == sorted(numbers), f"{ref}: sent out of order {numbers}"
        repeats += len(numbers) - len(set(numbers))
    with capsys.disabled():
        print(f"\nSIGKILL after {done_before}/2000 results: {re_emitted} results re-emitted (duplicate=true)")
    assert repeats == 0, f"{repeats} messages were sent to 8x8 twice"
