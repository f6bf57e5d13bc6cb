"""The webhook edge: `POST /webhooks/8x8` verifies 8x8's signature and appends the raw event to Kafka.

It does the least: body read within a deadline (408) and a size limit (413), signature (401), JSON
(400), then one durable append to chat.webhooks.raw (acks=all, idempotent producer) and 2xx only
once the broker acknowledged; 503 when Kafka cannot take it in time or the signing key cannot be
had now, so that 8x8 sends it again. `WEB_HOOK_VERIFY` gets 2xx and is not published. Parsing,
mapping and dedupe happen in the event agent. Answers to the sender never say which check failed;
the log line and the metric label do. Bodies, signatures and secrets are never logged or stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerIdMapping, OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId
from mode import Service
from prometheus_client import Counter, Gauge, Histogram

from connector import _faust_compat as compat
from connector.config import KAFKA_MAX_REQUEST_BYTES, RECORD_OVERHEAD_BYTES, Settings
from connector.kafka_errors import KafkaTrouble
from connector.normalise import NormaliseError, event_id_of, event_key, parse
from connector.schemas import AvroCodec
from connector.signature import HEADERS, EventBodies, JwkCache, KeyUnavailable, SignatureError, Verifier, jwk_url

if TYPE_CHECKING:  # the edge imports this module and must not import Faust
    from connector.app import Connector

__all__ = [
    "PATH",
    "Edge",
    "WebhookProducer",
    "install",
    "readiness_checks",
    "verifier_of",
]

PATH = "/webhooks/8x8"
# Stored with the record: the delivery headers except the signature, which must not be handed to
# every reader of chat.webhooks.raw (with a forged body of the same CRC32 it would pass again).
STORED_HEADERS = tuple(name for name in HEADERS if name != "x-8x8-signature")

logger = logging.getLogger(__name__)

REQUESTS = Counter("connector_webhook_requests_total", "Webhook POSTs by outcome.", ["outcome"])
REJECTED = Counter("connector_webhook_rejected_total", "Webhook POSTs refused as not authentic, by reason.", ["reason"])
KEY_UNAVAILABLE = Counter(
    "connector_webhook_key_unavailable_total",
    "Webhook POSTs answered 503 because the signing key could not be had now.",
    ["reason"],
)
LATENCY = Histogram(
    "connector_webhook_request_seconds",
    "Time from a webhook POST to its answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
VERIFYING = Gauge("connector_webhook_verification_enabled", "1 when webhook signatures are verified.")

# A record batch of one record adds less than this to the key and the value.
_BATCH_FRAMING_BYTES = 1024
_UNAUTHORIZED = {"error": "not authenticated"}
_UNAVAILABLE = {"error": "temporarily unavailable, retry"}


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
        topic = self._settings.topic_webhooks_raw
        try:
            # One deadline for the send and the ack; aiokafka skips a delivery future cancelled by it.
            async with asyncio.timeout(self._timeout_s):
                await (await producer.send(topic, value=value, key=key))
        except TimeoutError:
            logger.warning("append to %s failed: no ack within %g s", topic, self._timeout_s)
            return False
        except Exception as exc:  # one of aiokafka's many kinds while the broker is away
            logger.warning("append to %s failed: %s", topic, exc)
            if isinstance(exc, _BROKEN_PRODUCER):
                await self._replace(producer)
            return False
        return True

    async def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the brokers answer a metadata request for chat.webhooks.raw now.

        Only that topic is asked for: on a cluster with thousands of topics, the metadata of all of
        them is megabytes to send and seconds of CPU to decode on every readiness probe.
        """
        if self._producer is None:
            return False
        try:
            return await asyncio.wait_for(compat.refresh_metadata(self._producer), timeout)
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
            max_request_size=KAFKA_MAX_REQUEST_BYTES,
            request_timeout_ms=max(int(self._timeout_s * 1000), 5000),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # its client and sockets, which the failed start left open
            raise
        await producer.client.add_topic(self._settings.topic_webhooks_raw)
        return producer


