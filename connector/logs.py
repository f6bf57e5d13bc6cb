"""The worker's log: text or JSON lines, library tables kept out of INFO, the ready line, throttled repeats.

`setup` configures the root logger once per process. Ids that explain a line (`ref`, `command_id`,
`conversation_id`, `error_code`, ...) are passed as `extra=` fields: the text format shows them in
the message, the JSON format also as fields of their own, so log pipelines can filter on them.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from connector.config import Settings

if TYPE_CHECKING:  # the edge logs through this module and must not import Faust
    from connector.app import Connector

__all__ = ["TEXT_FORMAT", "JsonFormatter", "Throttle", "log_when_ready", "ready_line", "setup"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose INFO lines with collections as arguments are tables of topics and partitions.
_TABLE_LOGGERS = ("faust", "mode", "aiokafka")
# Libraries that log each connection or request at INFO.
_CHATTY_LOGGERS = ("kafka", "httpx", "schema_registry")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def setup(settings: Settings, *, stream: Any = None) -> None:
    """Send every log line to stderr (or `stream`) in `CONNECTOR_LOG_FORMAT` at `CONNECTOR_LOG_LEVEL`.

    Faust's and aiokafka's partition tables and service start/stop lines go to DEBUG, and so do
    kafka-python's connections (the start-up Kafka check) and each registry request, so that INFO
    reads as a story.
    """
    level = logging.getLevelName(settings.log_level.upper())
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_DemoteTables(level))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in _CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, the `extra=` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class Throttle:
    """Says whether a repeating line is due: at most once per `interval_s` per key, with how many were held back."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def due(self, key: str = "") -> int | None:
        """None if a line for `key` was let through less than `interval_s` ago; else the count held back since."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


def ready_line(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The one line a worker logs when it is first ready, and its fields: generation, tenant, topics, ports."""
    topics = settings.topics()
    public = f"public port {settings.web_port} (" + ("webhooks, " if settings.worker_serve_webhooks else "") + "/healthz, /readyz)"
    message = (
        f"ready: {settings.platform_generation.value}, tenant {settings.platform_tenant_id or '(none)'}, "
        f"commands {topics['commands']} -> results {topics['command_results']} (DLQ {topics['commands_dlq']}), "
        f"{topics['webhooks_raw']} -> events {topics['events']}, transcripts {topics['transcripts']}; "
        f"{public}, admin port {settings.admin_port} (/metrics); Kafka {settings.kafka_bootstrap_servers}"
    )
    fields = {
        "generation": settings.platform_generation.value,
        "tenant": settings.platform_tenant_id,
        "topics": ",".join(topics.values()),
        "web_port": settings.web_port,
        "admin_port": settings.admin_port,
    }
    return message, fields


class _DemoteTables(logging.Filter):
    """Turns the INFO tables of Faust and aiokafka (topic and partition sets), and Faust's lines of each of its
    services starting and stopping, into DEBUG lines."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and (_is_service_step(record) or _is_table(record)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._level <= logging.DEBUG
        return True


def _is_service_step(record: logging.LogRecord) -> bool:
    """A line of Faust's service tree (mode): one of its services starting or stopping."""
    return str(record.msg).endswith(("Starting...", "Stopping..."))


def _is_table(record: logging.LogRecord) -> bool:
    if not record.name.startswith(_TABLE_LOGGERS):
        return False
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    collections = (Mapping, set, frozenset, list)
    return "\n" in str(record.msg) or any(isinstance(arg, collections) and len(arg) > 1 for arg in args)


def log_when_ready(connector: Connector) -> None:
    """Have the worker log `ready_line` once, the first time all its readiness checks pass."""
    from connector.web import readiness

    @connector.app.task
    async def ready_once() -> None:
        while not all((await readiness(connector)).values()):
            await asyncio.sleep(0.5)
        message, fields = ready_line(connector.settings)
        logging.getLogger("connector.worker").info("%s", message, extra=fields)
