"""Faults and latency on demand: deterministic for a seed, reported in the request log."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx

from tests.sandbox.support import GATEWAY_BASE, Receiver, gateway_headers, v2_client

RATES = {
    "rate_429": 0.05,
    "rate_429_retry_after": 0.03,
    "rate_500": 0.04,
    "rate_503": 0.04,
    "rate_timeout": 0.02,
    "rate_drop": 0.02,
    "retry_after_s": 3,
    "timeout_s": 1.0,
}


async def observe(start, client_for, seed: int) -> tuple[list[str], list[dict]]:
    """What a client sees for 100 calls with 20 % faults, and the sandbox's request log."""
    running = await start(seed=seed)
    api = client_for(running, timeout=httpx.Timeout(0.3))
    assert (await api.put("/_sandbox/faults", json={"default": RATES})).status_code == 200
    headers = gateway_headers(running)
    seen = []
    for _ in range(100):
        try:
            response = await api.get(f"{GATEWAY_BASE}/conversations", headers=headers)
        except httpx.TimeoutException:
            seen.append("timeout")
        except httpx.TransportError:
            seen.append("drop")
        else:
            retry_after = response.headers.get("Retry-After")
            seen.append(f"{response.status_code}" + (f" retry-after {retry_after}" if retry_after else ""))
    log = (await api.get("/_sandbox/requests")).json()
    return seen, log


async def test_fault_mix_is_deterministic_and_logged(start, client_for) -> None:
    first, log = await observe(start, client_for, seed=6)
    second, _ = await observe(start, client_for, seed=6)
    assert first == second
    other, _ = await observe(start, client_for, seed=11)
    assert other != first

    mix = collections.Counter(first)
    assert set(mix) == {"200", "429", "429 retry-after 3", "500", "503", "timeout", "drop"}
    assert 65 <= mix["200"] <= 95

    assert len(log) == 100
    expected = {"200": None, "429": "429", "429 retry-after 3": "429_retry_after", "500": "500", "503": "503", "timeout": "timeout", "drop": "drop"}
    assert [entry["fault"] for entry in log] == [expected[outcome] for outcome in first]
    for entry, outcome in zip(log, first):
        assert entry["status"] == (int(outcome[:3]) if outcome[0].isdigit() else None)
        assert entry["method"] == "GET" and entry["path"] == f"{GATEWAY_BASE}/conversations"
        assert entry["operation"] == "getcctransactions-1"


async def test_faults_spare_token_jwk_and_admin_unless_named(start, client_for) -> None:
    running = await start()
    api = client_for(running)
    everything = {"rate_500": 1.0}
    await api.put("/_sandbox/faults", json={"default": everything})
    base, auth = await v2_client(api, running)  # the token endpoint still works
    assert (await api.get(f"/vcc/us/chat/v2/jwk/{running.info['kid']}/public")).status_code == 200
    assert (await api.get("/_sandbox/info")).status_code == 200
    assert (await api.get(f"{base}/conversations", headers=auth)).status_code == 500

    await api.put("/_sandbox/faults", json={"operations": {"createaccesstoken": everything}})
    token = await api.post("/oauth/v2/token", auth=("sandbox-api-key", "sandbox-api-secret"), data={"grant_type": "client_credentials"})
    assert token.status_code == 500
    assert (await api.get(f"{base}/conversations", headers=auth)).status_code == 200

    bad = await api.put("/_sandbox/faults", json={"default": {"rate_500": 2}})
    assert bad.status_code == 400


async def test_latency_per_operation(start, client_for) -> None:
    running = await start(seed=1)
    api = client_for(running)
    await api.put("/_sandbox/faults", json={"operations": {"getchatapichannels-1": {"latency_ms": 150, "latency_jitter_ms": 20}}})
    headers = gateway_headers(running)
    began = time.perf_counter()
    assert (await api.get(f"{GATEWAY_BASE}/channels", headers=headers)).status_code == 200
    assert 0.12 <= time.perf_counter() - began < 1.0
    began = time.perf_counter()
    assert (await api.get(f"{GATEWAY_BASE}/webhooks", headers=headers)).status_code == 200
    assert time.perf_counter() - began < 0.1


async def test_drop_after_takes_effect_without_an_answer(start, client_for) -> None:
    running = await start()
    api = client_for(running)
    await api.put("/_sandbox/faults", json={"operations": {"createcctransaction": {"rate_drop_after": 1.0}}})
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]
    try:
        await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {"connectorRef": "lost-1"}})
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the connection should have been closed without an answer")
    # The outcome is unknown to the client, but the conversation exists: find it by its reference.
    found = (await api.get(f"{base}/conversations", headers=auth, params={"customer.connectorRef": "lost-1"})).json()
    assert len(found["data"]) == 1
    entry = [e for e in (await api.get("/_sandbox/requests")).json() if e["operation"] == "createcctransaction"][0]
    assert entry["fault"] == "drop_after" and entry["status"] is None and entry["appliedStatus"] == 202


async def test_delivery_faults_fail_attempts_and_send_events_twice(start, client_for, receiver: Receiver) -> None:
    running = await start(seed=5, agent_accept_delay_s=60)
    api = client_for(running)
    faults = {"delivery": {"rate_fail": 0.5, "rate_duplicate": 0.5}}
    applied = (await api.put("/_sandbox/faults", json=faults)).json()
    assert applied["delivery"] == {"latency_ms": 0.0, "rate_fail": 0.5, "rate_duplicate": 0.5}
    assert (await api.get("/_sandbox/faults")).json() == applied
    base, auth = await v2_client(api, running)
    channel_id = running.info["chat-api-v2"]["channels"][0]
    ids = []
    for n in range(6):
        created = await api.post(f"{base}/conversations", headers=auth, json={"channelId": channel_id, "customer": {"n": str(n)}})
        ids.append(created.json()["conversationId"])
    for conversation_id in ids:
        await receiver.wait_for_types(conversation_id, "QUEUED")
    await asyncio.sleep(0.3)  # let the duplicates come in

    log = [d for d in (await api.get("/_sandbox/deliveries")).json() if d["conversationId"] in ids]
    not_made = [d for d in log if d["error"] == "sandbox fault: attempt not made"]
    assert not_made and all(d["status"] is None and d["outcome"] == "failed" for d in not_made)
    posts = [r for r in receiver.received if r.event.get("conversationId") in ids]
    by_event = collections.Counter(r.headers["x-8x8-event-id"] for r in posts)
    assert len(by_event) == len(ids)  # one QUEUED each, some of them received twice
    twice = [event_id for event_id, count in by_event.items() if count == 2]
    assert twice and all(count <= 2 for count in by_event.values())
    for event_id in twice:
        retries = [int(r.headers["x-8x8-retry"]) for r in posts if r.headers["x-8x8-event-id"] == event_id]
        assert retries[1] == retries[0] + 1  # the same event, as a retry

    assert (await api.put("/_sandbox/faults", json={"delivery": {"rate_fail": 0.7, "rate_duplicate": 0.5}})).status_code == 400
    assert (await api.put("/_sandbox/faults", json={"delivery": {"rate_lost": 0.1}})).status_code == 400
