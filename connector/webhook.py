"""The webhook edge: `POST /webhooks/8x8` verifies 8x8's signature and appends the raw event to Kafka.

It does the least: size limit (413), signature (401), JSON (400), then one durable append to
chat.webhooks.raw (acks=all, idempotent producer) and 2xx only once the broker acknowledged; 503
when Kafka cannot take it in time, so that 8x8 sends it again. `WEB_HOOK_VERIFY` gets 2xx and is not
published. Parsing, mapping and dedupe happen in the event agent. Bodies and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerIdMapping, OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId
from faust.web import Request, Response, View
from mode import Service
from prometheus_client import Counter, Gauge, Histogram

from connector.config import Settings
from connector.events import event_id_of, event_key
from connector.signature import HEADERS, JwkCache, SignatureError, Verifier, jwk_url

__all__ = ["PATH", "WebhookProducer", "install"]

PATH = "/webhooks/8x8"

logger = logging.getLogger(__name__)

REQUESTS = Counter("connector_webhook_requests_total", "Webhook POSTs by outcome.", ["outcome"])
REJECTED = Counter("connector_webhook_rejected_total", "Webhook POSTs refused as not authentic, by reason.", ["reason"])
LATENCY = Histogram(
    "connector_webhook_seconds",
    "Time from a webhook POST to its answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
VERIFYING = Gauge("connector_webhook_verification_enabled", "1 when webhook signatures are verified.")


class WebhookProducer:
    """The edge's own idempotent producer (acks=all) to chat.webhooks.raw.

    After a broker outage aiokafka's idempotent producer can be left with sequence numbers the
    broker refuses (OutOfOrderSequenceNumber on every later send); such a producer is replaced by a
    new one, which gets a new producer id.
    """

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._replacing: asyncio.Lock = asyncio.Lock()

    async def start(self) -> None:
        self._producer = await self._started_producer()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def append(self, key: bytes, value: bytes) -> bool:
        """True once the broker acknowledged the record; False if it did not within the timeout.

        A record not acknowledged in time may still be written later: the event agent drops the
        duplicate that 8x8's retry then makes.
        """
        producer = self._producer
        if producer is None:
            return False
        try:
            delivery = await asyncio.wait_for(
                producer.send(self._settings.topic_webhooks_raw, value=value, key=key), self._timeout_s
            )
            done, _ = await asyncio.wait((delivery,), timeout=self._timeout_s)
        except Exception as exc:  # a timeout, or one of aiokafka's many kinds while the broker is away
            logger.warning("append to %s failed: %s", self._settings.topic_webhooks_raw, type(exc).__name__)
            return False
        if not done:
            return False
        error = delivery.exception()
        if error is None:
            return True
        logger.warning("append to %s failed: %s", self._settings.topic_webhooks_raw, error)
        if isinstance(error, _BROKEN_PRODUCER):
            await self._replace(producer)
        return False

    async def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the brokers answer a metadata request for chat.webhooks.raw now.

        Only that topic is asked for: on a cluster with thousands of topics, the metadata of all of
        them is megabytes to send and seconds of CPU to decode on every readiness probe.
        """
        if self._producer is None:
            return False
        try:
            return bool(await asyncio.wait_for(self._producer.client.force_metadata_update(), timeout))
        except Exception:  # any failure means not reachable
            return False

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        async with self._replacing:
            if self._producer is not broken:
                return  # another request replaced it already
            logger.warning("replacing the webhook producer (its idempotent sequence is out of step)")
            self._producer = await self._started_producer()
        asyncio.ensure_future(broken.stop())

    async def _started_producer(self) -> AIOKafkaProducer:
        """A started producer whose metadata requests (readiness probes too) ask for chat.webhooks.raw only."""
        producer = AIOKafkaProducer(
            **settings_for_aiokafka(self._settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            request_timeout_ms=max(int(self._timeout_s * 1000), 5000),
        )
        await producer.start()
        await producer.client.add_topic(self._settings.topic_webhooks_raw)
        return producer


_BROKEN_PRODUCER = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerIdMapping, ProducerFenced)


def settings_for_aiokafka(settings: Settings) -> dict[str, Any]:
    """aiokafka's connection keyword arguments (the same names as kafka-python's, security included)."""
    config = settings.kafka_python_config()
    config["client_id"] = f"{settings.kafka_client_id}-webhooks"
    return config


