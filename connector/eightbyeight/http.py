"""Sending one request to 8x8: bounded in flight, timed, and every failure turned into a PlatformError.

Both adapters send through one `ApiClient`, so the limit on requests in flight and the latency
metrics hold for the whole worker whatever the generation.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
from prometheus_client import Gauge, Histogram

from connector import tracing
from connector.eightbyeight.base import PlatformError
from connector.normalise import text
from connector.eightbyeight.transport import Reply, Sender

__all__ = [
    "IN_FLIGHT",
    "REQUEST_SECONDS",
    "ApiClient",
    "Part",
    "conversation_id_of",
    "items_of",
    "json_body",
    "multipart",
    "parse_retry_after",
]

REQUEST_SECONDS = Histogram(
    "connector_8x8_request_seconds",
    "Latency of 8x8 API requests, by operation and HTTP status (or error kind).",
    ["operation", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("connector_8x8_requests_in_flight", "8x8 API requests sent and not answered yet.")

_MAX_MESSAGE = 500
_HEADERS = {"User-Agent": "kafka-8x8-connector"}


# One part of a multipart/form-data body: field name, file name (None for a plain field), content type, bytes.
Part = tuple[str, "str | None", str, bytes]


class ApiClient:
    """Builds each request (URL, headers, body bytes), sends it with a bound on requests in flight,
    and returns the 2xx answer; any other outcome raises PlatformError."""

    def __init__(self, sender: Sender, max_in_flight: int, *, timeout_s: float = 10.0) -> None:
        self._sender = sender
        self._slots = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout_s
        self._seconds: dict[tuple[str, str], Any] = {}

    async def request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        parts: Sequence[Part] | None = None,
        bounded: bool = True,
    ) -> Reply:
        """Send one request (`json`, `form` or multipart `parts` as its body); `bounded=False` skips the in-flight bound."""
        merged = {**_HEADERS, **headers} if headers else dict(_HEADERS)
        if trace := tracing.current.get():  # the running command's W3C trace context
            merged[tracing.TRACEPARENT] = trace
        body = None
        if json is not None:
            body = orjson.dumps(json)
            merged["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            merged["Content-Type"] = "application/x-www-form-urlencoded"
        elif parts is not None:
            body, merged["Content-Type"] = multipart(parts)
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        if not bounded:
            return await self._send(operation, method, url, merged, body)
        async with self._slots:
            return await self._send(operation, method, url, merged, body)

    async def aclose(self) -> None:
        await self._sender.aclose()

    async def _send(self, operation: str, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
        IN_FLIGHT.inc()
        started = time.perf_counter()
        status = "error"
        try:
            response = await self._sender.send(method, url, headers, body, self._timeout)
            status = str(response.status_code)
        except httpx.TimeoutException as exc:
            status = "timeout"
            # A connect timeout never reached 8x8; any other may have taken effect.
            unknown = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            raise PlatformError(
                operation, "8x8 did not answer in time", retryable=True, outcome_unknown=unknown, reason="timeout"
            ) from None
        except httpx.TransportError as exc:
            unknown = not isinstance(exc, httpx.ConnectError)
            raise PlatformError(
                operation,
                f"network error: {type(exc).__name__}",
                retryable=True,
                outcome_unknown=unknown,
                reason="network",
            ) from None
        finally:
            IN_FLIGHT.dec()
            self._observe(operation, status, time.perf_counter() - started)
        if response.is_success:
            return response
        raise _status_error(operation, response)

    def _observe(self, operation: str, status: str, seconds: float) -> None:
        child = self._seconds.get((operation, status))
        if child is None:
            child = self._seconds[(operation, status)] = REQUEST_SECONDS.labels(operation, status)
        child.observe(seconds)


def multipart(parts: Sequence[Part]) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{_quoted(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quoted(filename)}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def json_body(response: Reply, operation: str, kind: type = dict) -> Any:
    """The 2xx answer's JSON body, checked to be a `kind`; a PlatformError that says what came instead."""
    try:
        body = response.json()
    except ValueError:
        raise _unexpected(operation, response, "a body that is not JSON") from None
    if not isinstance(body, kind):
        expected = _JSON_NAMES.get(kind, "an object or a list")
        raise _unexpected(operation, response, f"a JSON {type(body).__name__} where {expected} was expected")
    return body


def conversation_id_of(response: Reply, operation: str) -> str:
    """The `conversationId` of a create's answer (both generations); PlatformError when there is none."""
    conversation_id = text(json_body(response, operation).get("conversationId"))
    if not conversation_id:
        raise PlatformError(
            operation, "8x8 accepted the conversation but sent no conversationId", http_status=response.status_code
        )
    return conversation_id



def items_of(value: Any, operation: str, response: Reply, where: str) -> list[dict[str, Any]]:
    """The list at `where` in an answer (missing: empty), each item a JSON object; PlatformError otherwise."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _unexpected(operation, response, f"{where} that is not a list of objects")
    return value


def parse_retry_after(response: Reply) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_JSON_NAMES = {dict: "an object", list: "a list"}


def _quoted(value: str) -> str:
    """A name for a Content-Disposition parameter: quotes and line breaks escaped as browsers do (RFC 7578, 4.2)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _unexpected(operation: str, response: Reply, what: str) -> PlatformError:
    return PlatformError(
        operation, f"8x8 answered HTTP {response.status_code} with {what}", http_status=response.status_code, code="BAD_RESPONSE"
    )


def _status_error(operation: str, response: Reply) -> PlatformError:
    """The PlatformError for a non-2xx answer: 429 and 5xx may be retried, other 4xx are final."""
    code = response.status_code
    message = _error_message(response)
    if code == 429:
        return PlatformError(
            operation, message, http_status=code, retryable=True, retry_after=parse_retry_after(response)
        )
    if code >= 500:
        return PlatformError(operation, message, http_status=code, retryable=True, outcome_unknown=True)
    return PlatformError(operation, message, http_status=code)


def _error_message(response: Reply) -> str:
    """8x8's own words for an error (`message`, `errors[].message`, `fault.faultstring`), else the reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("message", "detail", "title", "error_description", "error"):
            if isinstance(body.get(key), str):
                parts.append(body[key])
                break
        for error in body.get("errors") or ():
            text = error.get("message") if isinstance(error, dict) else error
            if isinstance(text, str) and text not in parts:
                parts.append(text)
        fault = body.get("fault")
        if isinstance(fault, dict) and isinstance(fault.get("faultstring"), str):
            parts.append(fault["faultstring"])
    text = "; ".join(parts) or f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return text[:_MAX_MESSAGE]
