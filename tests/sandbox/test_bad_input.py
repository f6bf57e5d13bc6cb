"""Bad requests get the status and error body each spec declares (the contract hook checks shapes too)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.sandbox.support import GATEWAY_BASE, gateway_headers, v2_client, v2_token


@pytest.fixture
async def v2(api: httpx.AsyncClient, sandbox) -> tuple[httpx.AsyncClient, str, dict[str, str], str]:
    base, auth = await v2_client(api, sandbox)
    return api, base, auth, sandbox.info["chat-api-v2"]["channels"][0]


@pytest.fixture
def gw(api: httpx.AsyncClient, sandbox) -> tuple[httpx.AsyncClient, dict[str, str], str]:
    return api, gateway_headers(sandbox), sandbox.info["chat-gateway-v1"]["channels"][0]


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


async def test_v2_invalid_json(v2) -> None:
    api, base, auth, _ = v2
    body = problem(await api.post(f"{base}/conversations", headers={**auth, "Content-Type": "application/json"}, content=b"{nope"), 400)
    assert body["message"] and isinstance(body["errors"], list) and all(isinstance(e, str) for e in body["errors"])


async def test_v2_missing_fields(v2) -> None:
    api, base, auth, _ = v2
    body = problem(await api.post(f"{base}/conversations", headers=auth, json={"history": {"messages": []}}), 400)
    assert {e.split(":")[0] for e in body["errors"]} == {"channelId", "customer"}
    body = problem(await api.post(f"{base}/conversations/x/messages", headers=auth, json={"text": "hi"}), 404)
    body = problem(await api.post(f"{base}/conversations", headers=auth, json={"channelId": "999", "customer": {}}), 400)
    assert "channelId" in body["errors"][0]


@pytest.mark.parametrize(("count", "status"), [(30, 202), (31, 400)])
async def test_v2_customer_properties_limit(v2, count: int, status: int) -> None:
    api, base, auth, channel_id = v2
    customer = {f"key{i}": "value" for i in range(count)}
    response = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": customer})
    assert response.status_code == status
    if status == 400:
        assert "30" in response.json()["errors"][0]


@pytest.mark.parametrize(("count", "status"), [(200, 202), (201, 400)])
async def test_v2_history_limit(v2, count: int, status: int) -> None:
    api, base, auth, channel_id = v2
    history = {"messages": [{"text": f"m{i}", "type": "user"} for i in range(count)]}
    response = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {"name": "H"}, "history": history})
    assert response.status_code == status


async def test_v2_unknown_ids(v2) -> None:
    api, base, auth, _ = v2
    for method, path in [
        ("GET", "/conversations/unknown"),
        ("GET", "/conversations/unknown/messages"),
        ("GET", "/conversations/unknown/participants"),
        ("DELETE", "/conversations/unknown/participants/customer"),
        ("GET", "/channels/unknown"),
        ("DELETE", "/web-hooks/unknown"),
    ]:
        body = problem(await api.request(method, f"{base}{path}", headers=auth), 404)
        assert "unknown" in body["message"]
    body = problem(await api.get("/vcc/us/chat/v2/jwk/unknown/public"), 404)
    assert body["resourceId"] == "unknown" and body["status"] == 404


async def test_v2_wrong_tenant(v2) -> None:
    api, _, auth, _ = v2
    body = problem(await api.get("/vcc/eu/chat/v2/tenant/someone-else/conversations", headers=auth), 403)
    assert "someone-else" in body["errors"][0]


async def test_v2_bad_auth(v2) -> None:
    api, base, _, _ = v2
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic c2FuZGJveA=="}):
        body = problem(await api.get(f"{base}/conversations", headers=headers), 401)
        assert body["fault"]["detail"]["errorcode"] == "keymanagement.service.invalid_access_token"
    bad_secret = await api.post("/oauth/v2/token", auth=("sandbox-api-key", "wrong"), data={"grant_type": "client_credentials"})
    assert problem(bad_secret, 401)["ErrorCode"] == "invalid_client"
    bad_grant = await api.post("/oauth/v2/token", auth=("sandbox-api-key", "sandbox-api-secret"), data={"grant_type": "password"})
    assert problem(bad_grant, 400) == {"ErrorCode": "invalid_request", "Error": "Unsupported grant type : password"}


async def test_v2_expired_token(start, client_for) -> None:
    running = await start(token_ttl_s=0.1)
    api = client_for(running)
    token_response = await api.post("/oauth/v2/token", auth=("sandbox-api-key", "sandbox-api-secret"), data={"grant_type": "client_credentials"})
    assert token_response.json()["expires_in"] == "0"  # seconds, as a string, rounded down
    token = await v2_token(api)
    base = f"/vcc/us/chat/v2/tenant/{running.sandbox.config.tenant}"
    assert (await api.get(f"{base}/conversations", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    await asyncio.sleep(0.15)
    body = problem(await api.get(f"{base}/conversations", headers={"Authorization": f"Bearer {token}"}), 401)
    assert body["fault"] == {"faultstring": "Access Token expired", "detail": {"errorcode": "keymanagement.service.access_token_expired"}}


async def test_gateway_invalid_json_and_missing_fields(gw) -> None:
    api, headers, channel_id = gw
    body = problem(await api.post(f"{GATEWAY_BASE}/conversations", headers={**headers, "Content-Type": "application/json"}, content=b"[1,"), 400)
    assert body["errors"][0]["code"] == "invalid_json_object"
    body = problem(await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id}), 400)
    assert body["errors"] == [{"code": "invalid_request", "message": "user: May not be empty."}]


@pytest.mark.parametrize(("count", "status"), [(30, 202), (31, 400)])
async def test_gateway_user_properties_limit(gw, count: int, status: int) -> None:
    api, headers, channel_id = gw
    user = {"name": "P", "additionalProperties": [{"key": f"k{i}", "value": "v"} for i in range(count)]}
    response = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": user})
    assert response.status_code == status


@pytest.mark.parametrize(("count", "status"), [(200, 202), (201, 400)])
async def test_gateway_history_limit(gw, count: int, status: int) -> None:
    api, headers, channel_id = gw
    history = {"messages": [{"authorType": "bot", "text": f"m{i}"} for i in range(count)]}
    response = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": {"name": "H"}, "history": history})
    assert response.status_code == status


async def test_gateway_bad_message(gw) -> None:
    api, headers, channel_id = gw
    created = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": {"name": "M"}})
    conversation_id = created.json()["conversationId"]
    body = problem(await api.post(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers, json={"text": "no author"}), 400)
    assert body["errors"]["code"] == "invalid_request"  # this operation's 400 has one error object, not a list


async def test_gateway_unknown_ids(gw) -> None:
    api, headers, _ = gw
    body = problem(await api.get(f"{GATEWAY_BASE}/conversations/unknown", headers=headers), 404)
    assert isinstance(body["errors"][0], str)
    # Operations without a declared 404 answer their `default` (GeneralError: error objects).
    body = problem(await api.get(f"{GATEWAY_BASE}/conversations/unknown/messages", headers=headers), 404)
    assert body["errors"][0]["code"] == "resource_not_found"
    response = await api.patch(f"{GATEWAY_BASE}/conversations/unknown/participants/user", headers=headers, json={"removed": True})
    assert problem(response, 404)["errors"]
    assert problem(await api.get(f"{GATEWAY_BASE}/jwk/unknown/public"), 404)["errors"]


async def test_gateway_wrong_tenant_and_bad_key(gw) -> None:
    api, headers, _ = gw
    body = problem(await api.get(f"{GATEWAY_BASE}/conversations", headers={**headers, "X-8x8-Tenant": "other"}), 403)
    assert "X-8x8-Tenant" in body["errors"][0]
    for bad in ({}, {"x-api-key": "wrong"}):
        body = problem(await api.get(f"{GATEWAY_BASE}/conversations", headers=bad), 401)
        assert body["errors"][0]["code"] == "access_denied" and body["referenceId"]
    # Without the tenant header (single-tenant accounts) the key alone is enough.
    assert (await api.get(f"{GATEWAY_BASE}/conversations", headers={"x-api-key": headers["x-api-key"]})).status_code == 200
