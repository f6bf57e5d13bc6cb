"""Webhooks and channels of both generations: create (with WEB_HOOK_VERIFY), read, update, delete, verify."""

from __future__ import annotations

from tests.sandbox.support import GATEWAY_BASE, Receiver, gateway_headers, v2_client


async def test_v2_webhooks_and_channels(api, sandbox, receiver: Receiver) -> None:
    base, auth = await v2_client(api, sandbox)
    created = await api.post(f"{base}/web-hooks", headers=auth, json={"name": "mine", "uri": receiver.url, "notificationVersion": "v2.0"})
    assert created.status_code == 200
    webhook = created.json()
    assert webhook["version"] == "v2.0" and webhook["uri"] == receiver.url
    await receiver.wait_for(lambda events: sum(e["eventType"] == "WEB_HOOK_VERIFY" for e in events) == 3)

    listed = (await api.get(f"{base}/web-hooks", headers=auth, params={"size": 1, "page": 1})).json()
    assert listed["data"] == [webhook] and listed["page"] == {"pageSize": 1, "pageIndex": 1, "elementCount": 2, "pageCount": 2}
    assert (await api.get(f"{base}/web-hooks/{webhook['id']}", headers=auth)).json() == webhook
    updated = await api.put(f"{base}/web-hooks/{webhook['id']}", headers=auth, json={"name": "renamed", "uri": receiver.url, "notificationVersion": "v1.0"})
    assert updated.json()["name"] == "renamed" and updated.json()["version"] == "v1.0"

    channel = {"name": "c", "webHookId": webhook["id"], "routingOptions": {"type": "queue", "id": "55"}}
    made = await api.post(f"{base}/channels", headers=auth, json=channel)
    assert made.status_code == 200 and made.json()["routingOptions"] == {"type": "queue", "id": "55"}
    channel_id = made.json()["id"]
    assert (await api.get(f"{base}/channels/{channel_id}", headers=auth)).json()["webHookId"] == webhook["id"]
    changed = await api.put(f"{base}/channels/{channel_id}", headers=auth, json={**channel, "name": "c2"})
    assert changed.json()["name"] == "c2"
    assert len((await api.get(f"{base}/channels", headers=auth)).json()["data"]) == 2
    unknown_webhook = await api.post(f"{base}/channels", headers=auth, json={**channel, "webHookId": "nope"})
    assert unknown_webhook.status_code == 400 and unknown_webhook.json()["validations"]

    assert (await api.post(f"{base}/web-hooks/verify", headers=auth, json={"version": "v2.0", "uri": receiver.url})).status_code == 204
    unreachable = await api.post(f"{base}/web-hooks/verify", headers=auth, json={"version": "v2.0", "uri": "http://127.0.0.1:9/x"})
    assert unreachable.status_code == 400

    assert (await api.delete(f"{base}/channels/{channel_id}", headers=auth)).status_code == 204
    assert (await api.delete(f"{base}/web-hooks/{webhook['id']}", headers=auth)).status_code == 204
    assert (await api.get(f"{base}/web-hooks/{webhook['id']}", headers=auth)).status_code == 404


async def test_gateway_webhooks_and_channels(api, sandbox, receiver: Receiver) -> None:
    headers = gateway_headers(sandbox)
    created = await api.post(f"{GATEWAY_BASE}/webhooks", headers=headers, json={"name": "mine", "uri": receiver.url, "notificationVersion": "Chat Gateway v1.0"})
    assert created.status_code == 200 and created.headers["content-type"].startswith("application/hal+json")
    webhook = created.json()
    listed = (await api.get(f"{GATEWAY_BASE}/webhooks", headers=headers)).json()
    assert webhook in listed["_embedded"]["webhooks"] and listed["page"]["totalElements"] == 2
    assert (await api.get(f"{GATEWAY_BASE}/webhooks/{webhook['id']}", headers=headers)).json() == webhook
    updated = await api.put(f"{GATEWAY_BASE}/webhooks/{webhook['id']}", headers=headers, json={"name": "renamed", "uri": receiver.url, "notificationVersion": "Chat Gateway v1.0"})
    assert updated.json()["name"] == "renamed"
    wrong_version = await api.post(f"{GATEWAY_BASE}/webhooks", headers=headers, json={"name": "x", "uri": receiver.url, "notificationVersion": "v2.0"})
    assert wrong_version.status_code == 400

    channel = {"name": "c", "type": "ChatAPI", "webHookId": webhook["id"], "routingOptions": {"type": "queue", "id": "55"}}
    made = await api.post(f"{GATEWAY_BASE}/channels", headers=headers, json=channel)
    channel_id = made.json()["id"]
    assert made.json()["type"] == "ChatAPI"
    assert (await api.get(f"{GATEWAY_BASE}/channels/{channel_id}", headers=headers)).json()["name"] == "c"
    assert (await api.put(f"{GATEWAY_BASE}/channels/{channel_id}", headers=headers, json={**channel, "name": "c2"})).json()["name"] == "c2"
    assert (await api.get(f"{GATEWAY_BASE}/channels", headers=headers)).json()["page"]["totalElements"] == 2
    forbidden_shape = await api.post(f"{GATEWAY_BASE}/channels", headers=headers, json={**channel, "webHookId": "nope"})
    assert forbidden_shape.status_code == 400 and forbidden_shape.json()["errors"][0]["code"] == "invalid_webhook"

    verify = await api.post(f"{GATEWAY_BASE}/webhooks/verify", headers=headers, json={"version": "Chat Gateway v1.0", "uri": receiver.url})
    assert verify.status_code == 204
    assert receiver.events()[-1]["notificationVersion"] == "Chat Gateway v1.0"

    assert (await api.delete(f"{GATEWAY_BASE}/channels/{channel_id}", headers=headers)).status_code == 204
    assert (await api.delete(f"{GATEWAY_BASE}/webhooks/{webhook['id']}", headers=headers)).status_code == 204
    assert (await api.delete(f"{GATEWAY_BASE}/webhooks/{webhook['id']}", headers=headers)).status_code == 404
