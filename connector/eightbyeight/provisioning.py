"""Web-hooks and channels: the set-up calls both generations make alike, each on its own paths.

An adapter says where its web-hooks live, which notification version it asks for, the `type` a new
channel gets (if any), and how it lists a paged collection (`_list`).
"""

from __future__ import annotations

import abc
from typing import Any
from urllib.parse import quote

from connector.eightbyeight.base import Channel, Platform, PlatformError, Webhook
from connector.eightbyeight.http import json_body
from connector.eightbyeight.transport import Reply

__all__ = ["Provisioning", "segment"]


class Provisioning(Platform):
    """`Platform`'s web-hook and channel calls, over the adapter's `_request` and `_list`."""

    webhooks_path: str
    notification_version: str
    channel_type: str | None = None

    @abc.abstractmethod
    async def _request(self, operation: str, method: str, path: str, **kwargs: Any) -> Reply:
        """One request to the adapter's API root, with its authentication."""

    @abc.abstractmethod
    async def _list(self, name: str, path: str) -> list[dict[str, Any]]:
        """Every item of the paged collection `name` at `path`."""

    async def webhooks(self) -> list[Webhook]:
        return [Webhook.of(w) for w in await self._list("webhooks", self.webhooks_path)]

    async def create_webhook(self, name: str, uri: str) -> Webhook:
        # Spec flaw: `notificationVersion` is required but the property is defined as `version`; both are sent.
        version = self.notification_version
        body = {"name": name, "uri": uri, "notificationVersion": version, "version": version}
        answer = await self._request("webhook-create", "POST", self.webhooks_path, json=body)
        return Webhook.of(json_body(answer, "webhook-create"))

    async def verify_webhook(self, webhook: Webhook) -> None:
        body = {"version": webhook.version or self.notification_version, "uri": webhook.uri}
        await self._request("webhook-verify", "POST", f"{self.webhooks_path}/verify", json=body)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._request("webhook-delete", "DELETE", f"{self.webhooks_path}/{segment(webhook_id)}")

    async def channels(self) -> list[Channel]:
        return [Channel.of(c) for c in await self._list("channels", "/channels")]

    async def channel(self, channel_id: str) -> Channel | None:
        try:
            answer = await self._request("channel", "GET", f"/channels/{segment(channel_id)}")
        except PlatformError as exc:
            if exc.http_status == 404:
                return None
            raise
        return Channel.of(json_body(answer, "channel"))

    async def create_channel(self, name: str, webhook_id: str, queue_id: str) -> Channel:
        body: dict[str, Any] = {"name": name, "webHookId": webhook_id, "routingOptions": {"type": "queue", "id": queue_id}}
        if self.channel_type is not None:
            body["type"] = self.channel_type
        answer = await self._request("channel-create", "POST", "/channels", json=body)
        return Channel.of(json_body(answer, "channel-create"))

    async def delete_channel(self, channel_id: str) -> None:
        await self._request("channel-delete", "DELETE", f"/channels/{segment(channel_id)}")


def segment(value: str) -> str:
    """`value` as one path segment (every reserved character escaped)."""
    return quote(value, safe="")
