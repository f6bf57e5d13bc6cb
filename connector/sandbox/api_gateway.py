"""Chat Gateway v1: `x-api-key` (and `X-8x8-Tenant`) on `/chat-gateway/v1/...`, HAL answers."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connector.config import Generation
from connector.sandbox import validation
from connector.sandbox.problems import ApiError
from connector.sandbox.routing import json_body, json_response, operation, page_of, paging
from connector.sandbox.state import Channel, Conversation, File, Message, Webhook, iso_time

if TYPE_CHECKING:
    from connector.sandbox.server import Sandbox

__all__ = ["ChatGateway"]

GATEWAY = Generation.CHAT_GATEWAY_V1
BASE = "/chat-gateway/v1"
HAL_JSON = "application/hal+json"
_STATE = {"created": "created", "queued": "active", "handling": "active", "idle": "idle", "ended": "idle"}


class ChatGateway:
    """The handlers of the gateway spec."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Every gateway route; literal paths before the parameterised ones they would shadow."""
        return [
            web.get(f"{BASE}/jwk/{{kid}}/public", self.get_jwk),
            web.post(f"{BASE}/webhooks/verify", self.verify_webhook),
            web.get(f"{BASE}/webhooks", self.list_webhooks),
            web.post(f"{BASE}/webhooks", self.create_webhook),
            web.get(f"{BASE}/webhooks/{{id}}", self.get_webhook),
            web.put(f"{BASE}/webhooks/{{id}}", self.update_webhook),
            web.delete(f"{BASE}/webhooks/{{id}}", self.delete_webhook),
            web.get(f"{BASE}/channels", self.list_channels),
            web.post(f"{BASE}/channels", self.create_channel),
            web.get(f"{BASE}/channels/{{id}}", self.get_channel),
            web.put(f"{BASE}/channels/{{id}}", self.update_channel),
            web.delete(f"{BASE}/channels/{{id}}", self.delete_channel),
            web.get(f"{BASE}/conversations", self.list_conversations),
            web.post(f"{BASE}/conversations", self.create_conversation),
            web.get(f"{BASE}/conversations/{{id}}", self.get_conversation),
            web.get(f"{BASE}/conversations/{{id}}/interactions", self.list_interactions),
            web.get(f"{BASE}/conversations/{{id}}/participants", self.list_participants),
            web.patch(f"{BASE}/conversations/{{id}}/participants/user", self.user_leaves),
            web.get(f"{BASE}/conversations/{{id}}/messages", self.list_messages),
            web.post(f"{BASE}/conversations/{{id}}/messages", self.send_message),
            web.get(f"{BASE}/conversations/{{id}}/messages/{{message}}", self.get_message),
            web.get(f"{BASE}/conversations/{{id}}/attachments", self.list_attachments),
            web.post(f"{BASE}/conversations/{{id}}/attachments", self.add_attachment),
            web.post(f"{BASE}/conversations/{{id}}/typing", self.typing),
            web.post(f"{BASE}/conversations/{{id}}/read-receipt", self.read_receipt),
        ]

    def authenticate(self, request: web.Request) -> None:
        """The sandbox's API key, and if the tenant header is sent, the sandbox's tenant."""
        config = self._sandbox.config
        key = request.headers.get("x-api-key", "")
        if not secrets.compare_digest(key.encode(), config.api_key.encode()):
            raise ApiError(401, "Access Denied", code="access_denied")
        tenant = request.headers.get("X-8x8-Tenant")
        if tenant is not None and tenant != config.tenant:
            raise ApiError(
                403,
                "The tenant does not belong to customer.",
                [f"Header X-8x8-Tenant doesn't match tenant information for customerId={config.customer_id}"],
            )

    @operation(GATEWAY, "getjwkpublickey-1", auth=False)
    async def get_jwk(self, request: web.Request) -> web.Response:
        # Spec flaw: the schema says `string`; its example, and 8x8, answer the JWK object itself.
        kid = request.match_info["kid"]
        if kid != self._sandbox.kid:
            raise ApiError(404, f"Resource of type JWKPublic with id {kid} was not found.")
        return json_response(self._sandbox.jwk)

    # --- webhooks -----------------------------------------------------------------------------

    @operation(GATEWAY, "getwebhooks-1")
    async def list_webhooks(self, request: web.Request) -> web.Response:
        webhooks = [_webhook(w) for w in self._sandbox.store.webhooks.values() if w.generation is GATEWAY]
        return _page(request, "webhooks", webhooks)

    @operation(GATEWAY, "createwebhook-1")
    async def create_webhook(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.webhook(body, ("Chat Gateway v1.0",)))
        webhook = self._sandbox.add_webhook(GATEWAY, body["name"], body["uri"], "Chat Gateway v1.0")
        return json_response(_webhook(webhook), content_type=HAL_JSON)

    @operation(GATEWAY, "getwebhookbyid-1")
    async def get_webhook(self, request: web.Request) -> web.Response:
        return json_response(_webhook(self._webhook(request)), content_type=HAL_JSON)

    @operation(GATEWAY, "updatewebhook-1")
    async def update_webhook(self, request: web.Request) -> web.Response:
        webhook = self._webhook(request)
        body = json_body(request)
        validation.check(validation.webhook(body, ("Chat Gateway v1.0",)))
        webhook.name, webhook.uri = body["name"], body["uri"]
        return json_response(_webhook(webhook), content_type=HAL_JSON)

    @operation(GATEWAY, "deletewebhookbyid-1")
    async def delete_webhook(self, request: web.Request) -> web.Response:
        del self._sandbox.store.webhooks[self._webhook(request).id]
        return web.Response(status=204)

    @operation(GATEWAY, "verifywebhook-1")
    async def verify_webhook(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.webhook_verify(body))
        await self._sandbox.verify_url(GATEWAY, body["uri"])
        return web.Response(status=204)

    # --- channels -----------------------------------------------------------------------------

    @operation(GATEWAY, "getchatapichannels-1")
    async def list_channels(self, request: web.Request) -> web.Response:
        channels = [_channel(c) for c in self._sandbox.store.channels.values() if c.generation is GATEWAY]
        return _page(request, "channels", channels)

    @operation(GATEWAY, "createchatapichannel-1")
    async def create_channel(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.channel(body))
        self._known_webhook(body["webHookId"])
        channel = self._sandbox.add_channel(
            GATEWAY, body["name"], body["webHookId"], body["routingOptions"]["id"], body.get("type", "ChatAPI")
        )
        return json_response(_channel(channel), content_type=HAL_JSON)

    @operation(GATEWAY, "getchatapichannel-1")
    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(_channel(self._channel(request)), content_type=HAL_JSON)

    @operation(GATEWAY, "updatechatapichannel-1")
    async def update_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        body = json_body(request)
        validation.check(validation.channel(body))
        self._known_webhook(body["webHookId"])
        channel.name, channel.webhook_id, channel.queue_id = body["name"], body["webHookId"], body["routingOptions"]["id"]
        channel.type = body.get("type", channel.type)
        return json_response(_channel(channel), content_type=HAL_JSON)

    @operation(GATEWAY, "deletechatapichannelbyid-1")
    async def delete_channel(self, request: web.Request) -> web.Response:
        del self._sandbox.store.channels[self._channel(request).id]
        return web.Response(status=204)

    # --- conversations ------------------------------------------------------------------------

    @operation(GATEWAY, "getcctransactions-1")
    async def list_conversations(self, request: web.Request) -> web.Response:
        terms = _filter_terms(request.query.get("filter", ""))
        found = [
            _conversation(c)
            for c in self._sandbox.store.conversations.values()
            if c.generation is GATEWAY
        ]
        found = [c for c in found if all(_field(c, path) == value for path, value in terms)]
        if request.query.get("sort", "id:asc").endswith(":desc"):
            found.reverse()
        return _page(request, "conversations", found)

    @operation(GATEWAY, "createcctransaction-1")
    async def create_conversation(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.gateway_conversation(body))
        channel = self._sandbox.store.channel(GATEWAY, body["channelId"])
        if channel is None:
            raise ApiError(400, f"Channel {body['channelId']} does not exist.", code="invalid_channel")
        user = body["user"]
        assignment = body.get("assignment")
        queue_id = assignment["id"] if assignment and assignment.get("type", "queue") == "queue" and assignment.get("id") else None
        history = [(m["authorType"], m.get("text", "")) for m in body.get("history", {}).get("messages", [])]
        conversation = self._sandbox.open_conversation(
            GATEWAY, channel, user, user.get("userId"), history, queue_id=queue_id
        )
        return json_response(
            {"conversationId": conversation.id, "createdAt": iso_time(conversation.created_ms)},
            status=202,
            content_type=HAL_JSON,
        )

    @operation(GATEWAY, "getcctransaction-1")
    async def get_conversation(self, request: web.Request) -> web.Response:
        return json_response(_conversation(self._conversation(request)), content_type=HAL_JSON)

    @operation(GATEWAY, "getccinteractions")
    async def list_interactions(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        interactions = [
            {"id": i.id, "startTime": iso_time(i.start_ms)} | ({"endTime": iso_time(i.end_ms)} if i.end_ms else {})
            for i in conversation.interactions
        ]
        return _page(request, "interactions", interactions)

    @operation(GATEWAY, "getparticipantsforcctransaction-1")
    async def list_participants(self, request: web.Request) -> web.Response:
        participants = [
            {"id": p.id, "type": p.type, "language": p.language, "removed": p.removed}
            for p in self._conversation(request).participants.values()
        ]
        return _page(request, "participants", participants)

    @operation(GATEWAY, "userparticipantleavecctransaction")
    async def user_leaves(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        body = json_body(request)
        if body.get("removed") is not True:
            raise ApiError(400, "removed: Must be true.", code="invalid_parameter")
        if not conversation.ended:
            self._sandbox.center.customer_left(conversation)
        return web.Response(status=204)

    @operation(GATEWAY, "getmessagesforcctransaction-1")
    async def list_messages(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        messages = [_message(conversation, m) for m in conversation.messages]
        if request.query.get("sort", "createdAt:desc").endswith(":desc"):
            messages.reverse()
        return _page(request, "messages", messages)

    @operation(GATEWAY, "sendmessagetocctransaction-1")
    async def send_message(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        body = json_body(request)
        validation.check(validation.gateway_message(body))
        self._sandbox.customer_message(
            conversation,
            body["authorType"],
            body.get("text", ""),
            attachments=[self._uploaded(conversation, i, a) for i, a in enumerate(body.get("attachments", []))],
            cards=body.get("cards", []),
        )
        return web.Response(status=202)

    @operation(GATEWAY, "getconversationattachments")
    async def list_attachments(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        return _page(request, "attachments", [_attachment(f) for f in conversation.files.values()])

    @operation(GATEWAY, "addconversationattachments")
    async def add_attachment(self, request: web.Request) -> web.Response:
        """Keep an uploaded file for a message to refer to by its id (checked against AttachmentUpload)."""
        conversation = self._conversation(request)
        problems, upload = validation.attachment_upload(request.headers.get("Content-Type", ""), await request.read())
        validation.check(problems)
        assert upload is not None
        if conversation.ended:
            raise ApiError(400, f"Conversation {conversation.id} has ended.", code="conversation_ended")
        file = self._sandbox.keep_file(conversation, upload.file_name, upload.content_type, upload.data)
        return json_response(_attachment(file), content_type=HAL_JSON)

    @operation(GATEWAY, "sendtypingindicator")
    async def typing(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        body = json_body(request)
        validation.check(validation.typing(body))
        self._sandbox.customer_activity(conversation, "typing", body["authorType"])
        return web.Response(status=204)

    @operation(GATEWAY, "sendreadreceipt")
    async def read_receipt(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        body = json_body(request)
        validation.check(validation.read_receipt(body))
        channel = self._sandbox.store.channel(GATEWAY, conversation.channel_id)
        if body["authorType"] == "user" and channel is not None and channel.type != "ChatAPI":
            raise ApiError(400, "Constraint Violation", ["authorType: user is only allowed on ChatAPI channels."], code="invalid_request")
        self._sandbox.customer_activity(conversation, "read-receipt", body["authorType"], read_at=body["readAt"])
        return web.Response(status=204)

    @operation(GATEWAY, "getmessagebyidforcctransaction")
    async def get_message(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        message_id = request.match_info["message"]
        for message in conversation.messages:
            if message.id == message_id:
                return json_response(_message(conversation, message), content_type=HAL_JSON)
        raise ApiError(404, f"Resource of type Message with id {message_id} was not found.")

    # --- lookups ------------------------------------------------------------------------------

    def _uploaded(self, conversation: Conversation, index: int, reference: Any) -> dict[str, Any]:
        """The message attachment an `{id}` of an upload to this conversation stands for; 400 for any other."""
        file = conversation.files.get(reference.get("id")) if isinstance(reference, dict) else None
        if file is None:
            raise ApiError(
                400, "Constraint Violation", [f"attachments[{index}].id: No attachment {reference!r} was added to this conversation."],
                code="invalid_request",
            )
        return self._sandbox.attachment_of(conversation, file)

    def _webhook(self, request: web.Request) -> Webhook:
        webhook = self._sandbox.store.webhook(GATEWAY, request.match_info["id"])
        if webhook is None:
            raise ApiError(404, f"Resource of type WebHook with id {request.match_info['id']} was not found.")
        return webhook

    def _known_webhook(self, webhook_id: str) -> None:
        if self._sandbox.store.webhook(GATEWAY, webhook_id) is None:
            raise ApiError(400, f"WebHook {webhook_id} does not exist.", code="invalid_webhook")

    def _channel(self, request: web.Request) -> Channel:
        channel = self._sandbox.store.channel(GATEWAY, request.match_info["id"])
        if channel is None:
            raise ApiError(404, f"Resource of type Channel with id {request.match_info['id']} was not found.")
        return channel

    def _conversation(self, request: web.Request) -> Conversation:
        conversation = self._sandbox.store.conversation(GATEWAY, request.match_info["id"])
        if conversation is None:
            raise ApiError(
                404, f"Resource of type Conversation with id {request.match_info['id']} was not found.", code="resource_not_found"
            )
        return conversation


def _page(request: web.Request, name: str, items: list[Any]) -> web.Response:
    page, size = paging(request)
    data, pages = page_of(items, page, size)
    return json_response(
        {
            "_embedded": {name: data},
            "_links": {"self": {"href": str(request.rel_url)}},
            "page": {"size": size, "number": page, "totalElements": len(items), "totalPages": pages},
        },
        content_type=HAL_JSON,
    )


def _filter_terms(text: str) -> list[tuple[str, str]]:
    """`a==1,b.c==2` (the RSQL subset the sandbox understands: equality, all must hold)."""
    terms = []
    for term in filter(None, (part.strip("() ") for part in text.replace(";", ",").split(","))):
        path, sep, value = term.partition("==")
        if not sep:
            raise ApiError(400, f"Unsupported filter term: {term}", code="invalid_filter")
        terms.append((path.strip(), value.strip()))
    return terms


def _field(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; `user.<key>` also finds the user's additional properties."""
    value: Any = record
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, dict) and isinstance(value.get("additionalProperties"), list):
            value = next((p.get("value") for p in value["additionalProperties"] if p.get("key") == part), None)
        else:
            return None
    return value


def _webhook(webhook: Webhook) -> dict[str, Any]:
    return {"id": webhook.id, "name": webhook.name, "uri": webhook.uri, "version": webhook.version}


def _channel(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        "type": channel.type,
        "webHookId": channel.webhook_id,
        "routingOptions": {"type": "queue", "id": channel.queue_id},
    }


def _conversation(conversation: Conversation) -> dict[str, Any]:
    assignment = {"type": "queue", "id": conversation.queue_id}
    if conversation.agent_id is not None and conversation.state == "handling":
        assignment = {"type": "agent", "id": conversation.agent_id}
    return {
        "id": conversation.id,
        "channelId": conversation.channel_id,
        "assignment": assignment,
        "user": conversation.customer,
        "state": _STATE[conversation.state],
    }


def _attachment(file: File) -> dict[str, Any]:
    # Spec flaw: AttachmentResult requires `size` and `type` but defines `sizeInBytes` (and no type); all three are sent.
    return {
        "id": file.id,
        "filename": file.name,
        "size": len(file.data),
        "sizeInBytes": len(file.data),
        "type": file.content_type,
        "createdAt": iso_time(file.created_ms),
    }


def _message(conversation: Conversation, message: Message) -> dict[str, Any]:
    author = conversation.participants.get(message.author_id)
    return {
        "id": message.id,
        "text": message.text,
        "createdAt": iso_time(message.created_ms),
        "author": {"id": message.author_id, "type": message.author_type, "removed": bool(author and author.removed)},
        "attachments": message.attachments,
        "cards": message.cards,
    }
