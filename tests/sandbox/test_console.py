"""The console's endpoints: its page, state, timeline and live stream, and the agent a person plays.

What a played agent does must reach the webhook exactly as the scripted agents' actions do: the same
event shapes, signed, in order; the gateway's attachments, cards, typing and read receipts as the
spec describes them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import httpx
import jsonschema
import pytest

from tests.contract.openapi_contract import load_gateway_spec
from tests.sandbox.signatures import verify
from tests.sandbox.support import GATEWAY_BASE, Receiver, gateway_headers, v2_client

HOLD = dict(agents=1, agent_accept_delay_s=60.0)  # the one scripted agent is slow to accept: conversations stay queued


async def act(api: httpx.AsyncClient, agent_id: str, action: str, status: int = 200, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/_sandbox/agents/{agent_id}/{action}", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def state(api: httpx.AsyncClient) -> dict[str, Any]:
    return (await api.get("/_sandbox/state")).raise_for_status().json()


async def timeline(api: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    return (await api.get(f"/_sandbox/conversations/{conversation_id}/timeline")).raise_for_status().json()


async def v2_conversation(api: httpx.AsyncClient, running, ref: str) -> tuple[str, str, dict[str, str]]:
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]
    body = {"channelId": channel_id, "customer": {"name": "Ada", "connectorRef": ref}}
    created = await api.post(f"{base}/conversations", headers=auth, json=body)
    return created.json()["conversationId"], base, auth


async def test_the_page_and_its_files_come_from_the_package_only(api) -> None:
    page = await api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert '<script type="module" src="/console/console.js">' in page.text and 'href="/console/console.css"' in page.text
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = await api.get(f"/console/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert not re.search(r"(?:src|href|url|import)[^\n]*https?://", asset.text), f"{name} loads from the network"
    assert not re.search(r"(?:src|href)=\"https?://", page.text)
    assert (await api.get("/console/secrets.py")).status_code == 404
    # Every form control of the page has a label.
    for control in re.findall(r'<(?:input|select|textarea)[^>]*id="([^"]+)"', page.text):
        assert f'for="{control}"' in page.text, control


async def test_state_shows_queues_agents_and_conversations(start, client_for) -> None:
    running = await start(**HOLD)
    api = client_for(running)
    conversation_id, _, _ = await v2_conversation(api, running, "ref-state")

    seen = await state(api)
    (agent,) = seen["agents"]
    assert agent == {"id": agent["id"], "name": "Ada 1", "scripted": True, "busy": True, "conversationId": conversation_id, "joined": False}
    (summary,) = seen["conversations"]
    assert summary | {"createdAt": None} == {
        "id": conversation_id,
        "generation": "chat-api-v2",
        "status": "QUEUED",
        "customer": "Ada",
        "ref": "ref-state",
        "queueId": "101",
        "agentId": agent["id"],
        "agentName": "Ada 1",
        "interaction": 1,
        "createdAt": None,
    }
    assert seen["queues"] == [{"id": "101", "waiting": []}]  # the scripted agent is accepting it

    # Taking the agent over stops its script: the conversation is first in line again, for a person to accept.
    assert (await act(api, agent["id"], "take-over"))["scripted"] is False
    seen = await state(api)
    assert seen["queues"] == [{"id": "101", "waiting": [conversation_id]}]
    assert seen["agents"][0]["busy"] is False and seen["conversations"][0]["agentId"] is None


async def test_a_played_agent_sends_the_webhooks_a_scripted_one_does(start, client_for, receiver: Receiver) -> None:
    running = await start(**HOLD)
    api = client_for(running)
    agent_id = running.info["agents"][0]["id"]
    await act(api, agent_id, "take-over")
    conversation_id, base, auth = await v2_conversation(api, running, "ref-played")

    await act(api, agent_id, "accept", conversationId=conversation_id)
    await act(api, agent_id, "message", text="Hello from a person")
    await act(api, agent_id, "transfer", queueId="202")
    assert (await state(api))["queues"][-1] == {"id": "202", "waiting": [conversation_id]}
    await act(api, agent_id, "accept", conversationId=conversation_id)
    await act(api, agent_id, "leave")

    events = await receiver.wait_for_types(conversation_id, "QUEUED", "AGENT_JOINED", "TEXT", "TRANSFER", "AGENT_LEFT", "AGENT_JOINED", "AGENT_LEFT")
    who = {"agentId": agent_id, "agentName": "Ada 1"}
    assert [{k: v for k, v in e.items() if k not in ("conversationId", "timestamp")} for e in events] == [
        {"eventType": "QUEUED", "messageType": "SYSTEM", "queueId": "101", "queueName": "Queue 101"},
        {"eventType": "AGENT_JOINED", "messageType": "SYSTEM", **who},
        {"eventType": "TEXT", "messageType": "AGENT", **who, "message": "Hello from a person"},
        {"eventType": "TRANSFER", "messageType": "SYSTEM"},
        {"eventType": "AGENT_LEFT", "messageType": "SYSTEM", **who},
        {"eventType": "AGENT_JOINED", "messageType": "SYSTEM", **who},
        {"eventType": "AGENT_LEFT", "messageType": "SYSTEM", **who},
    ]
    jwk = (await api.get(f"/vcc/us/chat/v2/jwk/{running.info['kid']}/public")).json()
    for received in receiver.received:
        verify(received.headers, received.body, jwk)

    seen = await timeline(api, conversation_id)
    assert seen["conversation"]["status"] == "AGENT_LEFT" and seen["conversation"]["queueId"] == "202"
    kinds = [(e["kind"], e.get("eventType") or e["author"]) for e in seen["timeline"]]
    assert kinds == [
        ("webhook", "QUEUED"),
        ("webhook", "AGENT_JOINED"),
        ("message", "Ada 1"),
        ("webhook", "TEXT"),
        ("webhook", "TRANSFER"),
        ("webhook", "AGENT_LEFT"),
        ("webhook", "AGENT_JOINED"),
        ("webhook", "AGENT_LEFT"),
    ]
    assert all(e["outcome"] == "delivered" and e["answers"] == [200] for e in seen["timeline"] if e["kind"] == "webhook")
    # 8x8's own API tells the same story (the client checks every answer against the spec).
    messages = (await api.get(f"{base}/conversations/{conversation_id}/messages", headers=auth)).json()["messages"]
    assert [(m["authorType"], m["originalText"]) for m in messages] == [("agent", "Hello from a person")]

    # The customer writes again: a new interaction, queued where the last one was (after the transfer).
    await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "one more thing"})
    events = await receiver.wait_for_types(conversation_id, "AGENT_LEFT", "QUEUED")
    assert events[-1]["queueId"] == "202"
    assert (await timeline(api, conversation_id))["conversation"] | {"createdAt": None} == seen["conversation"] | {
        "createdAt": None, "status": "QUEUED", "interaction": 2, "agentId": None, "agentName": None,
    }


async def test_gateway_attachment_card_typing_and_read_receipt_follow_the_spec(start, client_for, receiver: Receiver) -> None:
    running = await start(**HOLD)
    api = client_for(running)
    headers = gateway_headers(running)
    agent_id = running.info["agents"][0]["id"]
    await act(api, agent_id, "take-over")
    channel_id = running.info["chat-gateway-v1"]["channels"][0]
    user = {"name": "Bo", "userId": "u-9", "additionalProperties": [{"key": "connectorRef", "value": "ref-gw"}]}
    created = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": user})
    conversation_id = created.json()["conversationId"]

    await act(api, agent_id, "accept", conversationId=conversation_id)
    await act(api, agent_id, "typing", typing=True)
    await act(api, agent_id, "typing", typing=False)
    await act(api, agent_id, "read")
    content = b"%PDF-1.4 a tiny invoice"
    attachment = {"fileName": "invoice 42.pdf", "contentType": "application/pdf", "data": base64.b64encode(content).decode()}
    await act(api, agent_id, "message", text="Here is your invoice", attachment=attachment)
    card = {"type": "AdaptiveCard", "version": "1.6", "body": [{"type": "TextBlock", "text": "Happy?"}]}
    await act(api, agent_id, "message", card={"contentType": "application/vnd.microsoft.card.adaptive", "content": card})
    await act(api, agent_id, "leave")

    events = await receiver.wait_for_types(
        conversation_id, "MEMBERS_CHANGED", "CONVERSATION_UPDATE", "ACTIVITY", "ACTIVITY", "ACTIVITY", "MESSAGE", "MESSAGE", "MEMBERS_CHANGED"
    )
    after_join = events[events.index(next(e for e in events if e["eventType"] == "MEMBERS_CHANGED")) :]
    assert after_join[0]["data"] == {"memberType": "agent", "change": "joined", "id": agent_id}
    activities = [e["data"] for e in after_join if e["eventType"] == "ACTIVITY"]
    assert activities[:2] == [{"name": "typing", "value": {"users": [agent_id]}}, {"name": "typing", "value": {"users": []}}]
    receipt = activities[2]
    assert receipt["name"] == "read-receipts" and receipt["value"]["users"] == [agent_id]
    assert abs(receipt["value"]["readAt"] - time.time() * 1000) < 60_000

    spec = load_gateway_spec()
    read_at = spec["components"]["schemas"]["ReadReceiptRequest"]["properties"]["readAt"]
    jsonschema.validate(receipt["value"]["readAt"], read_at)
    with_file, with_card = [e["data"] for e in after_join if e["eventType"] == "MESSAGE"]
    for data in (with_file, with_card):
        assert data["isEcho"] is False and data["sender"] == {"id": agent_id, "type": "agent"}
        for part in ("Attachments", "Cards"):
            jsonschema.validate(data, {"$ref": f"#/components/schemas/{part}", "components": spec["components"]})
    (sent_file,) = with_file["attachments"]
    assert with_file["text"] == "Here is your invoice"
    assert set(sent_file) == {"id", "type", "preSignedUrl", "fileName"} and sent_file["fileName"] == "invoice 42.pdf"
    download = await api.get(sent_file["preSignedUrl"].removeprefix(running.url))
    assert download.content == content and download.headers["content-type"] == "application/pdf"
    assert "invoice%2042.pdf" in download.headers["content-disposition"]
    (sent_card,) = with_card["cards"]
    assert sent_card["contentType"] == "application/vnd.microsoft.card.adaptive" and sent_card["content"] == card

    # The gateway's message list carries both (its answer is checked against the spec by the client).
    listed = await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers, params={"sort": "createdAt:asc"})
    agent_messages = [m for m in listed.json()["_embedded"]["messages"] if m["author"]["type"] == "agent"]
    assert [m["attachments"] for m in agent_messages] == [[sent_file], []]
    assert [m["cards"] for m in agent_messages] == [[], [sent_card]]


async def test_actions_that_do_not_apply_are_refused(start, client_for) -> None:
    running = await start(**HOLD)
    api = client_for(running)
    agent_id = running.info["agents"][0]["id"]
    conversation_id, _, _ = await v2_conversation(api, running, "ref-refused")

    refused = await api.post(f"/_sandbox/agents/{agent_id}/accept", json={"conversationId": conversation_id})
    assert refused.status_code == 409 and "take the agent over first" in refused.json()["message"]
    await act(api, agent_id, "take-over")
    await act(api, agent_id, "take-over")  # again: nothing changes
    assert "accept one first" in (await act(api, agent_id, "message", 409, text="hi"))["message"]
    assert (await api.post(f"/_sandbox/agents/{agent_id}/accept", json={"conversationId": "nope"})).status_code == 404
    await act(api, agent_id, "accept", conversationId=conversation_id)
    assert "already serves" in (await act(api, agent_id, "accept", 409, conversationId=conversation_id))["message"]
    assert "text only" in (await act(api, agent_id, "message", 409, card={"content": {}}))["message"]
    assert "no typing" in (await act(api, agent_id, "typing", 409))["message"]
    assert "no read receipts" in (await act(api, agent_id, "read", 409))["message"]
    assert (await act(api, agent_id, "message", 400))["message"].startswith("A message needs")
    assert (await act(api, agent_id, "message", 400, text=5))["message"] == "text must be a string."
    assert (await api.post(f"/_sandbox/agents/{agent_id}/message", content=b"{")).status_code == 400
    assert (await api.post(f"/_sandbox/agents/{agent_id}/dance", json={})).status_code == 404
    assert (await api.post("/_sandbox/agents/nobody/leave", json={})).status_code == 404


async def test_a_taken_over_agent_stops_answering_and_its_script_resumes_when_handed_back(start, client_for, receiver: Receiver) -> None:
    running = await start(agents=1, exchanges=2)
    api = client_for(running)
    agent_id = running.info["agents"][0]["id"]
    conversation_id, base, auth = await v2_conversation(api, running, "ref-back")
    await receiver.wait_for_types(conversation_id, "AGENT_JOINED", "TEXT")  # the script greets

    await act(api, agent_id, "take-over")
    await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "are you there?"})
    await asyncio.sleep(0.3)  # the script would have answered within 0.01 s
    assert [e["eventType"] for e in receiver.events(conversation_id)] == ["QUEUED", "AGENT_JOINED", "TEXT"]

    await act(api, agent_id, "hand-back")  # the customer's question is pending: the script answers it
    await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "thanks"})
    events = await receiver.wait_for_types(conversation_id, "TEXT", "TEXT", "TEXT", "AGENT_LEFT")
    assert [e["eventType"] for e in events] == ["QUEUED", "AGENT_JOINED", "TEXT", "TEXT", "TEXT", "AGENT_LEFT"]
    assert (await state(api))["agents"][0] | {"id": None} == {
        "id": None, "name": "Ada 1", "scripted": True, "busy": False, "conversationId": None, "joined": False,
    }


async def test_taking_over_a_typing_agent_stops_its_typing(start, client_for, receiver: Receiver) -> None:
    running = await start(agents=1, agent_reply_delay_s=30.0)
    api = client_for(running)
    headers = gateway_headers(running)
    agent_id = running.info["agents"][0]["id"]
    channel_id = running.info["chat-gateway-v1"]["channels"][0]
    created = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": {"name": "Di"}})
    conversation_id = created.json()["conversationId"]
    await receiver.wait_for_types(conversation_id, "MEMBERS_CHANGED", "MESSAGE")  # joined and greeted
    await api.post(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers, json={"authorType": "user", "text": "hi"})
    await receiver.wait_for_types(conversation_id, "ACTIVITY")  # the script types its answer for 30 s

    await act(api, agent_id, "take-over")
    events = await receiver.wait_for_types(conversation_id, "ACTIVITY", "ACTIVITY")
    assert [e["data"] for e in events[-2:]] == [{"name": "typing", "value": {"users": users}} for users in ([agent_id], [])]
    await act(api, agent_id, "leave")
    await receiver.wait_for_types(conversation_id, "ACTIVITY", "MEMBERS_CHANGED")
    said = [e["data"]["text"] for e in receiver.events(conversation_id) if e["eventType"] == "MESSAGE" and not e["data"]["isEcho"]]
    assert said == ["Hello, this is Ada 1. How can I help?"]  # the script's answer never came


async def test_the_live_stream_names_the_conversations_that_changed(start, client_for) -> None:
    running = await start(**HOLD)
    api = client_for(running)
    await v2_client(api, running)
    changes: list[dict[str, Any]] = []

    async def listen() -> None:
        async with httpx.AsyncClient(base_url=running.url, timeout=5) as client:
            async with client.stream("GET", "/_sandbox/live") as stream:
                assert stream.headers["content-type"] == "text/event-stream"
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        changes.append(json.loads(line[6:]))

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    conversation_id, _, _ = await v2_conversation(api, running, "ref-live")
    deadline = time.monotonic() + 5
    while not any(conversation_id in change["conversations"] for change in changes) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert any(conversation_id in change["conversations"] for change in changes)

    # Stopping the sandbox ends the stream at once rather than waiting for it.
    started = time.monotonic()
    await running.stop()
    await asyncio.wait_for(listener, 5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("generation", ["chat-api-v2", "chat-gateway-v1"])
async def test_timeline_shows_each_retry_of_a_webhook(start, client_for, receiver: Receiver, generation: str) -> None:
    failed: set[str] = set()

    def answer(event: dict, headers: dict[str, str]) -> int:
        if event.get("eventType") == "QUEUED" and headers["x-8x8-event-id"] not in failed:
            failed.add(headers["x-8x8-event-id"])
            return 503
        return 200

    receiver.answer = answer
    running = await start(**HOLD)
    api = client_for(running)
    if generation == "chat-api-v2":
        conversation_id, _, _ = await v2_conversation(api, running, "ref-retry")
    else:
        channel_id = running.info["chat-gateway-v1"]["channels"][0]
        body = {"channelId": channel_id, "user": {"name": "Cy"}}
        created = await api.post(f"{GATEWAY_BASE}/conversations", headers=gateway_headers(running), json=body)
        conversation_id = created.json()["conversationId"]
    await receiver.wait_for_types(conversation_id, "QUEUED")
    queued = next(e for e in (await timeline(api, conversation_id))["timeline"] if e["eventType"] == "QUEUED")
    assert (queued["attempts"], queued["answers"], queued["outcome"]) == (2, [503, 200], "delivered")
    assert queued["event"]["conversationId"] == conversation_id