_BROKEN_PRODUCER = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerIdMapping, ProducerFenced)


def settings_for_aiokafka(settings: Settings) -> dict[str, Any]:
    """aiokafka's connection keyword arguments (the same names as kafka-python's, security included)."""
    config = settings.kafka_python_config()
    config["client_id"] = f"{settings.kafka_client_id}-webhooks"
    return config


def install(connector: Connector) -> None:
    """In a worker that serves webhooks (CONNECTOR_WORKER_SERVE_WEBHOOKS): add the webhook route to the
    public server, the edge's producer to the app, and readiness checks. Otherwise nothing: `connector edge` serves them.

    The producer starts once the worker has recovered its tables (webhooks get 503 until then, and
    8x8 retries): a worker's own consumer was seen to skip records of chat.webhooks.raw appended
    while it was starting up.
    """
    settings = connector.settings
    if not settings.worker_serve_webhooks:
        return
    producer = WebhookProducer(settings, settings.webhook_append_timeout_s)
    verifier, keys = verifier_of(settings)

    @connector.app.service
    class _ProducerService(Service):
        """Starts and stops the edge's producer with the app."""

        async def on_start(self) -> None:
            await connector.codec.start()
            await producer.start()

        async def on_stop(self) -> None:
            await producer.stop()

    edge = Edge(settings, connector.codec, producer, verifier)
    connector.public_routes.append(web.post(PATH, edge.handle))
    checks, explain = readiness_checks(settings, producer, keys)
    connector.readiness.update(checks)
    connector.readiness_reasons.update(explain)


