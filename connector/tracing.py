"""W3C Trace Context through the connector: a command's `traceparent` goes with everything done for it.

A command record may carry a `traceparent` header (W3C Trace Context): the publishers send that of
`current`, which `traced` sets for a block (`connector send --traceparent`). While the command runs,
`current` holds it: its result and transcript records carry it as a Kafka header, its 8x8 requests
as an HTTP header, and its DLQ record keeps it among the original headers. A value that is not a
well-formed traceparent is ignored (it would otherwise travel into 8x8's request headers).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

__all__ = ["TRACEPARENT", "checked", "current", "kafka_headers", "of_headers", "traced"]

TRACEPARENT = "traceparent"
current: ContextVar[str | None] = ContextVar("traceparent", default=None)

_FORMAT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def of_headers(headers: Iterable[tuple[str, bytes]] | dict[str, bytes] | None) -> str | None:
    """The well-formed traceparent among a record's headers, or None."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in items:
        if name.lower() == TRACEPARENT and value:
            text = value.decode("ascii", "replace").strip()
            try:
                return checked(text)
            except ValueError:
                return None
    return None


def checked(traceparent: str) -> str:
    """`traceparent` itself, or ValueError if it is no W3C traceparent."""
    if not _FORMAT.fullmatch(traceparent) or traceparent.startswith("ff"):
        raise ValueError(f"{traceparent!r} is not a W3C traceparent (version-trace id-parent id-flags, lower-case hex)")
    return traceparent


def traced(traceparent: str) -> contextlib.AbstractContextManager[None]:
    """A block within which commands are published with `traceparent`; ValueError at once if it is no W3C traceparent."""
    return _traced(checked(traceparent))


@contextlib.contextmanager
def _traced(traceparent: str) -> Iterator[None]:
    token = current.set(traceparent)
    try:
        yield
    finally:
        current.reset(token)


def kafka_headers() -> list[tuple[str, bytes]]:
    """The current command's traceparent as Kafka record headers (none when it has none)."""
    trace = current.get()
    return [(TRACEPARENT, trace.encode())] if trace else []
