"""W3C Trace Context through the connector: a command's `traceparent` goes with everything done for it.

A command record may carry a `traceparent` header (W3C Trace Context). While the command runs,
`current` holds it: its result and transcript records carry it as a Kafka header, its 8x8 requests
as an HTTP header, and its DLQ record keeps it among the original headers. A value that is not a
well-formed traceparent is ignored (it would otherwise travel into 8x8's request headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar

__all__ = ["TRACEPARENT", "current", "kafka_headers", "of_headers"]

TRACEPARENT = "traceparent"
current: ContextVar[str | None] = ContextVar("traceparent", default=None)

_FORMAT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def of_headers(headers: Iterable[tuple[str, bytes]] | dict[str, bytes] | None) -> str | None:
    """The well-formed traceparent among a record's headers, or None."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in items:
        if name.lower() == TRACEPARENT and value:
            text = value.decode("ascii", "replace").strip()
            return text if _FORMAT.fullmatch(text) and not text.startswith("ff") else None
    return None


def kafka_headers() -> list[tuple[str, bytes]]:
    """The current command's traceparent as Kafka record headers (none when it has none)."""
    trace = current.get()
    return [(TRACEPARENT, trace.encode())] if trace else []
