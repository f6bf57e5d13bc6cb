"""Test helpers: a webhook receiver that records what 8x8 (the sandbox) posts, and API clients."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp import web

from connector.sandbox import RunningSandbox

V2_BASE = "/vcc/us/chat/v2/tenant/{tenant}"
GATEWAY_BASE = "/chat-gateway/v1"


@dataclass
class Received:
    """One POST the receiver got."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """An aiohttp webhook endpoint; `answer` decides each status (default 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: Callable[[dict[str, Any], dict[str, str]], int] = lambda event, headers: 200
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        status = self.answer(json.loads(body), headers)
        async with self._changed:
            self.received.append(Received(headers, body, status))
            self._changed.notify_all()
        return web.Response(status=status)

    def events(self, conversation_id: str | None = None, *, delivered_only: bool = True) -> list[dict[str, Any]]:
        """The events received (answered 2xx unless told otherwise), optionally of one conversation."""
        return [
            r.event
            for r in self.received
            if (not delivered_only or 200 <= r.status < 300)
            and (conversation_id is None or r.event.get("conversationId") == conversation_id)
        ]

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `predicate(events delivered)` holds; answer those events."""

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events()))

        try:
            await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            seen = [(e["eventType"], e.get("conversationId")) for e in self.events()]
            raise AssertionError(f"not seen within {timeout}s; delivered: {seen}") from None
        return self.events()

    async def wait_for_types(self, conversation_id: str, *types: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until the conversation's delivered events end with these types, in this order (a subsequence)."""

        def has(events: list[dict[str, Any]]) -> bool:
            remaining = list(types)
            for event in events:
                if event.get("conversationId") == conversation_id and remaining and event["eventType"] == remaining[0]:
                    remaining.pop(0)
            return not remaining

        await self.wait_for(has, timeout)
        return self.events(conversation_id)


async def v2_token(client: httpx.AsyncClient, key: str = "sandbox-api-key", secret: str = "sandbox-api-secret") -> str:
    """A v2 access token from the sandbox's token endpoint."""
    response = await client.post(
        "/oauth/v2/token",
        headers={"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()},
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def v2_client(client: httpx.AsyncClient, running: RunningSandbox) -> tuple[str, dict[str, str]]:
    """The v2 base path of the sandbox's tenant and bearer headers."""
    token = await v2_token(client)
    return V2_BASE.format(tenant=running.sandbox.config.tenant), {"Authorization": f"Bearer {token}"}


def gateway_headers(running: RunningSandbox) -> dict[str, str]:
    """Gateway auth headers for the sandbox."""
    return {"x-api-key": running.sandbox.config.api_key, "X-8x8-Tenant": running.sandbox.config.tenant}
