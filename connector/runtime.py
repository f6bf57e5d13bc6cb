"""Running the worker process: logging set up once, then Faust's worker with its signal handling.

Faust stops on SIGTERM/SIGINT: it stops the consumers, lets agents finish the events in hand,
commits offsets and flushes producers before it exits. A chat.webhooks.raw that cannot take the
largest webhook the edge accepts stops the worker at start (exit 2), not each such webhook later;
so do brokers that refuse the connection, the login or the principal (connector.kafka_errors), with
one line saying which setting or ACL, where Faust would retry for ever.
"""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from connector import __version__, logs
from connector.app import build
from connector.config import Settings
from connector.kafka_errors import KafkaAccessError, check
from connector.schemas import SchemaMissing, check_registered
from connector.topics import changelog_topics, check_webhook_topic

__all__ = ["BUILD_INFO", "run_worker"]

BUILD_INFO = Gauge(
    "connector_build_info", "Always 1: the connector's version and the 8x8 generation this worker runs.", ["version", "generation"]
)


def run_worker(settings: Settings) -> None:
    """Build the app and run it until a signal stops it."""
    import faust
    import mode.loop

    if settings.event_loop == "uvloop":
        mode.loop.use("uvloop")  # sets the loop policy; Faust's worker then creates its loop
    logs.setup(settings)
    logger = logging.getLogger(__name__)
    try:
        check(settings, topics=_worker_topics(settings), group=settings.app_id)
    except KafkaAccessError as exc:
        logger.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    try:
        check_registered(settings)
    except SchemaMissing as exc:
        logger.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    except Exception as exc:  # the registry client raises several kinds; Faust's start waits for the registry
        logger.warning("schema registry at %s not checked now: %s: %s", settings.schema_registry_url, type(exc).__name__, exc)
    refusal = check_webhook_topic(settings)
    if refusal is not None:
        logger.error("invalid configuration: %s", refusal)
        raise SystemExit(2)
    connector = build(settings)
    BUILD_INFO.labels(__version__, settings.platform_generation.value).set(1)
    logs.log_when_ready(connector)
    worker = faust.Worker(
        connector.app,
        loglevel=settings.log_level.upper(),
        logging_config=None,
        override_logging=False,
        quiet=True,  # no banner on stdout, and no terminal spinner: the log's ready line says it all
    )
    worker.spinner = None
    worker.execute_from_commandline()


def _worker_topics(settings: Settings) -> list[str]:
    """Every topic a worker reads or writes, its table changelogs included."""
    return [*settings.topics().values(), *changelog_topics(settings)]
