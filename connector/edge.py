"""`connector edge`: the webhook endpoint as its own stateless process, without Faust.

Its public port serves `POST /webhooks/8x8`, `/healthz` and `/readyz` (ready once its producer
reaches Kafka, the RawWebhook schema's id is known and a signing key can be had); its admin port
`/metrics`. It joins no consumer group and holds no partitions and no tables, so it is ready
within a moment of its start, stays ready while the workers rebalance or recover, and scales on
request rate alone. On SIGTERM or SIGINT it
stops taking connections, finishes the requests in hand (each waits at most for its append) and
flushes its producer. That chat.webhooks.raw can take the largest webhook accepted is checked by
the workers at their start (connector.runtime), which share the edge's settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from connector import logs
from connector.config import Settings
from connector.kafka_errors import describe
from connector.schemas import AvroCodec
from connector.web import PublicServer, admin_app, check_all, explain_failed
from connector.webhook import PATH, Edge, WebhookProducer, readiness_checks, verifier_of

__all__ = ["run_edge", "serve"]

logger = logging.getLogger(__name__)


def run_edge(settings: Settings) -> None:
    """Run the edge until SIGTERM or SIGINT; exit 1 when Kafka or the Schema Registry cannot be used at start."""
    logs.setup(settings)
    loop_factory = None
    if settings.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        stop = asyncio.Event()
        loop = runner.get_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if not runner.run(serve(settings, stop)):
            raise SystemExit(1)


async def serve(settings: Settings, stop: asyncio.Event) -> bool:
    """Serve the public and admin ports until `stop` is set; False when the producer or the codec could not start.

    The ports open first, so `/healthz` answers (and `/readyz` says why not ready) while the producer connects.
    """
    codec = AvroCodec(settings)
    producer = WebhookProducer(settings, settings.webhook_append_timeout_s)
    verifier, keys = verifier_of(settings)
    checks, explain = readiness_checks(settings, producer, keys)
    started = asyncio.Event()
    checks["schemas"] = _is_set(started)
    public = PublicServer(
        settings.web_host,
        settings.web_port,
        [web.post(PATH, Edge(settings, codec, producer, verifier).handle)],
        lambda: check_all(checks),
        grace_s=settings.webhook_append_timeout_s + 1.0,
        explain=lambda failed: explain_failed(explain, failed),
    )
    admin = web.AppRunner(admin_app(), access_log=None, handle_signals=False)
    await public.start()
    await admin.setup()
    await web.TCPSite(admin, settings.web_host, settings.admin_port).start()
    try:
        if not await _start(settings, codec, producer):
            return False
        started.set()
        logger.info(
            "edge ready: webhooks on %s:%d%s, metrics on port %d",
            settings.web_host,
            settings.web_port,
            PATH,
            settings.admin_port,
        )
        await stop.wait()
        return True
    finally:
        await public.stop()  # stops taking connections, then waits for the requests in hand
        await admin.cleanup()
        await producer.stop()


async def _start(settings: Settings, codec: AvroCodec, producer: WebhookProducer) -> bool:
    """Connect the producer and look up (or register) the RawWebhook schema, together; log why and answer
    False if either fails."""
    registering = asyncio.ensure_future(codec.start("RawWebhook"))
    started = True
    try:
        await producer.start()
    except Exception as exc:  # aiokafka raises many kinds; say which setting or ACL in one line
        logger.error("cannot start: %s", describe(exc, settings))
        started = False
    try:
        await registering
    except Exception as exc:  # the registry client raises several kinds
        logger.error("cannot start: schema registry at %s: %s", settings.schema_registry_url, exc)
        started = False
    return started


def _is_set(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return event.is_set()

    return check
