"""Chat Gateway v1: no region, `x-api-key` and `X-8x8-Tenant` headers, user properties as key/value pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from connector.eightbyeight.base import (
    ATTACHMENTS,
    CARDS,
    CONNECTOR_REF,
    READ_RECEIPTS,
    TYPING,
    Card,
    File,
    NewConversation,
    PlatformError,
    ReadBack,
)
from connector.eightbyeight.http import ApiClient, conversation_id_of, items_of, json_body
from connector.eightbyeight.provisioning import Provisioning, segment
from connector.eightbyeight.transport import Reply
from connector.normalise import attachments, cards, epoch_ms, text

__all__ = ["ChatGatewayV1"]

GENERATION = "chat-gateway-v1"
NOTIFICATION_VERSION = "Chat Gateway v1.0"
_PAGE_SIZE = 100
# Characters that would change the meaning of an RSQL/FIQL filter term.
_FIQL_RESERVED = set(",;()=!<>'\"\\ ")


class ChatGatewayV1(Provisioning):
    """`{base}/chat-gateway/v1`; every request carries the API key and, if set, the tenant."""

    generation = GENERATION
    webhooks_path = "/webhooks"
    notification_version = NOTIFICATION_VERSION
    channel_type = "ChatAPI"
    features = frozenset({ATTACHMENTS, CARDS, TYPING, READ_RECEIPTS})

    def __init__(self, api: ApiClient, headers: dict[str, str], base_url: str, *, find_max_pages: int) -> None:
        self._api = api
        self._headers = headers
        self._root = f"{base_url.rstrip('/')}/chat-gateway/v1"
        self._find_max_pages = find_max_pages

    async def create(self, conversation: NewConversation) -> str:
        self.check(conversation)
        response = await self._request("create", "POST", "/conversations", json=create_body(conversation))
        return conversation_id_of(response, "create")

    async def send(
        self, conversation_id: str, text: str, author_type: str, *, files: Sequence[File] = (), cards: Sequence[Card] = ()
    ) -> None:
        """Upload the files first (each answer's id is what the message refers to), then send the message."""
        path = f"/conversations/{segment(conversation_id)}"
        body: dict[str, Any] = {"authorType": author_type}
        if text or not (files or cards):
            body["text"] = text
        if files:
            body["attachments"] = [{"id": await self._upload(path, file, author_type)} for file in files]
        if cards:
            body["cards"] = [{"contentType": card.content_type, "content": card.content} for card in cards]
        await self._request("send", "POST", f"{path}/messages", json=body)

    async def typing(self, conversation_id: str, author_type: str) -> None:
        await self._request("typing", "POST", f"/conversations/{segment(conversation_id)}/typing", json={"authorType": author_type})

    async def mark_read(self, conversation_id: str, message_id: str, author_type: str) -> None:
        """A read receipt up to the message's own time: 8x8 takes a time (`readAt`), not a message id."""
        path = f"/conversations/{segment(conversation_id)}"
        message = json_body(await self._request("message", "GET", f"{path}/messages/{segment(message_id)}"), "message")
        read_at = epoch_ms(message.get("createdAt"))
        if read_at is None:
            raise PlatformError("message", f"8x8's message {message_id} has no createdAt", code="BAD_RESPONSE")
        await self._request("read-receipt", "POST", f"{path}/read-receipt", json={"authorType": author_type, "readAt": read_at})

    async def end(self, conversation_id: str) -> None:
        await self._request(
            "end", "PATCH", f"/conversations/{segment(conversation_id)}/participants/user", json={"removed": True}
        )

    async def find_by_ref(self, ref: str) -> str | None:
        """List the conversations, newest first, and pick the one whose user carries connectorRef = ref.

        The list takes an RSQL `filter`; it is sent when the ref can be written in one, and every
        page is checked here as well, in case the filter is not applied.
        """
        params: dict[str, Any] = {"size": _PAGE_SIZE, "sort": "id:desc"}
        if not _FIQL_RESERVED & set(ref):
            params["filter"] = f"user.{CONNECTOR_REF}=={ref}"
        for page in range(self._find_max_pages):
            answer = await self._request("find", "GET", "/conversations", params={**params, "page": page})
            body = json_body(answer, "find")
            for item in _embedded(body, "conversations", "find", answer):
                user = item.get("user")
                if isinstance(user, dict) and _user_property(user, CONNECTOR_REF) == ref and text(item.get("id")):
                    return text(item["id"])
            if page + 1 >= _total_pages(body):
                return None
        raise PlatformError(
            "find", f"no conversation with {CONNECTOR_REF}={ref} in the newest {self._find_max_pages} pages",
            retryable=False, code="RECONCILE_FAILED",
        )

    async def get(self, conversation_id: str) -> dict[str, Any]:
        return json_body(await self._request("get", "GET", f"/conversations/{segment(conversation_id)}"), "get")

    async def read_back(self, conversation_id: str) -> ReadBack:
        path = f"/conversations/{segment(conversation_id)}"
        conversation = json_body(await self._request("get", "GET", path), "get")
        messages = await self.messages(conversation_id)
        participants = await self._all("participants", f"{path}/participants", {})
        interactions = await self._all("interactions", f"{path}/interactions", {})
        return ReadBack(
            status=text(conversation.get("state")),
            conversation=conversation,
            messages=messages,
            participants=[_participant(p) for p in participants],
            interactions=[_interaction(i) for i in interactions],
        )

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        path = f"/conversations/{segment(conversation_id)}/messages"
        return [_message(m) for m in await self._all("messages", path, {"sort": "createdAt:asc"})]

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _request(self, operation: str, method: str, path: str, **kwargs: Any) -> Reply:
        return await self._api.request(operation, method, self._root + path, headers=self._headers, **kwargs)

    async def _upload(self, path: str, file: File, author_type: str) -> str:
        """`POST .../attachments` (multipart: the file and the author type); the attachment's id."""
        parts = [("attachment", file.name, file.content_type, file.data), ("authorType", None, "text/plain", author_type.encode())]
        answer = await self._request("attachment", "POST", f"{path}/attachments", parts=parts)
        attachment_id = text(json_body(answer, "attachment").get("id"))
        if not attachment_id:
            raise PlatformError("attachment", "8x8 stored the attachment but sent no id", http_status=answer.status_code, code="BAD_RESPONSE")
        return attachment_id

    async def _list(self, name: str, path: str) -> list[dict[str, Any]]:
        return await self._all(name, path, {})

    async def _all(self, name: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a paged `_embedded.<name>` list."""
        items: list[dict[str, Any]] = []
        page = 0
        while True:
            answer = await self._request(name, "GET", path, params={**params, "size": _PAGE_SIZE, "page": page})
            body = json_body(answer, name)
            items.extend(_embedded(body, name, name, answer))
            page += 1
            if page >= _total_pages(body):
                return items


def create_body(conversation: NewConversation) -> dict[str, Any]:
    """The Gateway create request: predefined user fields, properties as key/value pairs, connectorRef."""
    user: dict[str, Any] = {"name": conversation.name}
    for key, value in (
        ("userId", conversation.customer_id),
        ("email", conversation.email),
        ("phone", conversation.phone),
        ("company", conversation.company),
        ("caseId", conversation.case_id),
        ("language", conversation.language),
    ):
        if value is not None:
            user[key] = value
    user["additionalProperties"] = [{"key": k, "value": v} for k, v in conversation.stamped_properties().items()]
    body: dict[str, Any] = {"channelId": conversation.channel_id, "user": user}
    if conversation.assignment is not None:
        kind, ident = conversation.assignment
        body["assignment"] = {"type": kind, "id": ident}
    if conversation.history:
        body["history"] = {"messages": [{"authorType": author, "text": text} for text, author in conversation.history]}
    return body


def _embedded(body: dict[str, Any], name: str, operation: str, answer: Reply) -> list[dict[str, Any]]:
    """The `_embedded.<name>` list of a paged answer, each item an object."""
    embedded = body.get("_embedded")
    return items_of(embedded.get(name) if isinstance(embedded, dict) else None, operation, answer, f"_embedded.{name}")


def _total_pages(body: dict[str, Any]) -> int:
    """`page.totalPages` of a paged answer; 0 when absent or not a number."""
    page = body.get("page")
    total = page.get("totalPages") if isinstance(page, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else 0


def _user_property(user: dict[str, Any], key: str) -> Any:
    for pair in user.get("additionalProperties") or ():
        if isinstance(pair, dict) and pair.get("key") == key:
            return pair.get("value")
    return user.get(key)


def _raw(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"))


def _message(message: dict[str, Any]) -> dict[str, Any]:
    author = message.get("author")
    author = author if isinstance(author, dict) else {}
    return {
        "message_id": text(message.get("id")),
        "author_type": text(author.get("type")),
        "author_id": text(author.get("id")),
        "author_name": text(author.get("name")),
        "text": text(message.get("text")),
        "created_at": epoch_ms(message.get("createdAt")),
        "raw_json": _raw(message),
        "attachments": attachments(message.get("attachments")),
        "cards": cards(message.get("cards")),
    }


def _participant(participant: dict[str, Any]) -> dict[str, Any]:
    return {
        "participant_id": text(participant.get("id")),
        "participant_type": text(participant.get("type")),
        "name": text(participant.get("name")),
        "raw_json": _raw(participant),
    }


def _interaction(interaction: dict[str, Any]) -> dict[str, Any]:
    return {
        "interaction_id": text(interaction.get("id")),
        "agent_id": text(interaction.get("agentId")),
        "queue_id": text(interaction.get("queueId")),
        "started_at": epoch_ms(interaction.get("startTime")),
        "ended_at": epoch_ms(interaction.get("endTime")),
        "raw_json": _raw(interaction),
    }
