"""Command processor benchmark: preloaded commands through one worker against the sandbox, and the ceiling.

    .venv/bin/python bench/commands.py                      # 20,000 commands over 2,000 refs, 20 ms latency
    .venv/bin/python bench/commands.py --refs 200 --rss 0   # a quick run

1. The sandbox runs as its own process with the given latency on every 8x8 call; its webhooks are
   deleted after start (this benchmark measures commands, not events).
2. All commands (per ref: start, N messages, end) are published before the worker starts.
3. One `connector worker` process runs them; commands/s = commands / (last result - worker ready).
4. Every command must have exactly one SUCCEEDED result; the sandbox's request log is checked for
   order per ref, repeated messages and conversations created twice.
5. The ceilings: plain clients, same concurrency, same request mix and order per ref, same sandbox,
   same event loop as the worker: httpx (the issue's definition) and aiohttp (the library the
   worker sends through, the faster of the two here), the latter both before and after the worker.
6. The libraries' floor (bench/faust_floor.py): a Faust agent consuming the same commands and
   producing two records for each, nothing else. With the aiohttp ceiling's CPU per request it
   gives what the worker's CPU per command is made of (`cpu_us_per_command_breakdown`).
7. RSS of a worker whose table holds `--rss` conversations (written to the changelog directly).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from aiohttp import web
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.client import CommandPublisher  # noqa: E402
from connector.conversation import Conversation, Status  # noqa: E402
from connector.topics import TopicSpec, create_topics  # noqa: E402
from tests.support.env import drop_topics, free_port, isolated_env, settings_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=8, help="messages per ref (plus one start and one end)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--generation", default="chat-api-v2")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the commands (bench/scale.py)")
    parser.add_argument("--transcripts", action="store_true", help="read a transcript back at every end")
    parser.add_argument("--rss", type=int, default=100_000, help="conversations in the table for the RSS check (0: skip)")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                        help="also run bench/faust_floor.py: Faust consuming the same commands and producing two records each")
    parser.add_argument("--ceilings", default="aiohttp,httpx", help="which plain clients to measure: aiohttp, httpx")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=os.environ.get("CONNECTOR_EVENT_LOOP", "uvloop"),
                        help="event loop of the worker and the ceilings")
    args = parser.parse_args()

    sink_port = _serve_sink()
    sandbox_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "connector.sandbox", "--port", str(sandbox_port), "--latency-ms", str(args.latency_ms),
         "--webhook-url", f"http://127.0.0.1:{sink_port}/hook", "--exchanges", "0", "--log-size", "200000",
         "--max-conversations", "200000"],
        stdout=open(workdir / "sandbox.log", "wb"), stderr=subprocess.STDOUT,
    )
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    admin = httpx.Client(base_url=sandbox_url, timeout=60)
    _wait(lambda: admin.get("/_sandbox/info").status_code == 200, 20, "sandbox")
    info = admin.get("/_sandbox/info").json()
    channel = info[args.generation]["channels"][0]
    _delete_webhooks(admin, info)
    clients = args.ceilings.split(",")
    envs = {name: _env(workdir, name, sandbox_url, channel, args) for name in ("run", "rss")}
    try:
        report: dict[str, Any] = {"args": vars(args)}
        if "aiohttp" in clients:
            report["ceiling_aiohttp_before"] = _ceiling(args, admin, sandbox_url, channel, "aiohttp", "before")
        report["worker"] = _run_worker(args, envs["run"], admin, workdir)
        print(json.dumps(report["worker"]), file=sys.stderr)
        if args.floor:
            report["faust_floor"] = _faust_floor(envs["run"], report["worker"]["commands"], workdir)
        if "aiohttp" in clients:
            report["ceiling_aiohttp_after"] = _ceiling(args, admin, sandbox_url, channel, "aiohttp", "after")
        if "httpx" in clients:
            report["ceiling_httpx"] = _ceiling(args, admin, sandbox_url, channel, "httpx", "httpx")
        if args.rss:
            report["rss"] = _rss(args, envs["rss"], workdir)
    finally:
        sandbox.kill()
        drop_topics(envs.values())
    rate = report["worker"]["requests_per_s"]
    if "aiohttp" in clients:
        ceiling = (report["ceiling_aiohttp_before"]["requests_per_s"] + report["ceiling_aiohttp_after"]["requests_per_s"]) / 2
        report["share_of_ceiling_aiohttp"] = round(rate / ceiling, 3)
    if "httpx" in clients:
        report["share_of_ceiling_httpx"] = round(rate / report["ceiling_httpx"]["requests_per_s"], 3)
    if args.floor:
        floor = report["faust_floor"]
        http = [report[name]["cpu_us_per_request"] for name in ("ceiling_aiohttp_before", "ceiling_aiohttp_after") if name in report]
        report["cpu_us_per_command_breakdown"] = {
            "worker": report["worker"]["cpu_us_per_command"],
            "faust_consume_and_2_produces": floor["cpu_us_per_message"],
            "plain_aiohttp_request": round(sum(http) / len(http)) if http else None,
        }
    print(json.dumps(report, indent=2))


def _faust_floor(env: dict[str, str], count: int, workdir: Path) -> dict[str, Any]:
    """bench/faust_floor.py over the commands the worker ran: consume, ack, two records produced each."""
    settings = settings_of(env)
    app_id = f"{settings.app_id}-floor"
    create_topics(settings, [TopicSpec(f"{app_id}-out", settings.kafka_partitions, settings.kafka_replication_factor, {})])
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faust_floor.py"), "--bootstrap", settings.kafka_bootstrap_servers,
         "--topic", settings.topic_commands, "--count", str(count), "--app-id", app_id, "--data-dir", str(workdir / "floor")],
        capture_output=True, text=True, timeout=600,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"faust_floor failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return json.loads(lines[-1])


# --- the worker run -----------------------------------------------------------------------------


def _run_worker(args: argparse.Namespace, env: dict[str, str], admin: httpx.Client, workdir: Path) -> dict[str, Any]:
    settings = settings_of(env)
    create_topics(settings)
    admin.delete("/_sandbox/requests")
    refs = [f"bench-{i}" for i in range(args.refs)]
    started = time.perf_counter()
    ids: list[str] = []
    with CommandPublisher(settings, wait=False) as publisher:
        for ref in refs:
            ids.append(publisher.start(ref, name=f"Customer {ref}"))
        for n in range(args.messages):
            for ref in refs:
                ids.append(publisher.message(ref, f"{ref} #{n}"))
        for ref in refs:
            ids.append(publisher.end(ref))
    published = time.perf_counter() - started
    total = len(ids)

    # Each worker its own ports and state; they share the group, so the partitions are split between them.
    envs = [
        {**env, "CONNECTOR_WEB_PORT": str(free_port()), "CONNECTOR_ADMIN_PORT": str(free_port()),
         "CONNECTOR_DATA_DIR": str(workdir / f"worker-{n}")} if n else env
        for n in range(args.workers)
    ]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "connector", "worker"], env={**os.environ, **worker_env},
            stdout=open(workdir / f"worker-{n}.log", "wb"), stderr=subprocess.STDOUT,
        )
        for n, worker_env in enumerate(envs)
    ]
    try:
        for worker_env in envs:
            _wait(lambda: _ready(worker_env), 90, "worker")
        ready = time.perf_counter()
        cpu_at_ready = sum(_cpu_of(worker.pid) for worker in workers)
        counter = KafkaConsumer(**settings.kafka_python_config(), group_id=None)
        tps = [TopicPartition(settings.topic_command_results, p) for p in range(settings.kafka_partitions)]
        peak_rss = 0
        while sum(counter.end_offsets(tps).values()) < total:
            peak_rss = max(peak_rss, sum(_rss_of(worker.pid) for worker in workers))
            if time.perf_counter() - ready > 600:
                raise SystemExit("the workers did not finish in 10 minutes")
            time.sleep(0.2)
        done = time.perf_counter()
        cpu_s = sum(_cpu_of(worker.pid) for worker in workers) - cpu_at_ready
        counter.close()
    finally:
        for worker in workers:
            worker.kill()
    results = _read_results(settings, tps)
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_id[result["command_id"]].append(result)
    outcomes = defaultdict(int)
    for command_id in ids:
        records = by_id.get(command_id, [])
        outcomes["missing" if not records else "more than one" if len(records) > 1 else records[0]["status"]] += 1
    span_s = (max(r["processed_at"] for r in results) - min(r["processed_at"] for r in results)).total_seconds()
    log = admin.get("/_sandbox/requests").json()
    requests = len(log)
    return {
        "workers": args.workers,
        "commands": total,
        "published_in_s": round(published, 2),
        "wall_s": round(done - ready, 2),
        "commands_per_s": round(total / (done - ready), 1),
        "commands_per_s_processing_span": round(total / span_s, 1),
        "requests": requests,
        "requests_per_s": round(requests / (done - ready), 1),
        "results": dict(outcomes),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_command": round(cpu_s / total * 1e6),
        "peak_rss_mb": round(peak_rss / 1024, 1),
        "checks": _check_log(log, admin, args, "bench-"),
    }


def _read_results(settings: Any, tps: list[TopicPartition]) -> list[dict[str, Any]]:
    from tests.support.topics import TopicReader

    env = {"CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "CONNECTOR_SCHEMA_REGISTRY_URL": settings.schema_registry_url}
    reader = TopicReader(env, settings.topic_command_results, "CommandResult")
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None)
    total = sum(consumer.end_offsets(tps).values())
    consumer.close()
    while len(reader.records) < total:
        reader.poll(1.0)
    reader.close()
    return reader.records


def _check_log(log: list[dict[str, Any]], admin: httpx.Client, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Order per ref, repeated messages and duplicate conversations, from the sandbox's request log."""
    conversations = [c for c in admin.get("/_sandbox/conversations").json() if c["generation"] == args.generation]
    ref_of: dict[str, str] = {}
    created: dict[str, int] = defaultdict(int)
    for conversation in conversations:
        customer = conversation["customer"]
        ref = customer.get("connectorRef") or next(
            (p["value"] for p in customer.get("additionalProperties", []) if p["key"] == "connectorRef"), None
        )
        if ref and ref.startswith(prefix):
            ref_of[conversation["id"]] = ref
            created[ref] += 1
    sent: dict[str, list[int]] = defaultdict(list)
    for request in log:
        if request["operation"].startswith("sendmessage") and request["status"] == 202:
            conversation_id = request["path"].split("/conversations/")[1].split("/")[0]
            if conversation_id in ref_of:
                sent[ref_of[conversation_id]].append(int(request["body"]["text"].rsplit("#", 1)[1]))
    operations: dict[str, int] = defaultdict(int)
    for request in log:
        operations[f"{request['operation']} {request['status']}"] += 1
    return {
        "operations": dict(operations),
        "refs": len(created),
        "conversations_created_twice": sum(1 for n in created.values() if n > 1),
        "refs_out_of_order": sum(1 for numbers in sent.values() if numbers != sorted(numbers)),
        "messages_repeated": sum(len(n) - len(set(n)) for n in sent.values()),
        "messages_missing": sum(args.messages - len(set(n)) for n in sent.values()) + args.messages * (len(created) - len(sent)),
    }


