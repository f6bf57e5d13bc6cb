"""A whole conversation of each generation, observed through signed webhooks."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.sandbox.signatures import verify
from tests.sandbox.support import GATEWAY_BASE, Receiver, gateway_headers, v2_client

EXPECTED_HEADERS = {
    "x-8x8-signature",
    "x-8x8-tenant-id",
    "x-8x8-customer-id",
    "x-8x8-event-id",
    "x-8x8-transmission-time",
    "x-8x8-retry",
}


def check_deliveries(receiver: Receiver, jwk: dict, tenant: str, customer: str) -> None:
    """Every POST carries all x-8x8-* headers and a valid signature; event ids are fresh per event."""
    now_ms = time.time() * 1000
    event_ids = set()
    for received in receiver.received:
        headers = received.headers
        assert EXPECTED_HEADERS <= set(headers)
        assert headers["x-8x8-tenant-id"] == tenant
        assert headers["x-8x8-customer-id"] == customer
        assert headers["x-8x8-retry"] == "0"
        assert now_ms - 60_000 < int(headers["x-8x8-transmission-time"]) <= now_ms
        assert headers["content-type"].startswith("application/json")
        uuid.UUID(headers["x-8x8-event-id"])
        event_ids.add(headers["x-8x8-event-id"])
        verify(headers, received.body, jwk)
    assert len(event_ids) == len(receiver.received)


def types(events: list[dict]) -> list[str]:
    return [e["eventType"] for e in events]


async def test_v2_conversation(start, client_for, receiver: Receiver) -> None:
    running = await start(exchanges=1, transfer_probability=1.0, agents=3)
    api = client_for(running)
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]

    created = await api.post(
        f"{base}/conversations",
        headers=auth,
        json={
            "channelId": channel_id,
            "customer": {"name": "Ann", "email": "ann@example.com", "connectorRef": "ref-1"},
            "history": {"messages": [{"text": "from the bot", "type": "bot"}]},
        },
    )
    assert created.status_code == 202
    conversation_id = created.json()["conversationId"]
    assert isinstance(created.json()["timestamp"], int)

    events = await receiver.wait_for_types(conversation_id, "QUEUED", "AGENT_JOINED", "TEXT", "TEXT")
    # The history ends with a bot message: the agent greets, then answers it (exchange 1 of 1) and
    # transfers (probability 1): the next agent joins.
    events = await receiver.wait_for_types(conversation_id, "TRANSFER", "AGENT_LEFT", "AGENT_JOINED", "TEXT")
    assert types(events) == ["QUEUED", "AGENT_JOINED", "TEXT", "TEXT", "TRANSFER", "AGENT_LEFT", "AGENT_JOINED", "TEXT"]
    queued, joined, greeting = events[0], events[1], events[2]
    assert queued == {
        "eventType": "QUEUED",
        "messageType": "SYSTEM",
        "conversationId": conversation_id,
        "timestamp": queued["timestamp"],
        "queueId": "101",
        "queueName": "Queue 101",
    }
    assert set(joined) == {"eventType", "messageType", "conversationId", "timestamp", "agentId", "agentName"}
    assert greeting["messageType"] == "AGENT" and greeting["agentId"] == joined["agentId"] and greeting["message"]
    assert events[5]["agentId"] == joined["agentId"]
    assert events[6]["agentId"] != joined["agentId"]

    sent = await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "hello", "authorType": "user"})
    assert sent.status_code == 202 and sent.content == b""
    # The second agent answers and leaves: no second transfer in the same interaction.
    events = await receiver.wait_for(lambda e: types([x for x in e if x.get("conversationId") == conversation_id])[-2:] == ["TEXT", "AGENT_LEFT"])
    assert types(receiver.events(conversation_id))[8:] == ["TEXT", "AGENT_LEFT"]

    # A customer message after the agent left opens a new interaction, queued again.
    await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "one more thing"})
    events = await receiver.wait_for_types(conversation_id, "AGENT_LEFT", "QUEUED", "AGENT_JOINED", "TEXT", "TEXT")
    conversation = (await api.get(f"{base}/conversations/{conversation_id}", headers=auth)).json()
    assert len(conversation["interactions"]) == 2
    assert "endTime" in conversation["interactions"][0] and conversation["customer"]["connectorRef"] == "ref-1"

    messages = (await api.get(f"{base}/conversations/{conversation_id}/messages", headers=auth)).json()
    texts = [(m["authorType"], m["originalText"]) for m in messages["messages"]]
    assert texts[0] == ("bot", "from the bot")
    assert ("user", "hello") in texts and ("user", "one more thing") in texts
    second = conversation["interactions"][1]["id"]
    only_second = (await api.get(f"{base}/conversations/{conversation_id}/messages", headers=auth, params={"interaction-id": second})).json()
    assert [m["originalText"] for m in only_second["messages"]][0] == "one more thing"

    found = (await api.get(f"{base}/conversations", headers=auth, params={"customer.connectorRef": "ref-1"})).json()
    assert [c["id"] for c in found["data"]] == [conversation_id]
    assert (await api.get(f"{base}/conversations", headers=auth, params={"customer.connectorRef": "nope"})).json()["data"] == []

    participants = (await api.get(f"{base}/conversations/{conversation_id}/participants", headers=auth)).json()["participants"]
    assert {p["type"] for p in participants} >= {"user", "bot", "agent"}

    left = await api.delete(f"{base}/conversations/{conversation_id}/participants/customer", headers=auth)
    assert left.status_code == 204
    assert (await api.get(f"{base}/conversations/{conversation_id}", headers=auth)).json()["status"] == "deleted"
    assert all(not agent["busy"] for agent in running.info["agents"])
    after = await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "hello?"})
    assert after.status_code == 400

    jwk = (await api.get(f"/vcc/us/chat/v2/jwk/{running.info['kid']}/public")).json()
    assert receiver.events()[0] == {"eventType": "WEB_HOOK_VERIFY", "messageType": "SYSTEM", "timestamp": receiver.events()[0]["timestamp"], "notificationVersion": "v2.0"}
    check_deliveries(receiver, jwk, "sandbox-tenant", "sandbox-customer")


async def test_gateway_conversation(start, client_for, receiver: Receiver) -> None:
    running = await start(exchanges=1, transfer_probability=1.0, agents=2)
    api = client_for(running)
    headers = gateway_headers(running)
    channel_id = running.info["chat-gateway-v1"]["channels"][0]

    created = await api.post(
        f"{GATEWAY_BASE}/conversations",
        headers=headers,
        json={
            "channelId": channel_id,
            "user": {"name": "Bo", "userId": "u-1", "additionalProperties": [{"key": "connectorRef", "value": "ref-2"}]},
        },
    )
    assert created.status_code == 202
    conversation_id = created.json()["conversationId"]
    assert created.json()["createdAt"].endswith("Z")
    assert created.headers["content-type"].startswith("application/hal+json")

    events = await receiver.wait_for_types(conversation_id, "CONVERSATION_UPDATE", "QUEUED", "MEMBERS_CHANGED", "CONVERSATION_UPDATE", "MESSAGE")
    assert types(events) == ["CONVERSATION_UPDATE", "QUEUED", "MEMBERS_CHANGED", "CONVERSATION_UPDATE", "MESSAGE"]
    assert events[0]["data"]["state"] == "created" and events[0]["data"]["user"]["userId"] == "u-1"
    assert events[1]["data"] == {"queueId": "101", "queueName": "Queue 101"}
    first_agent = events[2]["data"]["id"]
    assert events[2]["data"] == {"memberType": "agent", "change": "joined", "id": first_agent}
    assert events[3]["data"]["state"] == "active" and events[3]["data"]["assignment"]["type"] == "agent"
    greeting = events[4]["data"]
    assert greeting["isEcho"] is False and greeting["sender"] == {"id": first_agent, "type": "agent"}

    sent = await api.post(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers, json={"authorType": "user", "text": "hi"})
    assert sent.status_code == 202
    events = await receiver.wait_for_types(conversation_id, "MESSAGE", "MESSAGE", "ACTIVITY", "ACTIVITY", "MESSAGE", "TRANSFER", "MEMBERS_CHANGED", "MEMBERS_CHANGED", "CONVERSATION_UPDATE", "MESSAGE")
    tail = events[5:]
    assert types(tail) == [
        "MESSAGE",  # the echo of the user's own message
        "ACTIVITY",
        "ACTIVITY",
        "MESSAGE",
        "TRANSFER",
        "MEMBERS_CHANGED",
        "MEMBERS_CHANGED",
        "CONVERSATION_UPDATE",
        "MESSAGE",
    ]
    echo = tail[0]["data"]
    assert echo["isEcho"] is True and echo["sender"] == {"id": "u-1", "type": "user"} and echo["text"] == "hi"
    activities = [e["data"] for e in tail if e["eventType"] == "ACTIVITY"]
    assert activities[:2] == [{"name": "typing", "value": {"users": [first_agent]}}, {"name": "typing", "value": {"users": []}}]
    members = [e["data"] for e in tail if e["eventType"] == "MEMBERS_CHANGED"]
    assert members[0] == {"memberType": "agent", "change": "left", "id": first_agent}
    assert members[1]["change"] == "joined" and members[1]["id"] != first_agent

    listed = (await api.get(f"{GATEWAY_BASE}/conversations", headers=headers, params={"filter": "user.connectorRef==ref-2"})).json()
    assert [c["id"] for c in listed["_embedded"]["conversations"]] == [conversation_id]
    assert listed["page"]["totalElements"] == 1
    messages = (await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers, params={"sort": "createdAt:asc"})).json()
    assert messages["_embedded"]["messages"][1]["text"] == "hi"
    one = messages["_embedded"]["messages"][0]
    assert (await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages/{one['id']}", headers=headers)).json()["id"] == one["id"]
    interactions = (await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}/interactions", headers=headers)).json()
    assert len(interactions["_embedded"]["interactions"]) == 1
    participants = (await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}/participants", headers=headers)).json()
    assert {p["type"] for p in participants["_embedded"]["participants"]} == {"user", "agent"}

    left = await api.patch(f"{GATEWAY_BASE}/conversations/{conversation_id}/participants/user", headers=headers, json={"removed": True})
    assert left.status_code == 204
    await receiver.wait_for(lambda e: e[-1].get("data", {}).get("state") == "idle")
    last = receiver.events(conversation_id)[-2:]
    assert last[0]["data"] == {"memberType": "user", "change": "left", "id": "u-1"}
    assert last[1]["eventType"] == "CONVERSATION_UPDATE" and last[1]["data"]["state"] == "idle"
    state = (await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}", headers=headers)).json()["state"]
    assert state == "idle"

    jwk = (await api.get(f"{GATEWAY_BASE}/jwk/{running.info['kid']}/public")).json()
    assert receiver.events()[1]["notificationVersion"] == "Chat Gateway v1.0"
    check_deliveries(receiver, jwk, "sandbox-tenant", "sandbox-customer")


async def run_script(start, client_for, receiver: Receiver, seed: int) -> list[list[tuple[str, str]]]:
    """Three conversations, one customer message each; what each one's webhooks said."""
    receiver.received.clear()
    running = await start(seed=seed, exchanges=1, transfer_probability=0.5, agents=6)
    api = client_for(running)
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]
    ids = []
    for n in range(3):
        created = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {"n": str(n)}})
        ids.append(created.json()["conversationId"])
    for conversation_id in ids:
        await receiver.wait_for_types(conversation_id, "AGENT_JOINED", "TEXT")
        await api.post(f"{base}/conversations/{conversation_id}/messages", headers=auth, json={"text": "help"})
    for conversation_id in ids:
        await receiver.wait_for(lambda events: bool(events) and any(
            e["eventType"] == "AGENT_LEFT" and e.get("conversationId") == conversation_id for e in events
        ) and receiver.events(conversation_id)[-1]["eventType"] in ("AGENT_LEFT", "TEXT"))
    await asyncio.sleep(0.2)  # let any second agent finish greeting
    await running.stop()
    return [[(e["eventType"], e.get("message", e.get("agentName", ""))) for e in receiver.events(c)] for c in ids]


async def test_agents_are_deterministic_for_a_seed(start, client_for, receiver: Receiver) -> None:
    first = await run_script(start, client_for, receiver, seed=42)
    again = await run_script(start, client_for, receiver, seed=42)
    assert first == again
    others = [await run_script(start, client_for, receiver, seed=seed) for seed in (1, 2)]
    assert any(other != first for other in others)
