"""Every request the adapters send validates against 8x8's own OpenAPI spec (both generations).

The adapters run against an httpx MockTransport that records each request and answers what the
spec describes; each recorded request is then validated with openapi-core. The worker's own sender
(aiohttp) is checked the same way against a local server that records what arrives on the wire.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from connector.config import Generation, load_settings
from connector.eightbyeight import NewConversation, open_platform
from tests.support.env import free_port
from tests.contract.openapi_contract import load_gateway_spec, load_v2_spec

REF = "order-42"


class _Request:
    """An httpx.Request as openapi-core's Request protocol."""

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return f"{self._request.url.scheme}://{self._request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self._request.url.path

    @property
    def method(self) -> str:
        return self._request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self._request.content or None

    @property
    def content_type(self) -> str:
        return self._request.headers.get("content-type", "")


def _answer(request: httpx.Request) -> httpx.Response:
    """Minimal answers of the shapes the specs describe."""
    path, method = request.url.path, request.method
    if path.endswith("/oauth/v2/token"):
        return httpx.Response(200, json={"access_token": "t0k3n", "expires_in": "3600", "token_type": "BearerToken"})
    if method == "POST" and path.endswith("/conversations"):
        return httpx.Response(202, json={"conversationId": "c-1", "timestamp": 1, "createdAt": "2024-01-01T00:00:00Z"})
    if method in ("DELETE", "PATCH"):
        return httpx.Response(204)
    if method == "POST":
        return httpx.Response(202)
    if path.endswith("/conversations") and "chat-gateway" in path:
        conversation = {"id": "c-1", "user": {"name": "Ann", "additionalProperties": [{"key": "connectorRef", "value": REF}]}}
        return httpx.Response(200, json={"_embedded": {"conversations": [conversation]}, "page": {"totalPages": 1}})
    if path.endswith("/conversations"):
        return httpx.Response(200, json={"data": [{"id": "c-1", "customer": {"connectorRef": REF}}]})
    if path.endswith("/messages") and "chat-gateway" in path:
        return httpx.Response(200, json={"_embedded": {"messages": []}, "page": {"totalPages": 1}})
    if path.endswith(("/participants", "/interactions")) and "chat-gateway" in path:
        name = path.rsplit("/", 1)[-1]
        return httpx.Response(200, json={"_embedded": {name: []}, "page": {"totalPages": 1}})
    if path.endswith("/messages"):
        return httpx.Response(200, json={"messages": [], "participants": []})
    if path.endswith("/participants"):
        return httpx.Response(200, json=[])
    return httpx.Response(200, json={"id": "c-1"})


async def _exercise(generation: Generation, assignment: tuple[str, str] | None, *, wire: bool = False) -> list[httpx.Request]:
    """The requests the adapter sends for one of everything: through a MockTransport, or (`wire`)
    through the worker's aiohttp sender to a local server, rewritten to 8x8's host."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return _answer(request)

    async def on_wire(request: web.Request) -> web.Response:
        answer = handler(
            httpx.Request(request.method, f"https://api.8x8.com{request.path_qs}", headers=list(request.headers.items()), content=await request.read())
        )
        return web.Response(status=answer.status_code, body=answer.content, headers={"Content-Type": "application/json"})

    base_url = "https://api.8x8.com"
    if wire:
        server = web.Application()
        server.router.add_route("*", "/{path:.*}", on_wire)
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base_url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        platform_generation=generation,
        platform_base_url=base_url,
        platform_allow_insecure_http=base_url.startswith("http://"),  # the wire run's local server
        platform_tenant_id="acme",
        platform_api_key="key",
        platform_api_secret="secret",
        platform_region="eu",
    )
    platform = open_platform(settings, transport=None if wire else httpx.MockTransport(handler))
    conversation = NewConversation(
        ref=REF,
        channel_id="25",
        name="Ann Example",
        customer_id="cust-1",
        email="ann@example.com",
        phone="+4412345",
        company="Acme",
        case_id="case-9",
        language="en",
        properties={f"p{i}": str(i) for i in range(29)},
        history=[("hello", "user"), ("bot says hi", "bot")] * 100,
        assignment=assignment,
    )
    if generation is Generation.CHAT_API_V2:
        # v2 counts the predefined fields among its 30 customer properties.
        conversation = NewConversation(**{**conversation.__dict__, "properties": {f"p{i}": str(i) for i in range(22)}})
    assert await platform.create(conversation) == "c-1"
    await platform.send("c-1", "a customer message", "user")
    await platform.send("c-1", "a bot message", "bot")
    await platform.end("c-1")
    assert await platform.find_by_ref(REF) == "c-1"
    await platform.get("c-1")
    await platform.read_back("c-1")
    await platform.aclose()
    if wire:
        await runner.cleanup()
    return sent


@pytest.mark.parametrize(
    ("generation", "spec", "assignment"),
    [
        (Generation.CHAT_API_V2, load_v2_spec, None),
        (Generation.CHAT_GATEWAY_V1, load_gateway_spec, ("queue", "101")),
        (Generation.CHAT_GATEWAY_V1, load_gateway_spec, ("script", "7")),
    ],
    ids=["chat-api-v2", "gateway-queue", "gateway-script"],
)
@pytest.mark.parametrize("wire", [False, True], ids=["mock-transport", "aiohttp-wire"])
async def test_every_request_validates_against_the_spec(generation, spec, assignment, wire) -> None:
    openapi = OpenAPI.from_dict(spec())
    sent = await _exercise(generation, assignment, wire=wire)
    operations = {(r.method, r.url.path.rsplit("/", 1)[-1]) for r in sent}
    assert len(operations) >= 7  # create, send, end, find, get, messages, participants (+ token / interactions)
    for request in sent:
        openapi.validate_request(_Request(request))


@pytest.mark.parametrize("generation", list(Generation))
async def test_both_senders_send_the_same_requests(generation) -> None:
    """What the tests see through the MockTransport is what the worker puts on the wire."""

    def shape(request: httpx.Request) -> tuple[Any, ...]:
        headers = sorted((k, v) for k, v in request.headers.items() if k not in ("host", "content-length"))
        return request.method, str(request.url), headers, request.content

    assignment = None if generation is Generation.CHAT_API_V2 else ("queue", "1")
    mocked = [shape(r) for r in await _exercise(generation, assignment)]
    on_wire = [shape(r) for r in await _exercise(generation, assignment, wire=True)]
    assert on_wire == mocked


async def test_connector_ref_is_stamped_in_both_generations() -> None:
    v2 = await _exercise(Generation.CHAT_API_V2, None)
    body = json.loads(next(r for r in v2 if r.method == "POST" and r.url.path.endswith("/conversations")).content)
    assert body["customer"]["connectorRef"] == REF
    gateway = await _exercise(Generation.CHAT_GATEWAY_V1, None)
    body = json.loads(next(r for r in gateway if r.method == "POST" and r.url.path.endswith("/conversations")).content)
    assert {"key": "connectorRef", "value": REF} in body["user"]["additionalProperties"]


async def test_a_request_the_spec_forbids_is_caught() -> None:
    """The validation is not vacuous: a message without text fails it."""
    openapi = OpenAPI.from_dict(load_v2_spec())
    bad = httpx.Request(
        "POST",
        "https://api.8x8.com/vcc/eu/chat/v2/tenant/acme/conversations/c-1/messages",
        json={"authorType": "user"},
        headers={"Authorization": "Bearer x"},
    )
    with pytest.raises(Exception):
        openapi.validate_request(_Request(bad))
