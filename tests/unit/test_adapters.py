"""The 8x8 adapters against an httpx MockTransport: auth, errors, find by ref, read-back."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from connector.config import Generation, load_settings
from connector.eightbyeight import InvalidCommand, NewConversation, PlatformError, open_platform
from connector.eightbyeight.auth import OAuthToken
from connector.eightbyeight.http import ApiClient, parse_retry_after
from connector.eightbyeight.transport import HttpxSender

SECRET = "s3cr3t-value"


def _platform(generation: Generation, handler):
    settings = load_settings(
        platform_generation=generation,
        platform_base_url="https://api.test",
        platform_tenant_id="acme",
        platform_api_key="the-key",
        platform_api_secret=SECRET,
        platform_timeout_s=1.0,
    )
    return open_platform(settings, transport=httpx.MockTransport(handler))


def _v2_handler(calls: list[httpx.Request], *, expires_in: str = "3600", refuse: set[str] = frozenset()):
    tokens = iter(f"token-{i}" for i in range(100))

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path == "/oauth/v2/token":
            await asyncio.sleep(0.01)
            return httpx.Response(200, json={"access_token": next(tokens), "expires_in": expires_in})
        if request.headers["authorization"].removeprefix("Bearer ") in refuse:
            return httpx.Response(401, json={"fault": {"faultstring": "Invalid Access Token"}})
        if request.method == "POST" and request.url.path.endswith("/conversations"):
            return httpx.Response(202, json={"conversationId": "c-1", "timestamp": 1})
        return httpx.Response(202)

    return handler


async def test_v2_fetches_one_token_for_many_concurrent_requests() -> None:
    calls: list[httpx.Request] = []
    platform = _platform(Generation.CHAT_API_V2, _v2_handler(calls))
    await asyncio.gather(*(platform.send("c-1", f"m{i}", "user") for i in range(20)))
    token_calls = [c for c in calls if c.url.path == "/oauth/v2/token"]
    assert len(token_calls) == 1
    assert token_calls[0].headers["authorization"].startswith("Basic ")
    assert token_calls[0].content == b"grant_type=client_credentials"
    sends = [c for c in calls if c.url.path != "/oauth/v2/token"]
    assert {c.url.path for c in sends} == {"/vcc/us/chat/v2/tenant/acme/conversations/c-1/messages"}
    assert {c.headers["authorization"] for c in sends} == {"Bearer token-0"}


async def test_v2_refreshes_a_margin_before_expiry() -> None:
    calls: list[httpx.Request] = []
    now = [0.0]
    sender = HttpxSender(httpx.MockTransport(_v2_handler(calls, expires_in="3600")))
    token = OAuthToken(ApiClient(sender, 4), "https://api.test/oauth/v2/token", "k", SECRET, refresh_margin_s=60, clock=lambda: now[0])
    assert await token.token() == "token-0"
    now[0] = 3539.0
    assert await token.token() == "token-0"
    now[0] = 3541.0
    assert await token.token() == "token-1"


async def test_v2_401_refreshes_once_and_retries_once() -> None:
    calls: list[httpx.Request] = []
    platform = _platform(Generation.CHAT_API_V2, _v2_handler(calls, refuse={"token-0"}))
    await asyncio.gather(*(platform.send("c-1", f"m{i}", "user") for i in range(5)))
    assert len([c for c in calls if c.url.path == "/oauth/v2/token"]) == 2
    assert [c.headers["authorization"] for c in calls if c.url.path != "/oauth/v2/token"].count("Bearer token-1") == 5


async def test_v2_401_twice_is_final() -> None:
    calls: list[httpx.Request] = []
    platform = _platform(Generation.CHAT_API_V2, _v2_handler(calls, refuse={"token-0", "token-1"}))
    with pytest.raises(PlatformError) as caught:
        await platform.send("c-1", "m", "user")
    assert caught.value.http_status == 401 and not caught.value.retryable
    assert caught.value.message == "Invalid Access Token"


async def test_bad_credentials_fail_without_leaking_them() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "Invalid client credentials"})

    platform = _platform(Generation.CHAT_API_V2, handler)
    with pytest.raises(PlatformError) as caught:
        await platform.send("c-1", "m", "user")
    assert caught.value.code == "AUTH_FAILED" and not caught.value.retryable
    assert SECRET not in str(caught.value) and "the-key" not in str(caught.value)


async def test_gateway_sends_api_key_and_tenant() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(204)

    platform = _platform(Generation.CHAT_GATEWAY_V1, handler)
    await platform.end("c/1")
    (request,) = calls
    assert request.method == "PATCH"
    assert request.url.raw_path == b"/chat-gateway/v1/conversations/c%2F1/participants/user"
    assert request.headers["x-api-key"] == "the-key" and request.headers["x-8x8-tenant"] == "acme"
    assert json.loads(request.content) == {"removed": True}


@pytest.mark.parametrize(
    ("answer", "retryable", "unknown", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "3"}), True, False, 3.0),
        (httpx.Response(429), True, False, None),
        (httpx.Response(500, json={"message": "Internal error."}), True, True, None),
        (httpx.Response(503), True, True, None),
        (httpx.Response(400, json={"message": "Constraint Violation", "errors": ["text: May not be empty."]}), False, False, None),
        (httpx.Response(404), False, False, None),
    ],
)
async def test_errors_say_whether_to_retry(answer, retryable, unknown, retry_after) -> None:
    platform = _platform(Generation.CHAT_GATEWAY_V1, lambda request: answer)
    with pytest.raises(PlatformError) as caught:
        await platform.send("c-1", "m", "user")
    error = caught.value
    assert (error.retryable, error.outcome_unknown, error.retry_after) == (retryable, unknown, retry_after)
    assert error.http_status == answer.status_code
    if answer.status_code == 400:
        assert error.message == "Constraint Violation; text: May not be empty."


@pytest.mark.parametrize(
    ("exc", "unknown"),
    [(httpx.ConnectError("refused"), False), (httpx.ReadTimeout("slow"), True), (httpx.RemoteProtocolError("dropped"), True)],
)
async def test_network_errors_are_retryable(exc, unknown) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    platform = _platform(Generation.CHAT_GATEWAY_V1, handler)
    with pytest.raises(PlatformError) as caught:
        await platform.create(NewConversation(ref="r", channel_id="1", name="n"))
    assert caught.value.retryable and caught.value.outcome_unknown is unknown and caught.value.http_status is None


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert parse_retry_after(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert parse_retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None


async def test_gateway_find_pages_and_checks_the_property() -> None:
    pages = {
        0: [{"id": "x", "user": {"additionalProperties": [{"key": "connectorRef", "value": "other"}]}}],
        1: [{"id": "c-7", "user": {"additionalProperties": [{"key": "connectorRef", "value": "r-1"}]}}],
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"_embedded": {"conversations": pages[page]}, "page": {"totalPages": 2}})

    platform = _platform(Generation.CHAT_GATEWAY_V1, handler)
    assert await platform.find_by_ref("r-1") == "c-7"
    assert seen[0].url.params["filter"] == "user.connectorRef==r-1"
    assert await platform.find_by_ref("r,2") is None  # not writable in a filter: listed and checked only
    assert "filter" not in seen[-1].url.params


async def test_v2_find_filters_by_customer_property() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/oauth/v2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": "3600"})
        return httpx.Response(200, json={"data": [{"id": "c-3", "customer": {"connectorRef": "r-1"}}]})

    platform = _platform(Generation.CHAT_API_V2, handler)
    assert await platform.find_by_ref("r-1") == "c-3"
    assert seen[-1].url.params["customer.connectorRef"] == "r-1"
    assert await platform.find_by_ref("r-2") is None


def test_v2_refuses_what_it_cannot_create() -> None:
    platform = _platform(Generation.CHAT_API_V2, lambda r: httpx.Response(500))
    with pytest.raises(InvalidCommand, match="only supported by Chat Gateway"):
        platform.check(NewConversation(ref="r", channel_id="1", name="n", assignment=("queue", "1")))
    with pytest.raises(InvalidCommand, match="30"):
        platform.check(NewConversation(ref="r", channel_id="1", name="n", properties={f"k{i}": "v" for i in range(30)}))
    with pytest.raises(InvalidCommand, match="200"):
        platform.check(NewConversation(ref="r", channel_id="1", name="n", history=[("t", "user")] * 201))
    with pytest.raises(InvalidCommand, match="channel"):
        platform.check(NewConversation(ref="r", channel_id="", name="n"))


async def test_read_back_gateway_shapes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/messages"):
            items = [
                {"id": "m1", "text": "hi", "createdAt": "2024-01-01T00:00:00Z", "author": {"id": "u", "type": "user"}},
                {"id": "m2", "text": "odd", "attachments": 5, "cards": "x"},  # not lists: no files, no cards, no failure
                {"id": "m3", "cards": [{"contentType": "Buttons", "content": {"title": "Café"}}]},
            ]
            return httpx.Response(200, json={"_embedded": {"messages": items}, "page": {"totalPages": 1}})
        if path.endswith("/participants"):
            return httpx.Response(200, json={"_embedded": {"participants": [{"id": "a1", "type": "agent"}]}, "page": {"totalPages": 1}})
        if path.endswith("/interactions"):
            items = [{"id": "i1", "startTime": "2024-01-01T00:00:00Z"}]
            return httpx.Response(200, json={"_embedded": {"interactions": items}, "page": {"totalPages": 1}})
        return httpx.Response(200, json={"id": "c-1", "state": "idle"})

    read = await _platform(Generation.CHAT_GATEWAY_V1, handler).read_back("c-1")
    assert read.status == "idle"
    assert read.messages[0]["text"] == "hi" and read.messages[0]["created_at"] == 1704067200000
    assert (read.messages[1]["attachments"], read.messages[1]["cards"]) == ([], [])
    assert read.messages[2]["cards"] == [{"card_id": None, "content_type": "Buttons", "content_json": '{"title":"Café"}'}]
    assert read.participants[0]["participant_type"] == "agent"
    assert read.interactions[0]["interaction_id"] == "i1" and read.interactions[0]["ended_at"] is None
