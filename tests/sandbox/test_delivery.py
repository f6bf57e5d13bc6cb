"""Webhook retries: same event id, retry counted from 0, new transmission time, order kept."""

from __future__ import annotations

import asyncio

from tests.support.env import free_port
from tests.sandbox.signatures import verify
from tests.sandbox.support import Receiver, v2_client


async def test_a_failed_delivery_is_retried_with_the_same_event_id(start, client_for, receiver: Receiver) -> None:
    failed: set[str] = set()

    def answer(event: dict, headers: dict[str, str]) -> int:
        # Fail the first attempt of every conversation event once: 500, then 200.
        if event.get("conversationId") and headers["x-8x8-event-id"] not in failed:
            failed.add(headers["x-8x8-event-id"])
            return 500
        return 200

    receiver.answer = answer
    running = await start(agent_accept_delay_s=0.01, retry_initial_s=0.05)
    api = client_for(running)
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]
    created = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {"name": "Cy"}})
    conversation_id = created.json()["conversationId"]
    await receiver.wait_for_types(conversation_id, "QUEUED", "AGENT_JOINED", "TEXT")

    attempts = [r for r in receiver.received if r.event.get("conversationId") == conversation_id]
    # Each event: attempt 0 answered 500, attempt 1 answered 200, before the next event is tried.
    assert [(r.event["eventType"], r.headers["x-8x8-retry"], r.status) for r in attempts] == [
        ("QUEUED", "0", 500),
        ("QUEUED", "1", 200),
        ("AGENT_JOINED", "0", 500),
        ("AGENT_JOINED", "1", 200),
        ("TEXT", "0", 500),
        ("TEXT", "1", 200),
    ]
    for first, second in zip(attempts[::2], attempts[1::2]):
        assert first.headers["x-8x8-event-id"] == second.headers["x-8x8-event-id"]
        assert first.body == second.body
        assert int(second.headers["x-8x8-transmission-time"]) > int(first.headers["x-8x8-transmission-time"])
        assert first.headers["x-8x8-signature"] != second.headers["x-8x8-signature"]
    jwk = (await api.get(f"/vcc/us/chat/v2/jwk/{running.info['kid']}/public")).json()
    for attempt in attempts:
        verify(attempt.headers, attempt.body, jwk)

    log = [d for d in (await api.get("/_sandbox/deliveries")).json() if d["conversationId"] == conversation_id]
    assert [(d["eventType"], d["retry"], d["status"], d["outcome"]) for d in log[:2]] == [
        ("QUEUED", 0, 500, "failed"),
        ("QUEUED", 1, 200, "delivered"),
    ]


async def test_an_unreachable_webhook_is_retried_until_it_answers(start, client_for) -> None:
    port = free_port()
    running = await start(webhook_url=f"http://127.0.0.1:{port}/hook", agent_accept_delay_s=10)
    api = client_for(running)
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]
    created = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {"name": "Di"}})
    conversation_id = created.json()["conversationId"]

    await asyncio.sleep(0.3)  # the connector is down: connections are refused
    log = [d for d in (await api.get("/_sandbox/deliveries")).json() if d["conversationId"] == conversation_id]
    assert len(log) >= 2 and all(d["status"] is None and "Connect" in d["error"] for d in log)
    assert [d["retry"] for d in log] == list(range(len(log)))
    assert len({d["eventId"] for d in log}) == 1

    receiver = Receiver()  # the connector comes back on the same address
    await receiver.start(port)
    try:
        events = await receiver.wait_for(lambda e: any(x.get("conversationId") == conversation_id for x in e))
        assert [e["eventType"] for e in events if e.get("conversationId")] == ["QUEUED"]
        queued = next(r for r in receiver.received if r.event.get("conversationId"))
        assert queued.headers["x-8x8-event-id"] == log[0]["eventId"] and int(queued.headers["x-8x8-retry"]) >= len(log)
    finally:
        await receiver.stop()
