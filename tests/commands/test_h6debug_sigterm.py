"""TEMPORARY debug copy of test_sigterm (h6); deleted before the report."""
from __future__ import annotations

import signal, time, uuid, json
from kafka import KafkaConsumer, TopicPartition, KafkaAdminClient
import pytest
from tests.commands.conftest import Results, assert_exactly_one_result, settings_of

pytestmark = pytest.mark.kafka
REFS = 100
MESSAGES = 8


def test_debug(start_sandbox, connector_env, start_worker, publisher_for, readers, tmp_path) -> None:
    sandbox = start_sandbox("--latency-ms", "20", "--exchanges", "0")
    env = connector_env(sandbox, "chat-api-v2", command_max_in_flight=32, log_level="WARNING")
    worker = start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    run = uuid.uuid4().hex[:6]
    refs = [f"g{run}-{i}" for i in range(REFS)]
    ids = [publisher.start(ref, name=f"Customer {ref}") for ref in refs]
    for n in range(MESSAGES):
        ids += [publisher.message(ref, f"{ref} #{n}") for ref in refs]
    ids += [publisher.end(ref) for ref in refs]
    publisher.flush()
    while len(results.by_id) < len(ids) // 3:
        results.poll(0.1)
    t0 = time.time()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    print("stopped in", time.time() - t0)
    settings = settings_of(env)
    admin = KafkaAdminClient(bootstrap_servers=env["CONNECTOR_KAFKA_BOOTSTRAP_SERVERS"])
    committed = {}
    print("committed", committed)
    # where each command id sits
    c = KafkaConsumer(bootstrap_servers=env["CONNECTOR_KAFKA_BOOTSTRAP_SERVERS"], enable_auto_commit=False)
    tps = [TopicPartition(env["CONNECTOR_TOPIC_COMMANDS"], p) for p in range(4)]
    c.assign(tps); c.seek_to_beginning(*tps)
    where = {}
    idx = {i: n for n, i in enumerate(ids)}
    while True:
        r = c.poll(timeout_ms=1000)
        if not r: break
        for recs in r.values():
            for m in recs:
                for cid in ids:
                    pass
                where[(m.partition, m.offset)] = m.value
    results.poll(2)
    done_at_stop = {cid for cid, rs in results.by_id.items()}
    print("results at stop", len(done_at_stop))
    # per partition: offsets whose command has a result
    enc = {cid: cid.encode() for cid in ids}
    per_part = {}
    for (p, o), v in sorted(where.items()):
        cid = next((cid for cid, e in enc.items() if e in v), None)
        per_part.setdefault(p, []).append((o, cid in done_at_stop))
    for p, lst in sorted(per_part.items()):
        first_missing = next((o for o, d in lst if not d), None)
        done_after = [o for o, d in lst if d and first_missing is not None and o > first_missing]
        print("partition", p, "n", len(lst), "committed", committed.get(p), "first without result", first_missing, "done after that", done_after[:20])
    start_worker(env)
    by_id = results.wait_for(ids, 150)
    dups = {cid: rs for cid, rs in by_id.items() if any(r["duplicate"] for r in rs)}
    for cid, rs in dups.items():
        loc = next(((p, o) for (p, o), v in where.items() if enc[cid] in v), None)
        print("DUP", cid, loc, [(r["duplicate"], r["processed_at"].timestamp() - t0) for r in rs])
    assert not dups
