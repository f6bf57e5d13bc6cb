"""The set-up calls (web-hooks, channels) of both adapters, against the sandbox and 8x8's specs.

Each adapter runs `setup` and every web-hook and channel operation against the sandbox twice: through
an httpx transport whose every exchange is checked against the generation's spec (a request the spec
rejects, or an answer it does not describe, fails the test), and through the worker's own aiohttp
sender; the sandbox's request log must show the same requests from both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from connector.config import Generation, load_settings
from connector.eightbyeight import Platform, open_platform
from connector.platform_setup import setup
from connector.sandbox import RunningSandbox, SandboxConfig, start_sandbox
from tests.contract.openapi_contract import CheckedTransport, Contract


@pytest.fixture
async def public_url() -> AsyncIterator[str]:
    """A deployment's public URL whose web-hook answers every POST 204 (8x8's WEB_HOOK_VERIFY included)."""

    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/webhooks/8x8", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def _platform(sandbox: RunningSandbox, generation: Generation, transport: httpx.AsyncBaseTransport | None) -> Platform:
    settings = load_settings(
        platform_generation=generation,
        platform_base_url=sandbox.url,
        platform_allow_insecure_http=True,
        platform_tenant_id="acme",
        platform_api_key="key",
        platform_api_secret="secret",
    )
    return open_platform(settings, transport=transport)


async def _everything(generation: Generation, public_url: str, transport: httpx.AsyncBaseTransport | None) -> list[Any]:
    """On a fresh sandbox: `setup` twice, then every web-hook and channel operation once; the requests it got."""
    sandbox = await start_sandbox(SandboxConfig(port=0, tenant="acme", api_key="key", api_secret="secret"))
    platform = _platform(sandbox, generation, transport)
    try:
        first = await setup(platform, public_url, queue_id="101", name="connector")
        again = await setup(platform, public_url, queue_id="101", name="connector")
        assert (again.webhook, again.channel) == (first.webhook, first.channel) and first.channel is not None
        assert first.webhook is not None and first.webhook.uri == f"{public_url}/webhooks/8x8"
        await platform.verify_webhook(first.webhook)
        spare = await platform.create_webhook("spare", public_url + "/spare")
        channel = await platform.create_channel("spare", spare.id, "102")
        assert await platform.channel(channel.id) == channel
        assert channel in await platform.channels() and spare in await platform.webhooks()
        await platform.delete_channel(channel.id)
        await platform.delete_webhook(spare.id)
        assert await platform.channel(channel.id) is None
        assert await platform.webhooks() == [first.webhook] and await platform.channels() == [first.channel]
        return [(r["method"], r["path"], r["query"], r["body"], r["status"]) for r in sandbox.sandbox.requests.records()]
    finally:
        await platform.aclose()
        await sandbox.stop()


@pytest.mark.parametrize("generation", list(Generation))
async def test_every_set_up_request_validates_and_both_senders_send_the_same(generation: Generation, public_url: str) -> None:
    contract = Contract()
    checked = CheckedTransport(contract)
    on_spec = await _everything(generation, public_url, checked)
    statuses = checked.statuses
    on_wire = await _everything(generation, public_url, None)
    assert statuses.count(404) == 1 and all(s < 300 for s in statuses if s != 404)  # the deleted channel
    operations = {entry.split(" ", 1)[1] for entry in contract.checked}
    assert sum("ebhook" in op or "eb-hook" in op for op in operations) >= 3 and sum("/channels" in op for op in operations) >= 2
    assert on_wire == on_spec
