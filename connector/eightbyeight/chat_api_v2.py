"""Chat API v2: region in the path, OAuth client-credentials bearer token, flat customer properties."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from connector.eightbyeight.auth import OAuthToken
from connector.eightbyeight.base import (
    ATTACHMENTS,
    CARDS,
    CONNECTOR_REF,
    MAX_PROPERTIES,
    Card,
    File,
    InvalidCommand,
    NewConversation,
    PlatformError,
    ReadBack,
)
from connector.eightbyeight.http import ApiClient, conversation_id_of, items_of, json_body
from connector.eightbyeight.provisioning import Provisioning, segment
from connector.eightbyeight.transport import Reply
from connector.normalise import epoch_ms, text

__all__ = ["ChatApiV2"]

GENERATION = "chat-api-v2"
NOTIFICATION_VERSION = "v2.0"
_FIND_PAGE_SIZE = 20
_PAGE_SIZE = 100


class ChatApiV2(Provisioning):
    """`{base}/vcc/{region}/chat/v2/tenant/{tenant}`; every request carries `Authorization: Bearer`."""

    generation = GENERATION
    webhooks_path = "/web-hooks"
    notification_version = NOTIFICATION_VERSION

    def __init__(self, api: ApiClient, token: OAuthToken, base_url: str, region: str, tenant: str) -> None:
        self._api = api
        self._token = token
        self._root = f"{base_url.rstrip('/')}/vcc/{region}/chat/v2/tenant/{quote(tenant, safe='')}"

    def check(self, conversation: NewConversation) -> None:
        if conversation.assignment is not None:
            raise InvalidCommand("an assignment is only supported by Chat Gateway (this deployment uses Chat API v2)")
        conversation.check()
        create_body(conversation)

    async def create(self, conversation: NewConversation) -> str:
        self.check(conversation)
        response = await self._request("create", "POST", "/conversations", json=create_body(conversation))
        return conversation_id_of(response, "create")

    async def send(
        self, conversation_id: str, text: str, author_type: str, *, files: Sequence[File] = (), cards: Sequence[Card] = ()
    ) -> None:
        if files or cards:
            raise self.unsupported(ATTACHMENTS if files else CARDS)
        await self._request(
            "send", "POST", f"/conversations/{segment(conversation_id)}/messages", json={"text": text, "authorType": author_type}
        )

    async def end(self, conversation_id: str) -> None:
        await self._request("end", "DELETE", f"/conversations/{segment(conversation_id)}/participants/customer")

    async def find_by_ref(self, ref: str) -> str | None:
        params = {f"customer.{CONNECTOR_REF}": ref, "status": "all", "order": "desc", "size": _FIND_PAGE_SIZE}
        response = await self._request("find", "GET", "/conversations", params=params)
        for item in items_of(json_body(response, "find").get("data"), "find", response, "data"):
            # Checked here too, in case a filter is ignored.
            customer = item.get("customer")
            if isinstance(customer, dict) and customer.get(CONNECTOR_REF) == ref and text(item.get("id")):
                return str(item["id"])
        return None

    async def get(self, conversation_id: str) -> dict[str, Any]:
        return json_body(await self._request("get", "GET", f"/conversations/{segment(conversation_id)}"), "get")

    async def read_back(self, conversation_id: str) -> ReadBack:
        path = f"/conversations/{segment(conversation_id)}"
        conversation = json_body(await self._request("get", "GET", path), "get")
        messages = await self.messages(conversation_id)
        answer = await self._request("participants", "GET", f"{path}/participants")
        # Spec flaw: participants are declared as one object; 8x8 answers a list (bare or under a key).
        participants = json_body(answer, "participants", (dict, list))
        if isinstance(participants, dict):
            participants = participants.get("participants") or participants.get("data") or [participants]
        participants = items_of(participants, "participants", answer, "participants")
        return ReadBack(
            status=text(conversation.get("status")),
            conversation=conversation,
            messages=messages,
            participants=[_participant(p) for p in participants],
            interactions=[],
        )

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        answer = await self._request("messages", "GET", f"/conversations/{segment(conversation_id)}/messages")
        return [_message(m) for m in items_of(json_body(answer, "messages").get("messages"), "messages", answer, "messages")]

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _list(self, name: str, path: str) -> list[dict[str, Any]]:
        """Every item of a paged `data` list (`page.pageCount` pages)."""
        items: list[dict[str, Any]] = []
        page = 0
        while True:
            answer = await self._request(name, "GET", path, params={"size": _PAGE_SIZE, "page": page})
            body = json_body(answer, name)
            items.extend(items_of(body.get("data"), name, answer, "data"))
            page += 1
            count = body.get("page", {}).get("pageCount") if isinstance(body.get("page"), dict) else None
            if not isinstance(count, (int, float)) or isinstance(count, bool) or page >= count:
                return items

    async def _request(self, operation: str, method: str, path: str, **kwargs: Any) -> Reply:
        """One request with the current token; a 401 replaces the token once and sends again."""
        token = await self._token.token()
        try:
            return await self._api.request(operation, method, self._root + path, headers=_bearer(token), **kwargs)
        except PlatformError as exc:
            if exc.http_status != 401:
                raise
            self._token.refused(token)
        token = await self._token.token()
        return await self._api.request(operation, method, self._root + path, headers=_bearer(token), **kwargs)


def create_body(conversation: NewConversation) -> dict[str, Any]:
    """The v2 create request: predefined customer fields, the free-form properties, connectorRef."""
    customer: dict[str, Any] = {"name": conversation.name}
    for key, value in (
        ("customerId", conversation.customer_id),
        ("email", conversation.email),
        ("phone", conversation.phone),  # not predefined in v2: travels as a free-form property
        ("company", conversation.company),
        ("caseId", conversation.case_id),
        ("language", conversation.language),
    ):
        if value is not None:
            customer[key] = value
    customer.update({k: v for k, v in conversation.stamped_properties().items() if k not in customer})
    if len(customer) > MAX_PROPERTIES:
        raise InvalidCommand(f"{len(customer)} customer fields and properties in all; Chat API v2 allows {MAX_PROPERTIES}")
    body: dict[str, Any] = {"channelId": conversation.channel_id, "customer": customer}
    if conversation.history:
        body["history"] = {"messages": [{"text": text, "type": author} for text, author in conversation.history]}
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": text(message.get("id") or message.get("messageId")),
        "author_type": text(message.get("authorType")),
        "author_id": text(message.get("participantId") or message.get("senderId")),
        "author_name": text(message.get("senderName")),
        "text": text(message.get("originalText", message.get("text"))),
        "created_at": epoch_ms(message.get("timestamp")),
        "raw_json": json.dumps(message, separators=(",", ":")),
    }


def _participant(participant: dict[str, Any]) -> dict[str, Any]:
    return {
        "participant_id": text(participant.get("id")),
        "participant_type": text(participant.get("type")),
        "name": text(participant.get("name")),
        "raw_json": json.dumps(participant, separators=(",", ":")),
    }