# --- the ceilings: plain clients ----------------------------------------------------------------


def _ceiling(args: argparse.Namespace, admin: httpx.Client, sandbox_url: str, channel: str, client: str, prefix: str) -> dict[str, Any]:
    """Run the request mix with one plain client on the worker's event loop; check the sandbox log."""
    admin.delete("/_sandbox/requests")
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    figures = run(_plain_client(args, sandbox_url, channel, client, prefix))
    figures["checks"] = _check_log(admin.get("/_sandbox/requests").json(), admin, args, f"{prefix}-")
    return figures


async def _plain_client(args: argparse.Namespace, sandbox_url: str, channel: str, client: str, prefix: str) -> dict[str, Any]:
    """Per ref in order, refs in parallel, `in_flight` requests at once, one pool of `in_flight` connections."""
    if client == "httpx":
        limits = httpx.Limits(max_connections=args.in_flight, max_keepalive_connections=args.in_flight)
        session: Any = httpx.AsyncClient(base_url=sandbox_url, limits=limits, timeout=30)
    else:
        session = aiohttp.ClientSession(sandbox_url, connector=aiohttp.TCPConnector(limit=args.in_flight))

    async def send(method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        """The answer's JSON body (or None), after raising for a non-2xx status."""
        if client == "httpx":
            response = await session.request(method, path, headers=headers, **kwargs)
            response.raise_for_status()
            return response.json() if response.content else None
        async with session.request(method, path, headers=headers, **kwargs) as answer:
            answer.raise_for_status()
            content = await answer.read()
        return json.loads(content) if content else None

    async with session:
        if args.generation == "chat-api-v2":
            basic = "Basic " + base64.b64encode(b"sandbox-api-key:sandbox-api-secret").decode()
            answer = await send("POST", "/oauth/v2/token", {"Authorization": basic}, data={"grant_type": "client_credentials"})
            headers = {"Authorization": f"Bearer {answer['access_token']}"}
            root = "/vcc/us/chat/v2/tenant/sandbox-tenant"
        else:
            headers = {"x-api-key": "sandbox-api-key", "X-8x8-Tenant": "sandbox-tenant"}
            root = "/chat-gateway/v1"
        slots = asyncio.Semaphore(args.in_flight)
        count = 0

        async def call(method: str, path: str, **kwargs: Any) -> Any:
            nonlocal count
            async with slots:
                answer = await send(method, root + path, headers, **kwargs)
            count += 1
            return answer

        async def conversation(ref: str) -> None:
            if args.generation == "chat-api-v2":
                body = {"channelId": channel, "customer": {"name": ref, "connectorRef": ref}}
            else:
                body = {"channelId": channel, "user": {"name": ref, "additionalProperties": [{"key": "connectorRef", "value": ref}]}}
            conversation_id = (await call("POST", "/conversations", json=body))["conversationId"]
            for n in range(args.messages):
                await call("POST", f"/conversations/{conversation_id}/messages", json={"text": f"{ref} #{n}", "authorType": "user"})
            if args.generation == "chat-api-v2":
                await call("DELETE", f"/conversations/{conversation_id}/participants/customer")
            else:
                await call("PATCH", f"/conversations/{conversation_id}/participants/user", json={"removed": True})

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(conversation(f"{prefix}-{i}") for i in range(args.refs)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"client": client, "requests": count, "wall_s": round(elapsed, 2), "requests_per_s": round(count / elapsed, 1),
            "cpu_us_per_request": round(cpu / count * 1e6)}


# --- RSS with a big table ------------------------------------------------------------------------


def _rss(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Write `--rss` conversations to the changelog as the worker stores them, start a worker, measure RSS."""
    settings = settings_of(env)
    create_topics(settings)
    producer = KafkaProducer(**settings.kafka_python_config(), acks=1, linger_ms=20, batch_size=256 * 1024)
    topic = f"{settings.app_id}-conversations-changelog"
    now = int(time.time() * 1000)
    for i in range(args.rss):
        ref = f"rss-{i}"
        conversation = Conversation(
            ref=ref, status=Status.QUEUED, conversation_id=uuid.uuid4().hex, generation=args.generation, channel_id="1",
            interaction_count=1, created_at=now, updated_at=now,
        ).remember(str(uuid.uuid4()), {"command_type": "START_CONVERSATION", "status": "SUCCEEDED", "attempts": 1, "processed_at": now})
        # The worker's changelog format: raw UTF-8 keys (connector.app.table), JSON values.
        producer.send(topic, key=ref.encode(), value=json.dumps(conversation.to_dict()).encode())
    producer.flush()
    producer.close()
    worker = subprocess.Popen(
        [sys.executable, "-m", "connector", "worker"], env={**os.environ, **env},
        stdout=open(workdir / "worker-rss.log", "wb"), stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: _ready(env), 300, "worker (rss)")
        url = f"http://127.0.0.1:{env['CONNECTOR_ADMIN_PORT']}"  # the internal port: /conversations
        probe = httpx.get(f"{url}/conversations/rss-{args.rss - 1}", timeout=10)
        assert probe.status_code == 200, probe.text
        time.sleep(2)
        return {"conversations": args.rss, "worker_rss_mb": round(_rss_of(worker.pid) / 1024, 1)}
    finally:
        worker.kill()


# --- helpers -------------------------------------------------------------------------------------


def _delete_webhooks(admin: httpx.Client, info: dict[str, Any]) -> None:
    """Webhook delivery off (its RS256 signing would compete with the API for the sandbox's core)."""
    token = admin.post(
        "/oauth/v2/token", data={"grant_type": "client_credentials"}, auth=("sandbox-api-key", "sandbox-api-secret")
    ).json()["access_token"]
    for webhook in info["chat-api-v2"]["webhooks"]:
        admin.delete(
            f"/vcc/us/chat/v2/tenant/sandbox-tenant/web-hooks/{webhook}", headers={"Authorization": f"Bearer {token}"}
        ).raise_for_status()
    for webhook in info["chat-gateway-v1"]["webhooks"]:
        admin.delete(
            f"/chat-gateway/v1/webhooks/{webhook}", headers={"x-api-key": "sandbox-api-key", "X-8x8-Tenant": "sandbox-tenant"}
        ).raise_for_status()


def _env(workdir: Path, name: str, sandbox_url: str, channel: str, args: argparse.Namespace) -> dict[str, str]:
    return {
        **isolated_env(f"b{uuid.uuid4().hex[:8]}", workdir / name, partitions=8),
        "CONNECTOR_PLATFORM_GENERATION": args.generation,
        "CONNECTOR_PLATFORM_BASE_URL": sandbox_url,
        "CONNECTOR_PLATFORM_TENANT_ID": "sandbox-tenant",
        "CONNECTOR_PLATFORM_API_KEY": "sandbox-api-key",
        "CONNECTOR_PLATFORM_API_SECRET": "sandbox-api-secret",
        "CONNECTOR_PLATFORM_CHANNEL_ID": channel,
        "CONNECTOR_COMMAND_MAX_IN_FLIGHT": str(args.in_flight),
        "CONNECTOR_COMMAND_TRANSCRIPT_ON_END": "true" if args.transcripts else "false",
        "CONNECTOR_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "CONNECTOR_EVENT_LOOP": args.loop,
    }


def _ready(env: dict[str, str]) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} not ready in {timeout}s")


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_of(pid: int) -> int:
    """Resident set size of `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _serve_sink() -> int:
    """A webhook receiver answering 200 to everything, on its own thread."""
    port = free_port()

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    def run() -> None:
        app = web.Application()
        app.router.add_post("/hook", ok)
        web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=False, access_log=None)

    threading.Thread(target=run, daemon=True).start()
    _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 10, "sink")
    return port


if __name__ == "__main__":
    main()
