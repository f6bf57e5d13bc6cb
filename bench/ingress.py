"""Webhook ingress benchmark: signed 8x8 webhooks over keep-alive connections, from wrk (a separate process).

    .venv/bin/python bench/ingress.py [--duration 10] [--connections 64] [--threads 2]

Needs the local stack (Kafka, registry) and `wrk` (Debian package `wrk`). In one run, each server in
its own process on the same event loop (uvloop), it measures
  (a) a bare aiohttp handler answering 204;
  (b) a plain aiohttp handler that appends the body with the edge's producer settings (aiokafka,
      acks=all, idempotent, linger 1 ms) and answers after the ack: the library floor;
  (b2) (b) plus the RS256 verification of the signature (cryptography, key in hand): the floor of
      any edge that checks 8x8's signature, so (b2)/(b) bounds (c)/(b);
  (c) `connector edge`: JWS verification, Avro record, the acknowledged append;
  (d) the same edge inside a worker (CONNECTOR_WORKER_SERVE_WEBHOOKS=true), the worker consuming;
how long `connector edge` takes from its start to its first ready `/readyz`; and, on a quiet
worker, the end-to-end latency from a POST to the edge to the ChatEvent on chat.events.
Prints a JSON summary and the markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
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
from kafka.admin import KafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.config import KAFKA_MAX_REQUEST_BYTES  # noqa: E402
from connector.topics import create_topics  # noqa: E402
from connector.sandbox.config import SandboxConfig  # noqa: E402
from connector.sandbox.server import start_sandbox  # noqa: E402
from connector.sandbox.signing import sign  # noqa: E402
from tests.support.avro import Avro, publish_mapping  # noqa: E402
from tests.support.env import drop_topics, free_port, isolated_env, settings_of  # noqa: E402
from tests.support.topics import wait_consumed  # noqa: E402

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
import uvloop
from aiohttp import web
async def handle(request):
    await request.read()
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/webhooks/8x8", handle)
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None, loop=uvloop.new_event_loop())
"""

