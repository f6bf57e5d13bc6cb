"""Schemathesis against the sandbox: generated requests for the conversation, message, participant,
webhook and channel operations of both specs, and the gateway's attachments, typing indicators and
read receipts; every answer must conform to its spec.

The specs are loaded with their known flaws patched (see `openapi_contract`). Half of the generated
ids are swapped for ids that exist, so that success answers are exercised as well as 404s.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from connector.sandbox import RunningSandbox, SandboxConfig, run_in_thread
from tests.contract.openapi_contract import load_gateway_spec, load_v2_spec

MAX_EXAMPLES = 12
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
# Nothing listens there: deliveries to generated webhooks fail fast instead of reaching the internet.
NOWHERE = "http://127.0.0.1:9/hook"

v2_schema = schemathesis.openapi.from_dict(load_v2_spec()).include(
    path_regex="/(web-hooks|channels|conversations)", operation_id_regex="^(?!verifywebhook)"
)
gateway_schema = schemathesis.openapi.from_dict(load_gateway_spec()).include(
    operation_id=[
        "getwebhooks-1",
        "createwebhook-1",
        "getwebhookbyid-1",
        "updatewebhook-1",
        "deletewebhookbyid-1",
        "getchatapichannels-1",
        "createchatapichannel-1",
        "getchatapichannel-1",
        "updatechatapichannel-1",
        "deletechatapichannelbyid-1",
        "getcctransactions-1",
        "createcctransaction-1",
        "getcctransaction-1",
        "getccinteractions",
        "getparticipantsforcctransaction-1",
        "userparticipantleavecctransaction",
        "getmessagesforcctransaction-1",
        "sendmessagetocctransaction-1",
        "getmessagebyidforcctransaction",
        "getconversationattachments",
        "addconversationattachments",
        "sendtypingindicator",
        "sendreadreceipt",
    ]
)


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    config = SandboxConfig(
        port=0,
        webhook_url=NOWHERE,
        agent_accept_delay_s=0.01,
        agent_reply_delay_s=0.0,
        retry_max_attempts=1,
        delivery_timeout_s=0.5,
        max_conversations=2_000,
    )
    with run_in_thread(config) as running:
        yield running


@pytest.fixture(scope="module")
def known(running: RunningSandbox) -> dict[str, dict[str, str]]:
    """Ids that exist, by generation: a webhook, a channel and a conversation."""
    info = running.info
    v2_headers = {"Authorization": f"Bearer {_token(running)}"}
    base = f"{running.url}/vcc/us/chat/v2/tenant/{running.sandbox.config.tenant}"
    v2_channel = info["chat-api-v2"]["channels"][0]
    v2_conversation = httpx.post(
        f"{base}/conversations", headers=v2_headers, json={"channelId": v2_channel, "customer": {"name": "S"}}
    ).json()["conversationId"]
    gateway_channel = info["chat-gateway-v1"]["channels"][0]
    gateway_conversation = httpx.post(
        f"{running.url}/chat-gateway/v1/conversations",
        headers=_gateway_headers(running),
        json={"channelId": gateway_channel, "user": {"name": "S"}},
    ).json()["conversationId"]
    return {
        "v2": {
            "web-hook-id": info["chat-api-v2"]["webhooks"][0],
            "channel-id": v2_channel,
            "conversation-id": v2_conversation,
            "headers": v2_headers,
        },
        "gateway": {
            "webhookId": info["chat-gateway-v1"]["webhooks"][0],
            "channelId": gateway_channel,
            "conversationId": gateway_conversation,
            "headers": _gateway_headers(running),
        },
    }


@v2_schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_chat_api_v2(case: schemathesis.Case, running: RunningSandbox, known: dict[str, Any]) -> None:
    ids = known["v2"]
    case.path_parameters["tenant-id"] = running.sandbox.config.tenant
    _use_known_ids(case, ids, body_channel="channelId", body_webhook="webHookId")
    case.call_and_validate(base_url=running.url, headers=ids["headers"], checks=CHECKS, timeout=5)


@gateway_schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_chat_gateway(case: schemathesis.Case, running: RunningSandbox, known: dict[str, Any]) -> None:
    ids = known["gateway"]
    _use_known_ids(case, ids, body_channel="channelId", body_webhook="webHookId")
    case.call_and_validate(base_url=running.url, headers=ids["headers"], checks=CHECKS, timeout=5)


def _use_known_ids(case: schemathesis.Case, ids: dict[str, Any], *, body_channel: str, body_webhook: str) -> None:
    """Swap about half of the generated ids for existing ones (decided by the generated value itself)."""
    for name, value in list((case.path_parameters or {}).items()):
        if name in ids and _heads(value):
            case.path_parameters[name] = ids[name]
    body = case.body
    if isinstance(body, dict):
        channel_key = "channel-id" if "channel-id" in ids else "channelId"
        webhook_key = "web-hook-id" if "web-hook-id" in ids else "webhookId"
        if isinstance(body.get(body_channel), str) and _heads(body[body_channel]):
            body[body_channel] = ids[channel_key]
        if isinstance(body.get(body_webhook), str) and _heads(body[body_webhook]):
            body[body_webhook] = ids[webhook_key]
        if isinstance(body.get("uri"), str) and body["uri"].startswith("http"):
            body["uri"] = NOWHERE


def _heads(value: Any) -> bool:
    return zlib.crc32(str(value).encode()) % 2 == 0


def _token(running: RunningSandbox) -> str:
    config = running.sandbox.config
    basic = base64.b64encode(f"{config.api_key}:{config.api_secret}".encode()).decode()
    response = httpx.post(
        f"{running.url}/oauth/v2/token",
        headers={"Authorization": f"Basic {basic}"},
        data={"grant_type": "client_credentials"},
    )
    return response.json()["access_token"]


def _gateway_headers(running: RunningSandbox) -> dict[str, str]:
    return {"x-api-key": running.sandbox.config.api_key, "X-8x8-Tenant": running.sandbox.config.tenant}
