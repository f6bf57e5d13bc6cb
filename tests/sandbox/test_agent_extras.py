"""The scripted agents' extras: on Chat Gateway they send a read receipt before answering and, as often as
configured, a file and a card with the answer; Chat API v2 has none of these, so its agents only type and answer."""

from __future__ import annotations

import httpx

from tests.sandbox.support import GATEWAY_BASE, Receiver, gateway_headers, v2_client


async def test_gateway_agents_read_type_and_answer_with_a_file_and_a_card(start, client_for, receiver: Receiver) -> None:
    running = await start(exchanges=0, agent_extras=1.0)
    api = client_for(running)
    headers = gateway_headers(running)
    channel_id = running.info["chat-gateway-v1"]["channels"][0]
    created = await api.post(f"{GATEWAY_BASE}/conversations", headers=headers, json={"channelId": channel_id, "user": {"name": "Bo"}})
    conversation_id = created.json()["conversationId"]
    await receiver.wait_for_types(conversation_id, "MEMBERS_CHANGED", "MESSAGE")
    await api.post(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers, json={"authorType": "user", "text": "hi"})

    events = await receiver.wait_for_types(conversation_id, "MESSAGE", "ACTIVITY", "ACTIVITY", "ACTIVITY", "MESSAGE")
    after = events[[e["eventType"] for e in events].index("MESSAGE") + 2 :]  # past the greeting and the echo
    receipt, typing, stopped, answer = (e["data"] for e in after[:4])
    agent_id = answer["sender"]["id"]
    assert receipt["name"] == "read-receipts" and receipt["value"]["users"] == [agent_id]
    assert (typing["name"], stopped["name"]) == ("typing", "typing")
    (attachment,) = answer["attachments"]
    assert attachment["fileName"].startswith("notes-") and attachment["type"] == "text/plain"
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(attachment["preSignedUrl"])).text.startswith("Notes of ")
    (card,) = answer["cards"]
    assert card["contentType"] == "application/8x8.quick.replies" and card["content"]["options"]
    # The message as the API lists it carries them too (what a transcript reads back).
    listed = (await api.get(f"{GATEWAY_BASE}/conversations/{conversation_id}/messages", headers=headers)).json()
    assert any(m["attachments"] == [attachment] and m["cards"] == [card] for m in listed["_embedded"]["messages"])


async def test_without_extras_and_on_chat_api_v2_agents_only_type_and_answer(start, client_for, receiver: Receiver) -> None:
    for extras, generation in ((0.0, "chat-gateway-v1"), (1.0, "chat-api-v2")):
        running = await start(exchanges=0, agent_extras=extras)
        api = client_for(running)
        channel_id = running.info[generation]["channels"][0]
        if generation == "chat-api-v2":
            base, headers = await v2_client(api, running)
            body = {"channelId": channel_id, "customer": {"name": "Bo"}}
        else:
            base, headers = GATEWAY_BASE, gateway_headers(running)
            body = {"channelId": channel_id, "user": {"name": "Bo"}}
        conversation_id = (await api.post(f"{base}/conversations", headers=headers, json=body)).json()["conversationId"]
        greeting = "TEXT" if generation == "chat-api-v2" else "MESSAGE"
        await receiver.wait_for_types(conversation_id, greeting)
        await api.post(f"{base}/conversations/{conversation_id}/messages", headers=headers, json={"authorType": "user", "text": "hi"})
        events = await receiver.wait_for_types(conversation_id, greeting, greeting)
        assert not any(e["eventType"] == "ACTIVITY" and e["data"]["name"] == "read-receipts" for e in events)
        assert not any(e.get("data", {}).get("attachments") or e.get("data", {}).get("cards") for e in events)
