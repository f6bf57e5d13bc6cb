"""Webhook ingress benchmark: signed 8x8 webhooks over keep-alive connections, from wrk (a separate process).

    .venv/bin/python bench/ingress.py [--duration 10] [--connections 16] [--threads 1]

Needs the local stack (Kafka, registry) and `wrk` (Debian package `wrk`). In one run it measures
  (a) a bare aiohttp handler answering 204, in its own process;
  (b) the connector's edge (`connector worker`): JWS verification and an acknowledged append to Kafka;
and, first, on a quiet worker, the end-to-end latency from POST to the ChatEvent on chat.events at a
moderate rate.
Prints a JSON summary and the markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.topics import create_topics  # noqa: E402
from connector.sandbox.config import SandboxConfig  # noqa: E402
from connector.sandbox.server import start_sandbox  # noqa: E402
from connector.sandbox.signing import sign  # noqa: E402
from tests.support.avro import Avro, publish_mapping  # noqa: E402
from tests.support.env import drop_topics, free_port, isolated_env, settings_of  # noqa: E402

BENCH_CONVERSATIONS = 64

# wrk cycles through pre-signed requests (one per line: signature, tenant, customer, event id,
# transmission time, retry, body; tab-separated) and prints its summary as JSON.
LUA = r"""
local requests = {}
local index = 0
function init(args)
  for line in io.lines(args[1]) do
    local f = {}
    for field in string.gmatch(line, "([^\t]+)") do f[#f + 1] = field end
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["x-8x8-signature"] = f[1], ["x-8x8-tenant-id"] = f[2], ["x-8x8-customer-id"] = f[3],
      ["x-8x8-event-id"] = f[4], ["x-8x8-transmission-time"] = f[5], ["x-8x8-retry"] = f[6],
    }, f[7])
  end
  index = math.random(#requests)
end
function request()
  index = index % #requests + 1
  return requests[index]
end
function done(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('WRK {"requests":%d,"seconds":%f,"p50_ms":%f,"p99_ms":%f,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad))
end
"""

BARE = """
from aiohttp import web
async def handle(request):
    await request.read()
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/webhooks/8x8", handle)
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--e2e-rate", type=float, default=50.0, help="events/s for the end-to-end latency")
    parser.add_argument("--e2e-seconds", type=float, default=10.0)
    args = parser.parse_args()

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    sandbox = asyncio.run_coroutine_threadsafe(start_sandbox(SandboxConfig(port=0, agents=0)), loop).result(30).sandbox

    env = _worker_env(sandbox)
    settings = settings_of(env)
    create_topics(settings)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    lua = workdir / "ingress.lua"
    lua.write_text(LUA)
    requests_file = workdir / "requests.tsv"
    _write_requests(requests_file, sandbox, count=5000)
    results: dict[str, Any] = {}

    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE.format(port=bare_port)])
    worker = subprocess.Popen(
        [sys.executable, "-m", "connector", "worker"],
        env={**os.environ, **env},
        stdout=open(workdir / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{bare_port}/webhooks/8x8", method="POST")
        _wait_ready(f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}/readyz")
        # Latency first, on a quiet worker; then (a) and (b) back to back.
        results["e2e"] = _end_to_end(env, settings, sandbox, args.e2e_rate, args.e2e_seconds)
        for n in range(BENCH_CONVERSATIONS):  # the steady state: events of conversations the connector created
            publish_mapping(settings, f"bench-conv-{n}", f"ref-bench-conv-{n}")
        results["a_bare"] = _wrk(f"http://127.0.0.1:{bare_port}/webhooks/8x8", lua, requests_file, args)
        results["b_edge"] = _wrk(f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}/webhooks/8x8", lua, requests_file, args)
        results["ratio_b_over_a"] = round(results["b_edge"]["events_per_s"] / results["a_bare"]["events_per_s"], 3)
    finally:
        for process in (bare, worker):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_topics([env])
    results["setup"] = {
        "cores": os.cpu_count(),
        "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s",
        "partitions": env["CONNECTOR_KAFKA_PARTITIONS"],
    }
    print(json.dumps(results, indent=2))
    a, b, e = results["a_bare"], results["b_edge"], results["e2e"]
    print(f"| (a) bare aiohttp 204 | {a['events_per_s']:.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} |")
    print(f"| (b) connector edge (verify + acked append) | {b['events_per_s']:.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} |")
    print(f"| ratio b/a | {results['ratio_b_over_a']:.2f} | | |")
    print(f"| POST -> chat.events at {e['rate']:.0f}/s ({e['events']} events) | | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} |")


def _worker_env(sandbox: Any) -> dict[str, str]:
    return {
        **isolated_env(f"bench{uuid.uuid4().hex[:8]}", tempfile.mkdtemp(prefix="bench-data-")),
        "CONNECTOR_PLATFORM_BASE_URL": sandbox.url,
        "CONNECTOR_PLATFORM_TENANT_ID": sandbox.config.tenant,
        "CONNECTOR_LOG_LEVEL": "WARNING",
    }


def _signed(sandbox: Any, body: bytes, event_id: str) -> dict[str, str]:
    tt = time.time_ns() // 1_000_000
    config = sandbox.config
    return {
        "Content-Type": "application/json",
        "x-8x8-signature": sign(
            body, key=sandbox.key, kid=sandbox.kid, tenant_id=config.tenant, customer_id=config.customer_id,
            event_id=event_id, retry=0, transmission_time=tt,
        ),
        "x-8x8-tenant-id": config.tenant,
        "x-8x8-customer-id": config.customer_id,
        "x-8x8-event-id": event_id,
        "x-8x8-transmission-time": str(tt),
        "x-8x8-retry": "0",
    }


def _body(conversation: str, n: int) -> bytes:
    event = {"eventType": "TEXT", "messageType": "AGENT", "conversationId": conversation,
             "timestamp": time.time_ns() // 1_000_000, "agentId": "a1", "agentName": "Ann", "message": f"message {n}"}
    return json.dumps(event, separators=(",", ":")).encode()


def _write_requests(path: Path, sandbox: Any, count: int) -> None:
    """Distinct signed deliveries (one event id each) over the bench conversations, valid for 5 minutes."""
    with path.open("w") as out:
        for n in range(count):
            body = _body(f"bench-conv-{n % BENCH_CONVERSATIONS}", n)
            h = _signed(sandbox, body, str(uuid.uuid4()))
            fields = [h["x-8x8-signature"], h["x-8x8-tenant-id"], h["x-8x8-customer-id"], h["x-8x8-event-id"],
                      h["x-8x8-transmission-time"], h["x-8x8-retry"], body.decode()]
            out.write("\t".join(fields) + "\n")


def _wrk(url: str, lua: Path, requests_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
               "-s", str(lua), url, "--", str(requests_file)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary = json.loads(next(line for line in output.splitlines() if line.startswith("WRK "))[4:])
    summary["events_per_s"] = round(summary["requests"] / summary["seconds"], 1)
    if summary["errors"]:
        print(f"warning: {summary['errors']} errors or non-2xx answers from {url}", file=sys.stderr)
    return summary


def _end_to_end(env: dict[str, str], settings: Any, sandbox: Any, rate: float, seconds: float) -> dict[str, Any]:
    """POST unique events at `rate`/s and time each until its ChatEvent is read from chat.events."""
    from kafka import KafkaConsumer, TopicPartition

    conversations = [f"e2e-conv-{i}" for i in range(16)]
    for conversation in conversations:
        publish_mapping(settings, conversation, f"ref-{conversation}")
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(settings.topic_events, p) for p in consumer.partitions_for_topic(settings.topic_events)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for partition in partitions:
        consumer.position(partition)
    avro = Avro(settings)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for batch in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for record in batch:
                    event_id = avro.decode("ChatEvent", record.value)["event_id"]
                    if event_id in sent:
                        latencies.append((now - sent.pop(event_id)) * 1000)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}/webhooks/8x8"
    total = int(rate * seconds)
    with httpx.Client() as client:
        start = time.perf_counter()
        for n in range(total):
            time.sleep(max(0.0, start + n / rate - time.perf_counter()))
            event_id = str(uuid.uuid4())
            body = _body(conversations[n % len(conversations)], n)
            headers = _signed(sandbox, body, event_id)
            sent[event_id] = time.perf_counter()
            client.post(url, content=body, headers=headers).raise_for_status()
    deadline = time.monotonic() + 30
    while sent and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    reader.join(5)
    consumer.close()
    latencies.sort()
    if not latencies:
        raise SystemExit("no event reached chat.events in time: see the worker log")
    return {
        "rate": rate,
        "events": total,
        "received": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
    }


def _wait_ready(url: str, method: str = "GET", timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.request(method, url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not become ready in {timeout}s")


if __name__ == "__main__":
    main()