# The library floor: what any aiohttp + aiokafka service pays for an acknowledged append. With `_VERIFYING`'s
# setup and check, (b2): the floor of any edge that checks 8x8's signature.
PLAIN = """
import asyncio, uvloop
from aiohttp import web
from aiokafka import AIOKafkaProducer
{setup}
async def main():
    producer = AIOKafkaProducer(bootstrap_servers={bootstrap!r}, acks="all", enable_idempotence=True, linger_ms=1,
                                max_request_size={max_request_size})
    await producer.start()
    async def handle(request):
        body = await request.read()
{check}
        await (await producer.send({topic!r}, body, key=request.headers.get("x-8x8-event-id", "").encode()))
        return web.Response(status=204)
    app = web.Application()
    app.router.add_post("/webhooks/8x8", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", {port}).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""

# (b2)'s RS256 verification of each delivery with the key in hand (cryptography; the payload rebuilt from the
# headers and the body's CRC32), nothing else; the key's numbers are added after this setup.
_VERIFYING_SETUP = """import base64, zlib
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
PADDING, HASH = padding.PKCS1v15(), hashes.SHA256()"""
_VERIFYING_CHECK = """        h = request.headers
        try:
            protected, _, signature = h["x-8x8-signature"].split(".")
            payload = ('{"checksum":%d,"cid":"%s","eid":"%s","retry":%s,"tid":"%s","tt":%s}' % (zlib.crc32(body),
                       h["x-8x8-customer-id"], h["x-8x8-event-id"], h["x-8x8-retry"], h["x-8x8-tenant-id"],
                       h["x-8x8-transmission-time"])).encode()
            KEY.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                       protected.encode() + b"." + payload, PADDING, HASH)
        except (KeyError, ValueError, InvalidSignature):
            return web.Response(status=401)"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a), (b), (c) back to back; medians reported")
    parser.add_argument("--starts", type=int, default=5, help="starts of `connector edge` timed")
    parser.add_argument("--e2e-rate", type=float, default=50.0, help="events/s for the end-to-end latency")
    parser.add_argument("--e2e-seconds", type=float, default=10.0)
    args = parser.parse_args()

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    sandbox = asyncio.run_coroutine_threadsafe(start_sandbox(SandboxConfig(port=0, agents=0)), loop).result(30).sandbox

    env = _worker_env(sandbox)
    settings = settings_of(env)
    create_topics(settings)
    plain_topic = f"{env['CONNECTOR_APP_ID']}-bench-plain"  # dropped with the app's own topics
    admin = KafkaAdminClient(**settings.kafka_python_config())
    admin.create_topics([NewTopic(plain_topic, settings.kafka_partitions, 1)])
    admin.close()
    for n in range(BENCH_CONVERSATIONS):  # the steady state: events of conversations the connector created
        publish_mapping(settings, f"bench-conv-{n}", f"ref-bench-conv-{n}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    lua = workdir / "ingress.lua"
    lua.write_text(LUA)
    requests_file = workdir / "requests.tsv"
    _write_requests(requests_file, sandbox, count=5000)
    results: dict[str, Any] = {}
    processes: list[subprocess.Popen] = []

    def spawn(name: str, command: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        process = subprocess.Popen(command, env={**os.environ, **env, **(extra or {})},
                                   stdout=open(workdir / f"{name}.log", "ab"), stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    edge_command = [sys.executable, "-m", "connector", "edge"]
    try:
        results["edge_start_ms"] = _start_times(spawn, edge_command, env, args.starts)
        bare_port, plain_port, verifying_port = free_port(), free_port(), free_port()
        bare = spawn("bare", [sys.executable, "-c", BARE.format(port=bare_port)])
        producing = {"bootstrap": settings.kafka_bootstrap_servers, "max_request_size": KAFKA_MAX_REQUEST_BYTES,
                     "topic": plain_topic}
        plain = spawn("plain", [sys.executable, "-c", PLAIN.format(port=plain_port, setup="", check="", **producing)])
        public = sandbox.key.public_key().public_numbers()
        setup = f"{_VERIFYING_SETUP}\nKEY = rsa.RSAPublicNumbers({public.e}, {public.n}).public_key()"
        verifying = spawn("plain-verifying", [sys.executable, "-c", PLAIN.format(
            port=verifying_port, setup=setup, check=_VERIFYING_CHECK, **producing)])
        edge = spawn("edge", edge_command)
        for port in (bare_port, plain_port, verifying_port):
            _wait_ready(f"http://127.0.0.1:{port}/webhooks/8x8", method="POST")
        _wait_ready(f"{_url(env)}/readyz")
        # (a), (b), (b2), (c) back to back, no worker running, in rounds: a load that comes and goes on the
        # machine hits every target alike.
        targets = {"a_bare": f"http://127.0.0.1:{bare_port}/webhooks/8x8",
                   "b_plain": f"http://127.0.0.1:{plain_port}/webhooks/8x8",
                   "b2_plain_verifying": f"http://127.0.0.1:{verifying_port}/webhooks/8x8",
                   "c_edge": f"{_url(env)}/webhooks/8x8"}
        for url in targets.values():  # warm-up, not counted: the first seconds of a fresh process and topic are slower
            _wrk(url, lua, requests_file, args, seconds=5)
        rounds = [{name: _wrk(url, lua, requests_file, args) for name, url in targets.items()} for _ in range(args.rounds)]
        results["rounds"] = rounds
        for name in targets:
            results[name] = _median_run([r[name] for r in rounds])
        for name, over in (("c_over_b", "b_plain"), ("b2_over_b", "b_plain"), ("c_over_b2", "b2_plain_verifying")):
            numerator = "b2_plain_verifying" if name.startswith("b2") else "c_edge"
            results[f"ratio_{name}_per_round"] = [
                round(r[numerator]["events_per_s"] / r[over]["events_per_s"], 3) for r in rounds]
        for process in (bare, plain, verifying):
            _stop(process)
        # A worker serving webhooks itself, once it has caught up with what (c) appended.
        worker_env = {"CONNECTOR_WORKER_SERVE_WEBHOOKS": "true", "CONNECTOR_WEB_PORT": str(free_port()),
                      "CONNECTOR_ADMIN_PORT": str(free_port())}
        spawn("worker", [sys.executable, "-m", "connector", "worker"], worker_env)
        _wait_ready(f"{_url(worker_env)}/readyz")
        wait_consumed(env, settings.topic_webhooks_raw, timeout=600)
        results["e2e"] = _end_to_end(f"{_url(env)}/webhooks/8x8", settings, sandbox, args.e2e_rate, args.e2e_seconds)
        _stop(edge)
        _write_requests(requests_file, sandbox, count=5000)  # signed anew: the first ones may be near the replay window's end
        results["d_worker_edge"] = _wrk(f"{_url(worker_env)}/webhooks/8x8", lua, requests_file, args)
    finally:
        for process in processes:
            _stop(process)
        drop_topics([env])
    a, b, b2, c, d = (results[name]["events_per_s"]
                      for name in ("a_bare", "b_plain", "b2_plain_verifying", "c_edge", "d_worker_edge"))
    results["ratio_c_over_b"] = round(c / b, 3)
    results["ratio_b2_over_b"] = round(b2 / b, 3)
    results["ratio_c_over_b2"] = round(c / b2, 3)
    results["ratio_c_over_a"] = round(c / a, 3)
    results["ratio_d_over_b"] = round(d / b, 3)
    results["setup"] = {
        "cores": os.cpu_count(),
        "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s",
        "partitions": env["CONNECTOR_KAFKA_PARTITIONS"],
    }
    print(json.dumps(results, indent=2))
    rows = [("(a) bare aiohttp 204", "a_bare"), ("(b) aiohttp + aiokafka acks=all, answer after the ack", "b_plain"),
            ("(b2) (b) + RS256 verification, nothing else", "b2_plain_verifying"),
            ("(c) `connector edge` (verify + Avro + acked append)", "c_edge"),
            ("(d) the same edge inside a worker", "d_worker_edge")]
    for label, name in rows:
        r = results[name]
        print(f"| {label} | {r['events_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    print(f"| ratio (c)/(b) | {results['ratio_c_over_b']:.2f} (rounds: {results['ratio_c_over_b_per_round']}) | | | |")
    print(f"| ratio (b2)/(b): the bound of any verifying edge | {results['ratio_b2_over_b']:.2f} "
          f"(rounds: {results['ratio_b2_over_b_per_round']}) | | | |")
    print(f"| ratio (c)/(b2) | {results['ratio_c_over_b2']:.2f} (rounds: {results['ratio_c_over_b2_per_round']}) | | | |")
    print(f"| ratio (c)/(a) | {results['ratio_c_over_a']:.2f} | | | |")
    print(f"| ratio (d)/(b) | {results['ratio_d_over_b']:.2f} | | | |")
    e, starts = results["e2e"], results["edge_start_ms"]
    print(f"| POST -> chat.events at {e['rate']:.0f}/s ({e['events']} events) | | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | |")
    print(f"| `connector edge` start to ready, ms (median, max of {len(starts['all'])}) | | {starts['median']:.0f} | {starts['max']:.0f} | |")
    print(f"| CPU time of `connector edge` until ready, ms (median) | | {starts['cpu_median']:.0f} | | |")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput among `runs`."""
    return sorted(runs, key=lambda run: run["events_per_s"])[len(runs) // 2]


def _url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}"


def _start_times(spawn: Any, command: list[str], env: dict[str, str], starts: int) -> dict[str, Any]:
    """Milliseconds from starting `connector edge` to its first 200 on /readyz, `starts` times; and the CPU time
    the process had used by then (what the wall time comes down to on an idle machine)."""
    times, cpu = [], []
    for n in range(starts):
        began = time.perf_counter()
        process = spawn(f"edge-start-{n}", command)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{_url(env)}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
        else:
            raise SystemExit("connector edge did not become ready in 30 s: see its log")
        times.append(round((time.perf_counter() - began) * 1000))
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu.append(round((int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")))  # utime + stime
        _stop(process)
    return {"all": times, "median": statistics.median(times), "max": max(times), "cpu_ms": cpu,
            "cpu_median": statistics.median(cpu)}


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def _wrk(url: str, lua: Path, requests_file: Path, args: argparse.Namespace, seconds: int | None = None) -> dict[str, Any]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds or args.duration}s", "--latency",
               "-s", str(lua), url, "--", str(requests_file)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary = json.loads(next(line for line in output.splitlines() if line.startswith("WRK "))[4:])
    summary["events_per_s"] = round(summary["requests"] / summary["seconds"], 1)
    if summary["errors"]:
        print(f"warning: {summary['errors']} errors or non-2xx answers from {url}", file=sys.stderr)
    return summary


def _end_to_end(url: str, settings: Any, sandbox: Any, rate: float, seconds: float) -> dict[str, Any]:
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
