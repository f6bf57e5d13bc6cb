"""Fixtures of the sandbox tests: a receiver, a sandbox posting to it, and a contract-checked client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from connector.sandbox import RunningSandbox, SandboxConfig, start_sandbox
from tests.contract.openapi_contract import Contract
from tests.sandbox.support import Receiver

FAST = dict(
    port=0,
    agent_accept_delay_s=0.02,
    agent_reply_delay_s=0.01,
    retry_initial_s=0.02,
    retry_max_s=0.1,
    delivery_timeout_s=2.0,
)


@pytest.fixture(scope="session")
def contract() -> Contract:
    """Both specs, loaded once."""
    return Contract()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def start(receiver: Receiver) -> AsyncIterator[Callable[..., Awaitable[RunningSandbox]]]:
    """Start sandboxes posting to the receiver (fast agents and retries unless overridden)."""
    started: list[RunningSandbox] = []

    async def start(**overrides: Any) -> RunningSandbox:
        running = await start_sandbox(SandboxConfig(**{**FAST, "webhook_url": receiver.url, **overrides}))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest.fixture
async def sandbox(start: Callable[..., Awaitable[RunningSandbox]]) -> RunningSandbox:
    return await start()


@pytest.fixture
async def client_for(contract: Contract) -> AsyncIterator[Callable[[RunningSandbox], httpx.AsyncClient]]:
    """httpx clients whose every exchange with the 8x8 APIs is checked against the specs."""
    clients: list[httpx.AsyncClient] = []

    async def check(response: httpx.Response) -> None:
        await response.aread()
        contract.check_httpx(response)

    def client_for(running: RunningSandbox, **kwargs: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=running.url, event_hooks={"response": [check]}, **{"timeout": 5.0, **kwargs})
        clients.append(client)
        return client

    yield client_for
    for client in clients:
        await client.aclose()


@pytest.fixture
def api(sandbox: RunningSandbox, client_for: Callable[[RunningSandbox], httpx.AsyncClient]) -> httpx.AsyncClient:
    """A contract-checked client of the default sandbox."""
    return client_for(sandbox)
