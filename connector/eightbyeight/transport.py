"""Putting one HTTP request on the wire: aiohttp's pool for the worker, any httpx transport for tests.

`ApiClient` builds every request itself (URL, headers, body bytes) and hands it to a sender, so
both senders send the same request. The worker sends through aiohttp: httpcore's pool checks every
pooled connection on every request (~2 ms of CPU each with 256 connections, py-spy), and httpx's
Request/Response objects cost more CPU than aiohttp's whole send (py-spy). Tests pass an httpx
transport (MockTransport). Either way failures are raised as the httpx exceptions ApiClient maps.
"""

from __future__ import annotations

import http
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpSender", "HttpxSender", "Reply", "Sender"]


@dataclass(frozen=True)
class Reply:
    """An answer from 8x8: status, headers (case-insensitive) and the whole body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def reason_phrase(self) -> str:
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    def json(self) -> Any:
        return json.loads(self.content)


class Sender(Protocol):
    """Sends one request, reads the whole answer; network failures raise httpx exceptions."""

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Reply: ...

    async def aclose(self) -> None: ...


class AiohttpSender:
    """One aiohttp session (opened on first use, in the running loop) with a bounded pool."""

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Reply:
        limit = self._timeouts.get(timeout)
        if limit is None:
            limit = self._timeouts[timeout] = aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout)
        try:
            # encoded=True: the URL is sent as ApiClient built it (yarl would re-quote the query).
            async with self._open().request(
                method, URL(url, encoded=True), headers=headers, data=body, allow_redirects=False, timeout=limit
            ) as answer:
                return Reply(answer.status, answer.headers, await answer.read())
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc)) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                auto_decompress=False,  # nothing asks for compression (no Accept-Encoding)
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session


class HttpxSender:
    """Sends through an httpx transport (tests give a MockTransport), with no client headers of its own."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Reply:
        request = httpx.Request(
            method, url, headers=headers, content=body, extensions={"timeout": httpx.Timeout(timeout).as_dict()}
        )
        answer = await self._transport.handle_async_request(request)
        answer.request = request
        return Reply(answer.status_code, answer.headers, await answer.aread())

    async def aclose(self) -> None:
        await self._transport.aclose()
