"""Inspection, reset, the memory bound, the command line, and that the suite covers every operation."""

from __future__ import annotations

import subprocess
import sys

from tests.sandbox.support import GATEWAY_BASE, Receiver, gateway_headers, v2_client


async def test_info_requests_and_reset(api, sandbox, receiver: Receiver) -> None:
    info = (await api.get("/_sandbox/info")).json()
    assert info["tenant"] == "sandbox-tenant" and info["apiKey"] == "sandbox-api-key"
    assert "sandbox-api-secret" not in str(info)
    assert len(info["chat-api-v2"]["channels"]) == 1 and len(info["chat-gateway-v1"]["webhooks"]) == 1
    assert info["urls"]["chat-gateway-v1"].endswith("/chat-gateway/v1")

    headers = gateway_headers(sandbox)
    channel_id = info["chat-gateway-v1"]["channels"][0]
    created = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": {"name": "R"}})
    await api.post(f"{GATEWAY_BASE}/channels", headers=headers, json={"name": "extra", "webHookId": info["chat-gateway-v1"]["webhooks"][0], "routingOptions": {"type": "queue", "id": "7"}})
    log = (await api.get("/_sandbox/requests")).json()
    assert [(e["method"], e["operation"], e["status"]) for e in log] == [
        ("POST", "createcctransaction-1", 202),
        ("POST", "createchatapichannel-1", 200),
    ]
    assert log[0]["body"] == {"channelId": channel_id, "user": {"name": "R"}}
    assert (await api.get("/_sandbox/requests", params={"since": log[0]["seq"]})).json() == log[1:]
    conversations = (await api.get("/_sandbox/conversations")).json()
    assert [c["id"] for c in conversations] == [created.json()["conversationId"]]
    detail = (await api.get(f"/_sandbox/conversations/{conversations[0]['id']}")).json()
    assert detail["generation"] == "chat-gateway-v1" and detail["interactions"]

    assert (await api.post("/_sandbox/reset")).status_code == 204
    assert (await api.get("/_sandbox/conversations")).json() == []
    assert (await api.get("/_sandbox/requests")).json() == []
    after = (await api.get("/_sandbox/info")).json()
    assert after["chat-gateway-v1"] == info["chat-gateway-v1"]  # back to the channels provisioned at start
    assert (await api.delete("/_sandbox/deliveries")).status_code == 204


async def test_oldest_ended_conversations_are_evicted_first(start, client_for) -> None:
    running = await start(max_conversations=3, agent_accept_delay_s=5)
    api = client_for(running)
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]

    async def create() -> str:
        response = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {}})
        return response.json()["conversationId"]

    first, second, third = [await create() for _ in range(3)]
    await api.delete(f"{base}/conversations/{second}/participants/customer", headers=auth)
    fourth = await create()  # the ended one goes first
    remembered = [c["id"] for c in (await api.get("/_sandbox/conversations")).json()]
    assert remembered == [first, third, fourth]
    fifth = await create()  # none ended: the oldest goes
    remembered = [c["id"] for c in (await api.get("/_sandbox/conversations")).json()]
    assert remembered == [third, fourth, fifth]
    assert (await api.get(f"{base}/conversations/{first}", headers=auth)).status_code == 404


def test_command_line_prints_credentials_and_channels() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "connector.sandbox", "--port", "0", "--webhook-url", "http://127.0.0.1:9/hook", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        banner = "".join(lines)
        assert "Sandbox credentials (development only" in banner
        assert "sandbox-api-key" in banner and "sandbox-api-secret" in banner and "sandbox-tenant" in banner
        assert "chat-api-v2       channel id" in banner and "chat-gateway-v1   channel id" in banner
    finally:
        process.terminate()
        process.wait(10)