def readiness_checks(
    settings: Settings, producer: WebhookProducer, keys: JwkCache | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The edge's readiness checks by name (its producer reaches Kafka; a signing key can be had), and
    for the Kafka one, why it fails."""
    checks: dict[str, Any] = {"kafka": producer.reachable}
    if keys is not None:
        checks["jwk"] = _jwk_ready(keys)
    return checks, {"kafka": KafkaTrouble(settings)}


def verifier_of(settings: Settings) -> tuple[Verifier | None, JwkCache | None]:
    """The verifier and its key cache, or (None, None) with a loud warning when verification is off."""
    if settings.platform_base_url.startswith("http://"):
        logger.warning(
            "!!! CONNECTOR_PLATFORM_ALLOW_INSECURE_HTTP=true: 8x8 signing keys are fetched over plain HTTP from %s; "
            "anyone on the path can forge webhooks. The sandbox only. !!!",
            settings.platform_base_url,
        )
    if not settings.webhook_verify_signatures:
        VERIFYING.set(0)
        logger.warning(
            "!!! webhook signature verification is OFF (CONNECTOR_WEBHOOK_VERIFY_SIGNATURES=false): "
            "anyone who can reach %s can inject events. Development only. !!!",
            PATH,
        )
        return None, None
    keys = JwkCache(
        lambda kid: jwk_url(settings, kid),
        httpx.AsyncClient(timeout=httpx.Timeout(5.0)),
        ttl_s=settings.webhook_jwk_ttl_s,
        retry_after_s=settings.webhook_jwk_refetch_interval_s,
    )
    verifier = Verifier(
        keys,
        tenant_id=settings.platform_tenant_id,
        window_s=settings.webhook_replay_window_s,
        bodies=EventBodies(settings.webhook_replay_memory),
    )
    VERIFYING.set(1)
    if not settings.platform_tenant_id:
        logger.warning("CONNECTOR_PLATFORM_TENANT_ID is empty: every webhook will be refused (wrong tenant)")
    return verifier, keys


class Edge:
    """One webhook POST from the request to its answer; a plain aiohttp handler, Faust not needed."""

    def __init__(
        self, settings: Settings, codec: AvroCodec, producer: WebhookProducer, verifier: Verifier | None
    ) -> None:
        self._codec = codec
        self._producer = producer
        self._verifier = verifier
        self._max_body = settings.webhook_max_body_bytes
        self._read_timeout_s = settings.webhook_read_timeout_s
        self._generation = settings.platform_generation.value

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler of `POST /webhooks/8x8`: the answer, counted and timed."""
        started = time.perf_counter()
        status, answer, outcome = await self._handle(request)
        _counted(outcome).inc()
        LATENCY.observe(time.perf_counter() - started)
        if status == 204:
            return web.Response(status=204)
        return web.json_response(answer, status=status)

    async def _handle(self, request: web.Request) -> tuple[int, dict[str, str], str]:
        """(status, JSON answer, outcome label) for one POST."""
        try:
            body = await _read_limited(request, self._max_body, self._read_timeout_s)
        except TimeoutError:
            logger.warning("webhook body not received within %g s (408) from %s", self._read_timeout_s, request.remote)
            return 408, {"error": f"body not received within {self._read_timeout_s:g} s"}, "timeout"
        if body is None:
            return 413, {"error": f"body larger than {self._max_body} bytes"}, "too_large"
        given = request.headers.get
        headers = {name: value for name in HEADERS if (value := given(name)) is not None}
        if self._verifier is not None:
            try:
                await self._verifier.verify(headers, body)
            except SignatureError as exc:
                REJECTED.labels(exc.code).inc()
                _log_refusal(401, exc, headers, body, request)
                return 401, _UNAUTHORIZED, "unauthorized"
            except KeyUnavailable as exc:
                KEY_UNAVAILABLE.labels(exc.code).inc()
                _log_refusal(503, exc, headers, body, request)
                return 503, _UNAVAILABLE, "key_unavailable"
        try:
            event = parse(body)
        except NormaliseError as exc:
            return 400, {"error": str(exc)}, "malformed"
        if event.get("eventType") == "WEB_HOOK_VERIFY":
            return 204, {}, "verify"
        try:  # done once; here too, as the public port opens before the producer starts
            await self._codec.start("RawWebhook")
        except Exception as exc:  # the registry away, or the schema missing: 8x8 sends it again
            logger.warning("webhook not appended (503): the RawWebhook schema is not known yet: %s", exc)
            return 503, _UNAVAILABLE, "unavailable"
        event_id = event_id_of(headers, body)
        key = event_key(event, event_id).encode()
        value = self._codec.encode(
            "RawWebhook",
            {
                "kind": "WEBHOOK",
                "generation": self._generation,
                "body": body,
                "headers": {name: headers[name] for name in STORED_HEADERS if name in headers},
                "received_at": time.time_ns() // 1_000_000,
                "conversation_ref": None,
            },
        )
        if len(key) + len(value) + _BATCH_FRAMING_BYTES > self._max_body + RECORD_OVERHEAD_BYTES:
            return 413, {"error": "webhook too large for one Kafka record"}, "too_large"
        if not await self._producer.append(key, value):
            return 503, _UNAVAILABLE, "unavailable"
        return 204, {}, "accepted"


@functools.cache
def _counted(outcome: str) -> Any:
    """The requests counter of `outcome` (looked up once: the labels call costs a lock and a dict per request)."""
    return REQUESTS.labels(outcome)


def _log_refusal(status: int, exc: Exception, headers: dict[str, str], body: bytes, request: web.Request) -> None:
    """The precise reason, for the operator only (the sender gets a generic answer)."""
    logger.warning(
        "webhook refused (%d): %s; event %r, %d bytes, from %s",
        status,
        exc,
        headers.get("x-8x8-event-id", "-")[:64],
        len(body),
        request.remote,
    )


async def _read_limited(request: web.Request, limit: int, timeout_s: float) -> bytes | None:
    """The request body, or None when it is larger than `limit` (stops reading there).

    TimeoutError when the whole body has not arrived within `timeout_s`: a sender trickling bytes
    must not hold a connection and a task for ever.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    if request.content.is_eof():  # the whole body came with the headers (the usual case): nothing to wait for
        whole = request.content.read_nowait()
        return whole if len(whole) <= limit else None
    body = bytearray()
    async with asyncio.timeout(timeout_s):
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                return None
    return bytes(body)


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
