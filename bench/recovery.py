"""Recovery after a worker's SIGKILL: seconds until every partition answers again, by group settings.

    .venv/bin/python bench/recovery.py                 # the four configurations below, 1,800 commands each
    .venv/bin/python bench/recovery.py --only static   # one of them

Two workers share the commands of 300 refs (start, 4 messages, end) against the sandbox (20 ms per
8x8 call). A third of the way in, one worker is SIGKILLed and started again at once, as a
StatefulSet does. For each partition of chat.commands: the time from the kill to its first result.
The partitions of the surviving worker answer on (about 0 s); those of the killed one wait for the
group to give them out again, which is what the settings change:

- dynamic-30s: default (no group instance id, 30 s session timeout): the group waits for the dead
  member's session to expire before the rebalance completes.
- dynamic-10s: CONNECTOR_KAFKA_SESSION_TIMEOUT_S=10 (heartbeats every 3 s).
- static-30s: CONNECTOR_KAFKA_GROUP_INSTANCE_ID per worker (the chart's pod name): the restarted
  worker rejoins under its old member name and gets its partitions back without a rebalance.
- static-10s: both.

Every run also checks that each command got exactly one original result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.client import CommandPublisher  # noqa: E402
from connector.schemas import AvroCodec  # noqa: E402
from connector.topics import assign_all, create_topics  # noqa: E402
from tests.support.env import drop_topics, free_port, isolated_env, settings_of, wait_until_ready  # noqa: E402
from tests.support.topics import resumed_after  # noqa: E402

CONFIGURATIONS = {
    "dynamic-30s": {},
    "dynamic-10s": {"CONNECTOR_KAFKA_SESSION_TIMEOUT_S": "10"},
    "static-30s": {"static": "1"},
    "static-10s": {"static": "1", "CONNECTOR_KAFKA_SESSION_TIMEOUT_S": "10"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=int, default=300)
    parser.add_argument("--only", choices=sorted(CONFIGURATIONS), action="append")
    parser.add_argument("--log-level", default="WARNING", help="the workers' CONNECTOR_LOG_LEVEL (their logs: see stderr)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    sandbox_port = free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "connector.sandbox", "--port", str(sandbox_port), "--latency-ms", "20", "--exchanges", "0",
         "--webhook-url", f"http://127.0.0.1:{free_port()}/unused", "--log-size", "50000"],
        stdout=open(workdir / "sandbox.log", "wb"), stderr=subprocess.STDOUT,
    )
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    try:
        channel = _channel(sandbox_url)
        print(f"workers' logs in {workdir}", file=sys.stderr)
        report = {
            name: _run(name, CONFIGURATIONS[name], args, sandbox_url, channel, workdir) for name in args.only or CONFIGURATIONS
        }
    finally:
        sandbox.kill()
    print(json.dumps(report, indent=2))


def _run(name: str, config: dict[str, str], args: argparse.Namespace, sandbox_url: str, channel: str, workdir: Path) -> dict[str, Any]:
    env = isolated_env(f"rec{name.replace('-', '')}{os.getpid()}", workdir / name)
    env.update({k: v for k, v in config.items() if k.startswith("CONNECTOR_")})
    env.update({
        "CONNECTOR_PLATFORM_GENERATION": "chat-api-v2",
        "CONNECTOR_PLATFORM_BASE_URL": sandbox_url,
        "CONNECTOR_PLATFORM_TENANT_ID": "sandbox-tenant",
        "CONNECTOR_PLATFORM_API_KEY": "sandbox-api-key",
        "CONNECTOR_PLATFORM_API_SECRET": "sandbox-api-secret",
        "CONNECTOR_PLATFORM_CHANNEL_ID": channel,
        "CONNECTOR_COMMAND_MAX_IN_FLIGHT": "64",
        "CONNECTOR_LOG_LEVEL": args.log_level,
    })
    settings = settings_of(env)
    create_topics(settings)
    for n in range(2):
        (workdir / name / f"w{n}").mkdir(parents=True)
    workers = [
        {**env, "CONNECTOR_WEB_PORT": str(free_port()), "CONNECTOR_ADMIN_PORT": str(free_port()),
         "CONNECTOR_DATA_DIR": str(workdir / name / f"w{n}"),
         **({"CONNECTOR_KAFKA_GROUP_INSTANCE_ID": f"worker-{n}"} if config.get("static") else {})}
        for n in range(2)
    ]
    processes = [_start(worker, workdir / f"{name}-w{n}.log") for n, worker in enumerate(workers)]
    try:
        for n, (worker, process) in enumerate(zip(workers, processes)):
            wait_until_ready(f"http://127.0.0.1:{worker['CONNECTOR_WEB_PORT']}", process, 90, str(workdir / f"{name}-w{n}.log"))
        results = _Results(settings)
        ids: list[str] = []
        with CommandPublisher(settings, wait=False) as publisher:
            names = [f"{name}-{n}" for n in range(args.refs)]
            ids += [publisher.start(ref, name=ref) for ref in names]
            for m in range(4):
                ids += [publisher.message(ref, f"{ref} #{m}") for ref in names]
            ids += [publisher.end(ref) for ref in names]
        while len(results.by_id) < len(ids) // 3:
            results.poll()
        killed_at = time.time()
        os.killpg(processes[1].pid, signal.SIGKILL)
        processes[1].wait(10)
        processes[1] = _start(workers[1], workdir / f"{name}-w1-again.log")
        deadline = time.monotonic() + 180
        while len(results.by_id) < len(ids) and time.monotonic() < deadline:
            results.poll()
        missing = len(set(ids) - results.by_id.keys())
        originals = sum(1 for records in results.by_id.values() if sum(not r["duplicate"] for r in records) != 1)
        resumed = resumed_after(results.by_id, killed_at, settings.kafka_partitions)
        outcome = {
            "every_partition_answering_again_s": round(max(resumed.values()), 1),
            "per_partition_s": {p: round(s, 1) for p, s in sorted(resumed.items())},
            "commands": len(ids),
            "without_result": missing,
            "without_exactly_one_original": originals,
        }
        print(name, json.dumps(outcome), file=sys.stderr)
        return outcome
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        drop_topics([env])


class _Results:
    """chat.command-results from the beginning, by command id."""

    def __init__(self, settings: Any) -> None:
        self._codec = AvroCodec(settings)
        self._consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
        assign_all(self._consumer, settings.topic_command_results, from_beginning=True)
        self.by_id: dict[str, list[dict[str, Any]]] = {}

    def poll(self) -> None:
        for records in self._consumer.poll(timeout_ms=200).values():
            for record in records:
                result = self._codec.decode_sync("CommandResult", record.value)
                self.by_id.setdefault(result["command_id"], []).append(result)


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "worker"], env={**os.environ, **env},
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _channel(url: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{url}/_sandbox/info", timeout=2).json()["chat-api-v2"]["channels"][0]
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the sandbox did not start")


if __name__ == "__main__":
    main()
