"""Helpers of the ingress tests: the sandbox or a bare key endpoint on their own loop, signed POSTs, Kafka readers,
Avro through the registry."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kafka import KafkaConsumer, TopicPartition

from connector.config import Settings
from connector.sandbox.config import SandboxConfig
from connector.sandbox.server import RunningSandbox, start_sandbox
from connector.topics import create_topics
from tests.support.avro import Avro
from tests.support.env import free_port, settings_of
from tests.unit.test_signature import b64url, jwk


class SandboxThread:
    """A sandbox serving on its own event loop in a thread; `call` runs a function on that loop."""

    def __init__(self, config: SandboxConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox", daemon=True)
        self._thread.start()
        self.running: RunningSandbox = self.run(start_sandbox(config))
        self.sandbox = self.running.sandbox

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            return function(*args, **kwargs)

        return self.run(call())

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery attempt the sandbox made so far."""
        return self.call(self.sandbox.deliveries.records)

    def pending(self) -> int:
        return self.call(self.sandbox.deliverer.pending)

    def stop(self) -> None:
        self.run(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def ingress_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The test's connector variables, its topics created, verification pointed at the sandbox below."""
    create_topics(settings_of(settings_env))
    return dict(settings_env)


@pytest.fixture
def sandbox(ingress_env: dict[str, str]) -> Iterator[SandboxThread]:
    """A sandbox with no simulated agents (the tests drive its notifier), sending webhooks to the worker."""
    port = ingress_env["CONNECTOR_WEB_PORT"]
    config = SandboxConfig(
        port=0,
        agents=0,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/8x8",
        retry_initial_s=0.1,
        retry_max_s=0.5,
        delivery_timeout_s=10.0,
    )
    thread = SandboxThread(config)
    ingress_env.update(
        CONNECTOR_PLATFORM_BASE_URL=thread.sandbox.url,
        CONNECTOR_PLATFORM_TENANT_ID=config.tenant,
    )
    yield thread
    thread.stop()


class KeyServer:
    """8x8's JWK endpoint and nothing else, on its own loop in a thread; records every path asked for.

    `serve(kid, key)` publishes a key (`as_string`: as a JSON string holding the JWK, which is what
    8x8's specs declare); any other path answers 404.
    """

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {}
        self.paths: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="keys", daemon=True)
        self._thread.start()

        async def answer(request: web.Request) -> web.Response:
            self.paths.append(request.path)
            parts = request.path.split("/")
            if request.path.startswith("/vcc/") and parts[-1] == "public" and parts[-2] in self.jwks:
                return web.json_response(self.jwks[parts[-2]])
            return web.json_response({"error": "not found"}, status=404)

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{path:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.url = f"http://127.0.0.1:{port}"
            return runner

        self._runner = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def serve(self, kid: str, key: rsa.RSAPrivateKey, *, as_string: bool = False) -> None:
        self.jwks[kid] = json.dumps(jwk(key, kid)) if as_string else jwk(key, kid)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.stop()


# --- signing -------------------------------------------------------------------------------------


def signed_headers(
    body: bytes,
    key: rsa.RSAPrivateKey,
    kid: str,
    *,
    tenant: str = "sandbox-tenant",
    customer: str = "sandbox-customer",
    event_id: str | None = None,
    retry: int = 0,
    tt: int | None = None,
    alg: str = "RS256",
) -> dict[str, str]:
    """The x-8x8-* headers of a delivery signed as API.md says (our own signer, not the sandbox's)."""
    event_id = event_id or str(uuid.uuid4())
    tt = tt if tt is not None else time.time_ns() // 1_000_000
    protected = b64url(json.dumps({"b64": False, "crit": ["b64"], "kid": kid, "alg": alg}).encode())
    payload = (
        f'{{"checksum":{zlib.crc32(body)},"cid":"{customer}","eid":"{event_id}",'
        f'"retry":{retry},"tid":"{tenant}","tt":{tt}}}'
    ).encode()
    signature = key.sign(protected.encode() + b"." + payload, padding.PKCS1v15(), hashes.SHA256())
    return {
        "content-type": "application/json",
        "x-8x8-signature": f"{protected}..{b64url(signature)}",
        "x-8x8-tenant-id": tenant,
        "x-8x8-customer-id": customer,
        "x-8x8-event-id": event_id,
        "x-8x8-transmission-time": str(tt),
        "x-8x8-retry": str(retry),
    }


def consume(settings: Settings, topic: str, *, until: Callable[[list], bool], timeout: float = 30.0) -> list:
    """All records of `topic` from the beginning, read until `until(records)` or the timeout."""
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def chat_events(settings: Settings, *, until: Callable[[list], bool], timeout: float = 30.0) -> list[tuple[str, dict]]:
    """(key, decoded ChatEvent) of chat.events, in offset order per partition."""
    avro = Avro(settings)
    decoded: list[tuple[str, dict]] = []

    def enough(records: list) -> bool:
        while len(decoded) < len(records):
            record = records[len(decoded)]
            decoded.append((record.key.decode(), avro.decode("ChatEvent", record.value)))
        return until(decoded)

    consume(settings, settings.topic_events, until=enough, timeout=timeout)
    return decoded


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {condition}")


def worker_url(env: dict[str, str]) -> str:
    """The worker's public port: webhooks and health."""
    return f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}"


def admin_url(env: dict[str, str]) -> str:
    """The worker's internal admin port: metrics, conversations, Faust's routing."""
    return f"http://127.0.0.1:{env['CONNECTOR_ADMIN_PORT']}"


def post(env: dict[str, str], body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{worker_url(env)}/webhooks/8x8", content=body, headers=headers, timeout=30)
