"""Sending one request to 8x8: bounded in flight, timed, and every failure turned into a PlatformError.

Both adapters send through one `ApiClient`, so the limit on requests in flight and the latency
metrics hold for the whole worker whatever the generation.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from typing import Any

import httpx
from prometheus_client import Gauge, Histogram

from connector.eightbyeight.base import PlatformError

__all__ = ["IN_FLIGHT", "REQUEST_SECONDS", "ApiClient", "error_message", "parse_retry_after", "status_error"]

REQUEST_SECONDS = Histogram(
    "connector_8x8_request_seconds",
    "Latency of 8x8 API requests, by operation and HTTP status (or error kind).",
    ["operation", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("connector_8x8_requests_in_flight", "8x8 API requests sent and not answered yet.")

_MAX_MESSAGE = 500


class ApiClient:
    """An httpx client with a bound on requests in flight; `request` raises PlatformError unless 2xx.

    Given the client's `transport`, requests are built with the client's default headers and timeout
    and handed to the transport directly: the client's per-request machinery (cookie jar, auth flow,
    redirect loop, event hooks) costs more CPU than the transport itself (py-spy) and does nothing
    for these calls (bearer or API-key headers, no redirects followed, no hooks). The client must
    then have no base_url, auth, cookies or params of its own. Without a transport, `client` sends.
    """

    def __init__(
        self, client: httpx.AsyncClient, max_in_flight: int, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.client = client
        self._slots = asyncio.Semaphore(max_in_flight)
        self._transport = transport
        if transport is not None:
            if str(client.base_url) or client.auth is not None or client.cookies or client.params:
                raise ValueError("ApiClient sends through the transport only for a client without base_url, auth, cookies or params")
            self._headers = client.headers
            self._timeout = client.timeout.as_dict()
        self._seconds: dict[tuple[str, str], Any] = {}

    async def request(self, operation: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request and return the 2xx response; any other outcome raises PlatformError."""
        async with self._slots:
            IN_FLIGHT.inc()
            started = time.perf_counter()
            status = "error"
            try:
                if self._transport is None:
                    response = await self.client.request(method, url, **kwargs)
                else:
                    response = await self._send(method, url, **kwargs)
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
        raise status_error(operation, response)

    async def _send(
        self, method: str, url: str, *, headers: Any = None, params: Any = None, json: Any = None, content: Any = None
    ) -> httpx.Response:
        """What `client.request` sends (same headers, body and timeout), through the transport."""
        merged = httpx.Headers(self._headers)
        if headers:
            merged.update(headers)
        request = httpx.Request(
            method, url, params=params, headers=merged, json=json, content=content, extensions={"timeout": self._timeout}
        )
        assert self._transport is not None
        response = await self._transport.handle_async_request(request)
        response.request = request
        await response.aread()
        return response

    def _observe(self, operation: str, status: str, seconds: float) -> None:
        child = self._seconds.get((operation, status))
        if child is None:
            child = self._seconds[(operation, status)] = REQUEST_SECONDS.labels(operation, status)
        child.observe(seconds)


def status_error(operation: str, response: httpx.Response) -> PlatformError:
    """The PlatformError for a non-2xx answer: 429 and 5xx may be retried, other 4xx are final."""
    code = response.status_code
    message = error_message(response)
    if code == 429:
        return PlatformError(
            operation, message, http_status=code, retryable=True, retry_after=parse_retry_after(response)
        )
    if code >= 500:
        return PlatformError(operation, message, http_status=code, retryable=True, outcome_unknown=True)
    return PlatformError(operation, message, http_status=code)


def error_message(response: httpx.Response) -> str:
    """8x8's own words for an error (`message`, `errors[].message`, `fault.faultstring`), else the reason."""
    try:
        body = json.loads(response.content)
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


def parse_retry_after(response: httpx.Response) -> float | None:
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
