"""State benchmark: a worker's RSS after 100,000 conversations started and ended, with and without retention.

    .venv/bin/python bench/state.py                        # 100,000 conversations, memory and RocksDB stores
    .venv/bin/python bench/state.py --conversations 10000  # a quick run

For each table store (memory://, rocksdb://) and each retention (0: ended conversations deleted at
the next sweep; 7 days, the default: none deleted during the run, which is how every worker kept
them before retention existed, the baseline), one worker process runs with its own topics:

1. It starts as `connector worker` does (`connector.app.build`: every agent, view and timer, the
   retention sweeper included) and, once its tables are recovered, sits idle for a few seconds:
   RSS "idle".
2. Its own task then starts and ends `--conversations` conversations, at most `--rate` a second
   and `--concurrency` at a time, through the storage path the command runner uses, not 8x8: per conversation the
   CREATING entry, the REF_MAPPING record on chat.webhooks.raw (the event agent writes `refs` from
   it, as for a real start), the QUEUED entry with the start's remembered result, and the ENDED
   entry with the end's, each `Appender.put` into the `conversations` table and its changelog,
   the entries being the runner's (`conversation.after_command`, `Conversation.remember`). The command
   agent against the sandbox would store the same entries the same way, at the pace of two
   commands per conversation: too slow for a few minutes per run.
3. When all are written and, with retention 0, the sweeper and the event agent have deleted every
   conversation and refs entry (without: the event agent has written every refs entry): RSS
   "after", and the peak (VmHWM).

Figures: RSS idle, after and peak, entries left in each table, and the growth over idle with
retention 0 against the growth without it, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.topics import create_topics  # noqa: E402
from tests.support.env import drop_topics, isolated_env, settings_of  # noqa: E402

WEEK_S = 7 * 24 * 3600
IDLE_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=400.0, help="conversations started per second, at most")
    parser.add_argument("--concurrency", type=int, default=16, help="conversations being written at a time, at most")
    parser.add_argument("--store", choices=["memory://", "rocksdb://"], action="append")
    parser.add_argument("--retention", type=int, choices=[0, WEEK_S], action="append", help="(default: both)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    print(f"workers' logs in {workdir}", file=sys.stderr)
    report: dict[str, Any] = {"conversations": args.conversations}
    for store in args.store or ["memory://", "rocksdb://"]:
        runs = {f"retention_{retention}s": _run(store, retention, args, workdir) for retention in args.retention or (0, WEEK_S)}
        if len(runs) == 2:
            kept, deleted = runs[f"retention_{WEEK_S}s"], runs["retention_0s"]
            runs["growth_ratio_retention_0_vs_none"] = round(
                (deleted["after_mb"] - deleted["idle_mb"]) / max(kept["after_mb"] - kept["idle_mb"], 0.1), 3
            )
        report[store.removesuffix("://")] = runs
    print(json.dumps(report, indent=2))


def _run(store: str, retention: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    name = f"{store.removesuffix('://')}-{retention}"
    env = isolated_env(f"state{name.replace('-', '')}{os.getpid()}", workdir / name)
    env.update({
        "CONNECTOR_TABLE_STORE": store,
        "CONNECTOR_STATE_RETENTION_S": str(retention),
        "CONNECTOR_LOG_LEVEL": "WARNING",
        "CONNECTOR_PLATFORM_CHANNEL_ID": "bench",
    })
    create_topics(settings_of(env))
    log = workdir / f"{name}.log"
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", "--conversations", str(args.conversations), "--rate", str(args.rate),
         "--concurrency", str(args.concurrency)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),
        text=True,
    )
    try:
        out, _ = child.communicate(timeout=1800)
    finally:
        if child.poll() is None:
            child.kill()
        drop_topics([env])
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{name}: the worker reported nothing (exit {child.returncode}); see {log}")
    result = lines[-1]
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"{name}: {result}", file=sys.stderr)
    return result


# --- the worker process -----------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    import faust
    import mode.loop

    from connector.app import build
    from connector.config import load_settings

    settings = load_settings()
    if settings.event_loop == "uvloop":
        mode.loop.use("uvloop")  # as `connector worker` runs
    connector = build(settings)
    app = connector.app

    @app.task
    async def drive() -> None:
        try:
            result = await _drive(connector, args.conversations, args.rate, args.concurrency)
            print(json.dumps(result), flush=True)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    worker = faust.Worker(app, loglevel="WARNING", logging_config=None, override_logging=False, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


async def _drive(connector: Any, count: int, rate: float, concurrency: int) -> dict[str, Any]:
    from connector import _faust_compat as compat

    app = connector.app
    while app.rebalancing or not app.tables.actives_ready or not compat.active_partitions(app):
        await asyncio.sleep(0.2)
    await connector.codec.start()
    await asyncio.sleep(IDLE_S)
    idle = _rss_mb()
    began = time.monotonic()
    samples: list[tuple[float, int, int, float]] = []
    sampler = asyncio.create_task(_sample(connector, began, samples))
    # Bounded like the command lanes: the writer slows down to what the worker takes, so the event
    # agent and the sweeper get their turns at the producer as they would beside real commands.
    slots = asyncio.Semaphore(concurrency)
    tasks = set()
    for number in range(count):
        if (delay := began + number / rate - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(_conversation(connector, number))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda _: slots.release())
    await asyncio.gather(*tasks)
    written_s = time.monotonic() - began
    # Retention 0: until every entry is deleted; none: until the event agent has written every refs entry.
    final = 0 if connector.settings.state_retention_s == 0 else count
    deadline = time.monotonic() + 900
    while (len(connector.conversations), len(connector.refs)) != (final, final) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    sampler.cancel()
    return {
        "samples_s_conversations_refs_mb": samples,
        "idle_mb": idle,
        "after_mb": _rss_mb(),
        "peak_mb": _rss_mb("VmHWM"),
        "conversations_left": len(connector.conversations),
        "refs_left": len(connector.refs),
        "write_s": round(written_s, 1),
        "drained_s": round(time.monotonic() - began - written_s, 1),
    }


async def _conversation(connector: Any, number: int) -> None:
    """Start and end one conversation as the runner stores it: CREATING, the REF_MAPPING, QUEUED, ENDED."""
    from connector import _faust_compat as compat
    from connector.conversation import CommandKind, Conversation, Status, after_command

    app, appender, table = connector.app, connector.appender, connector.conversations
    ref, conversation_id = f"state-{number}", f"conv-{number:08d}"
    generation = connector.settings.platform_generation.value
    partition = compat.key_partition(app, connector.commands.get_topic_name(), ref.encode()).partition
    now = int(time.time() * 1000)
    creating = Conversation(ref=ref, status=Status.CREATING, generation=generation, channel_id="bench", created_at=now, updated_at=now)
    await appender.put(table, ref, creating.to_dict(), partition)
    mapping = {"kind": "REF_MAPPING", "generation": generation, "body": b"", "headers": {}, "received_at": now, "conversation_ref": ref}
    await appender.deliver(connector.settings.topic_webhooks_raw, conversation_id.encode(), connector.codec.encode("RawWebhook", mapping))
    queued = after_command(
        creating, CommandKind.START_CONVERSATION, now, ref=ref, conversation_id=conversation_id, generation=generation, channel_id="bench"
    ).remember(f"start-{number}", _result("START_CONVERSATION", conversation_id, generation, now, number))
    await appender.put(table, ref, queued.to_dict(), partition)
    ended = after_command(queued, CommandKind.END_CONVERSATION, now).remember(
        f"end-{number}", _result("END_CONVERSATION", conversation_id, generation, now, number)
    )
    await (await appender.put(table, ref, ended.to_dict(), partition))


async def _sample(connector: Any, began: float, samples: list[tuple[float, int, int, float]]) -> None:
    """Every 10 s: seconds since the first write, entries in `conversations` and `refs`, RSS."""
    while True:
        samples.append((round(time.monotonic() - began), len(connector.conversations), len(connector.refs), _rss_mb()))
        await asyncio.sleep(10)


def _result(command_type: str, conversation_id: str, generation: str, now: int, offset: int) -> dict[str, Any]:
    """What the table keeps of a SUCCEEDED result (connector.results)."""
    return {
        "command_type": command_type,
        "status": "SUCCEEDED",
        "conversation_id": conversation_id,
        "generation": generation,
        "attempts": 1,
        "processed_at": now,
        "offset": offset,
    }


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