def install(connector: Any) -> None:
    """Add the webhook view and the edge's producer to the app; expose readiness checks."""
    settings: Settings = connector.settings
    producer = WebhookProducer(settings, settings.webhook_append_timeout_s)
    verifier: Verifier | None = None
    keys: JwkCache | None = None
    if settings.webhook_verify_signatures:
        client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        keys = JwkCache(
            lambda kid: jwk_url(settings, kid), client, refetch_interval_s=settings.webhook_jwk_refetch_interval_s
        )
        verifier = Verifier(keys, tenant_id=settings.platform_tenant_id, window_s=settings.webhook_replay_window_s)
        VERIFYING.set(1)
        if not settings.platform_tenant_id:
            logger.warning("CONNECTOR_PLATFORM_TENANT_ID is empty: every webhook will be refused (wrong tenant)")
    else:
        VERIFYING.set(0)
        logger.warning(
            "!!! webhook signature verification is OFF (CONNECTOR_WEBHOOK_VERIFY_SIGNATURES=false): "
            "anyone who can reach %s can inject events. Development only. !!!",
            PATH,
        )

    @connector.app.service
    class _ProducerService(Service):
        """Starts and stops the edge's producer with the app."""

        async def on_start(self) -> None:
            await connector.codec.start()
            await producer.start()

        async def on_stop(self) -> None:
            await producer.stop()

    checks = connector.extras.setdefault("readiness", {})
    checks["kafka"] = producer.reachable
    if keys is not None:
        checks["jwk"] = _jwk_ready(keys)

    edge = _Edge(connector, producer, verifier, settings.webhook_max_body_bytes)

    @connector.app.page(PATH)
    class WebhookView(View):
        async def post(self, request: Request) -> Response:
            return await edge.handle(request)


class _Edge:
    def __init__(self, connector: Any, producer: WebhookProducer, verifier: Verifier | None, max_body: int) -> None:
        self._connector = connector
        self._producer = producer
        self._verifier = verifier
        self._max_body = max_body
        self._generation = connector.settings.platform_generation.value

    async def handle(self, request: Any) -> Any:
        started = time.perf_counter()
        status, reason, outcome = await self._handle(request)
        REQUESTS.labels(outcome).inc()
        LATENCY.observe(time.perf_counter() - started)
        if status < 300:
            return _answer(status)
        return _answer(status, reason)

    async def _handle(self, request: Any) -> tuple[int, str, str]:
        """(status, reason, outcome label) for one POST."""
        body = await _read_limited(request, self._max_body)
        if body is None:
            return 413, f"body larger than {self._max_body} bytes", "too_large"
        headers = {name: request.headers[name] for name in HEADERS if name in request.headers}
        if self._verifier is not None:
            try:
                await self._verifier.verify(headers, body)
            except SignatureError as exc:
                REJECTED.labels(exc.code).inc()
                logger.warning(
                    "webhook refused (401): %s; event %s, %d bytes, from %s",
                    exc,
                    headers.get("x-8x8-event-id", "-")[:64],
                    len(body),
                    request.remote,
                )
                return 401, str(exc), "unauthorized"
        try:
            event = json.loads(body)
        except ValueError as exc:
            return 400, f"body is not JSON: {exc}", "malformed"
        if not isinstance(event, dict):
            return 400, "body is not a JSON object", "malformed"
        if event.get("eventType") == "WEB_HOOK_VERIFY":
            return 204, "", "verify"
        await self._connector.codec.start()
        event_id = event_id_of(headers, body)
        value = self._connector.codec.encode(
            "RawWebhook",
            {
                "kind": "WEBHOOK",
                "generation": self._generation,
                "body": body,
                "headers": headers,
                "received_at": time.time_ns() // 1_000_000,
                "conversation_ref": None,
            },
        )
        if not await self._producer.append(event_key(body, event_id).encode(), value):
            return 503, "Kafka did not acknowledge in time; retry", "unavailable"
        return 204, "", "accepted"


async def _read_limited(request: Any, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` (stops reading there)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await request.content.read(limit + 1)
    while len(body) <= limit and not request.content.at_eof():
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return None if len(body) > limit else body


def _answer(status: int, reason: str = "") -> Any:
    from aiohttp import web

    if status == 204:
        return web.Response(status=204)
    return web.json_response({"error": reason}, status=status)


def _jwk_ready(keys: JwkCache) -> Any:
    """Readiness of signature checks: a key is cached, or the key endpoint answers (checked every 10 s)."""
    reachable_at = [float("-inf")]

    async def check() -> bool:
        if keys.cached() or time.monotonic() - reachable_at[0] < 10.0:
            return True
        if await keys.reachable():
            reachable_at[0] = time.monotonic()
            return True
        return False

    return check
