"""8x8 misbehaving (429 with and without Retry-After, 500, timeouts, dropped connections at 20 %):
every command still gets exactly one result, order per ref holds, no conversation is created twice."""

from __future__ import annotations


import pytest

from tests.commands.conftest import GENERATIONS, Results, assert_exactly_one_result, created_by_ref, publish_workload, sends_by_ref

pytestmark = pytest.mark.kafka

REFS = 30
MESSAGES = 4


@pytest.mark.parametrize("generation", GENERATIONS)
def test_faults(generation, sandbox, connector_env, start_worker, publisher_for, readers) -> None:
    # 20 % of all API calls fail in one of the ways below; timeouts are held past the client's 2 s.
    sandbox.faults(
        {
            "rate_429": 0.04,
            "rate_429_retry_after": 0.03,
            "rate_500": 0.04,
            "rate_timeout": 0.02,
            "rate_drop": 0.04,
            "rate_drop_after": 0.03,
            "retry_after_s": 1,
            "timeout_s": 3.0,
        }
    )
    env = connector_env(
        sandbox, generation, command_max_attempts=12, command_retry_max_s=60, command_backoff_base_s=0.05,
        command_backoff_cap_s=0.5, command_transcript_on_end="false",
    )
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    refs, ids = publish_workload(publisher, "f", REFS, MESSAGES)

    by_id = results.wait_for(ids, 150)
    assert assert_exactly_one_result(by_id, ids) == 0
    failed = [records[0] for records in by_id.values() if records[0]["status"] != "SUCCEEDED"]
    assert not failed, failed[:3]

    log = sandbox.requests()
    faults = {r["fault"] for r in log if r["fault"]}
    assert {"429", "429_retry_after", "500", "timeout", "drop", "drop_after"} <= faults
    created = created_by_ref(sandbox, generation)
    assert sorted(created) == sorted(refs)
    assert all(len(ids_) == 1 for ids_ in created.values()), {r: c for r, c in created.items() if len(c) > 1}

    ref_of = {conversation_id: ref for ref, (conversation_id,) in created.items()}
    sent = sends_by_ref(log, ref_of)
    for ref in refs:
        numbers = [int(text.rsplit("#", 1)[1]) for text in sent[ref]]
        # Every message reached 8x8, in order; a repeat is a send whose answer was lost (drop_after).
        assert sorted(set(numbers)) == list(range(MESSAGES)), (ref, numbers)
        assert numbers == sorted(numbers), (ref, numbers)
    repeats = sum(len(texts) - len(set(texts)) for texts in sent.values())
    lost_answers = sum(1 for r in log if r["fault"] == "drop_after" and r["operation"].startswith("sendmessage"))
    assert repeats <= lost_answers
