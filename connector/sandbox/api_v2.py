"""Chat API v2: OAuth2 client credentials, then `/vcc/{region}/chat/v2/tenant/{tenantId}/...`."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connector.config import Generation
from connector.sandbox import validation
from connector.sandbox.problems import ApiError
from connector.sandbox.routing import json_body, json_response, operation, page_of, paging
from connector.sandbox.state import Channel, Conversation, Message, Webhook, iso_time, now_ms

if TYPE_CHECKING:
    from connector.sandbox.server import Sandbox

__all__ = ["ChatApiV2"]

V2 = Generation.CHAT_API_V2
REGIONS = ("us", "eu", "ca", "ap")
BASE = "/vcc/{region}/chat/v2/tenant/{tenant}"
# v2's own status words for a conversation.
_STATUS = {"created": "created", "queued": "pending", "handling": "handling", "idle": "created", "ended": "deleted"}


class ChatApiV2:
    """The handlers of the v2 spec."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Every v2 route; literal paths before the parameterised ones they would shadow."""
        return [
            # The conversation routes first: the router tries the /vcc routes in order.
            web.post(f"{BASE}/conversations/{{id}}/messages", self.send_message),
            web.post(f"{BASE}/conversations", self.create_conversation),
            web.get(f"{BASE}/conversations", self.list_conversations),
            web.get(f"{BASE}/conversations/{{id}}", self.get_conversation),
            web.get(f"{BASE}/conversations/{{id}}/messages", self.list_messages),
            web.get(f"{BASE}/conversations/{{id}}/participants", self.list_participants),
            web.delete(f"{BASE}/conversations/{{id}}/participants/customer", self.customer_leaves),
            web.post("/oauth/v2/token", self.create_token),
            web.get("/vcc/{region}/chat/v2/jwk/{kid}/public", self.get_jwk),
            web.post(f"{BASE}/web-hooks/verify", self.verify_webhook),
            web.get(f"{BASE}/web-hooks", self.list_webhooks),
            web.post(f"{BASE}/web-hooks", self.create_webhook),
            web.get(f"{BASE}/web-hooks/{{id}}", self.get_webhook),
            web.put(f"{BASE}/web-hooks/{{id}}", self.update_webhook),
            web.delete(f"{BASE}/web-hooks/{{id}}", self.delete_webhook),
            web.get(f"{BASE}/channels", self.list_channels),
            web.post(f"{BASE}/channels", self.create_channel),
            web.get(f"{BASE}/channels/{{id}}", self.get_channel),
            web.put(f"{BASE}/channels/{{id}}", self.update_channel),
            web.delete(f"{BASE}/channels/{{id}}", self.delete_channel),
        ]

    def authenticate(self, request: web.Request) -> None:
        """A valid, unexpired bearer token, and the tenant of the path being the sandbox's."""
        _check_region(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._sandbox.tokens.get(token) if scheme.lower() == "bearer" else None
        if expiry is None:
            raise ApiError(401, "Invalid Access Token", code="keymanagement.service.invalid_access_token")
        if expiry <= time.monotonic():
            raise ApiError(401, "Access Token expired", code="keymanagement.service.access_token_expired")
        tenant = request.match_info["tenant"]
        if tenant != self._sandbox.config.tenant:
            raise ApiError(
                403,
                "The tenant does not belong to customer.",
                [f"Tenant {tenant} does not belong to customer {self._sandbox.config.customer_id}."],
            )

    # --- authentication ---------------------------------------------------------------------

    @operation(V2, "createaccesstoken", auth=False)
    async def create_token(self, request: web.Request) -> web.Response:
        config = self._sandbox.config
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            key = secret = ""
        if scheme.lower() != "basic" or not (
            secrets.compare_digest(key.encode(), config.api_key.encode())
            and secrets.compare_digest(secret.encode(), config.api_secret.encode())
        ):
            raise ApiError(401, "ClientId is Invalid", code="invalid_client")
        form = await request.post()
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            raise ApiError(400, f"Unsupported grant type : {grant_type}", code="invalid_request")
        token = secrets.token_urlsafe(24)
        self._sandbox.issue_token(token)
        return json_response(
            {
                "refresh_token_expires_in": "0",
                "api_product_list": ["vcc"],
                "organization_name": "8x8-sandbox",
                "token_type": "BearerToken",
                "issued_at": str(now_ms()),
                "client_id": config.api_key,
                "access_token": token,
                "application_name": "connector-sandbox",
                "scope": "",
                "expires_in": str(int(config.token_ttl_s)),
                "refresh_count": "0",
                "status": "approved",
            }
        )

    @operation(V2, "getjwkpublickey", auth=False)
    async def get_jwk(self, request: web.Request) -> web.Response:
        # Spec flaw: the schema says `string`; its example, and 8x8, answer the JWK object itself.
        _check_region(request)
        kid = request.match_info["kid"]
        if kid != self._sandbox.kid:
            raise ApiError(404, "Resource may not exist or is not accessible.", [kid])
        return json_response(self._sandbox.jwk)

    # --- webhooks -----------------------------------------------------------------------------

    @operation(V2, "getwebhooks")
    async def list_webhooks(self, request: web.Request) -> web.Response:
        webhooks = [_webhook(w) for w in self._sandbox.store.webhooks.values() if w.generation is V2]
        return _page(request, webhooks)

    @operation(V2, "createwebhook")
    async def create_webhook(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.webhook(body, ("v1.0", "v2.0")))
        webhook = self._sandbox.add_webhook(V2, body["name"], body["uri"], body.get("notificationVersion", body.get("version", "v2.0")))
        return json_response(_webhook(webhook))

    @operation(V2, "getwebhookbyid")
    async def get_webhook(self, request: web.Request) -> web.Response:
        return json_response(_webhook(self._webhook(request)))

    @operation(V2, "updatewebhook")
    async def update_webhook(self, request: web.Request) -> web.Response:
        webhook = self._webhook(request)
        body = json_body(request)
        validation.check(validation.webhook(body, ("v1.0", "v2.0")))
        webhook.name, webhook.uri = body["name"], body["uri"]
        webhook.version = body.get("notificationVersion", body.get("version", webhook.version))
        return json_response(_webhook(webhook))

    @operation(V2, "deletewebhookbyid")
    async def delete_webhook(self, request: web.Request) -> web.Response:
        del self._sandbox.store.webhooks[self._webhook(request).id]
        return web.Response(status=204)

    @operation(V2, "verifywebhook")
    async def verify_webhook(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.webhook_verify(body))
        await self._sandbox.verify_url(V2, body["uri"])
        return web.Response(status=204)

    # --- channels -----------------------------------------------------------------------------

    @operation(V2, "getchatapichannels")
    async def list_channels(self, request: web.Request) -> web.Response:
        channels = [_channel(c) for c in self._sandbox.store.channels.values() if c.generation is V2]
        return _page(request, channels)

    @operation(V2, "createchatapichannel")
    async def create_channel(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.channel(body))
        self._known_webhook(body["webHookId"])
        channel = self._sandbox.add_channel(V2, body["name"], body["webHookId"], body["routingOptions"]["id"])
        return json_response(_channel(channel))

    @operation(V2, "getchatapichannel")
    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(_channel(self._channel(request)))

    @operation(V2, "updatechatapichannel")
    async def update_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        body = json_body(request)
        validation.check(validation.channel(body))
        self._known_webhook(body["webHookId"])
        channel.name, channel.webhook_id, channel.queue_id = body["name"], body["webHookId"], body["routingOptions"]["id"]
        return json_response(_channel(channel))

    @operation(V2, "deletechatapichannelbyid")
    async def delete_channel(self, request: web.Request) -> web.Response:
        del self._sandbox.store.channels[self._channel(request).id]
        return web.Response(status=204)

    # --- conversations ------------------------------------------------------------------------

    @operation(V2, "getcctransactions")
    async def list_conversations(self, request: web.Request) -> web.Response:
        query = request.query
        status = query.get("status", "all")
        channel_id = query.get("channel-id")
        user_id = query.get("userId")
        wanted = {key[len("customer.") :]: value for key, value in query.items() if key.startswith("customer.")}
        found = [
            c
            for c in self._sandbox.store.conversations.values()
            if c.generation is V2
            and (channel_id is None or c.channel_id == channel_id)
            and (status == "all" or _STATUS[c.state] == status)
            and (user_id is None or c.customer.get("customerId") == user_id)
            and all(c.customer.get(key) == value for key, value in wanted.items())
        ]
        if query.get("order") == "desc":
            found.reverse()
        return _page(request, [_conversation(c) for c in found])

    @operation(V2, "createcctransaction")
    async def create_conversation(self, request: web.Request) -> web.Response:
        body = json_body(request)
        validation.check(validation.v2_conversation(body))
        channel = self._sandbox.store.channel(V2, body["channelId"])
        if channel is None:
            raise ApiError(400, "Constraint Violation", [f"channelId: Channel {body['channelId']} does not exist."])
        customer = body["customer"]
        history = [
            (message.get("type", "user"), message["text"]) for message in body.get("history", {}).get("messages", [])
        ]
        conversation = self._sandbox.open_conversation(V2, channel, customer, customer.get("customerId"), history)
        return json_response({"conversationId": conversation.id, "timestamp": conversation.created_ms}, status=202)

    @operation(V2, "getcctransaction")
    async def get_conversation(self, request: web.Request) -> web.Response:
        return json_response(_conversation(self._conversation(request)))

    @operation(V2, "getparticipantsforcctransaction")
    async def list_participants(self, request: web.Request) -> web.Response:
        return json_response({"participants": _participants(self._conversation(request))})

    @operation(V2, "customerparticipantleavecctransaction")
    async def customer_leaves(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        if not conversation.ended:
            self._sandbox.center.customer_left(conversation)
        return web.Response(status=204)

    @operation(V2, "getmessagesforcctransaction")
    async def list_messages(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        interaction_id = request.query.get("interaction-id")
        messages = [
            _message(m) for m in conversation.messages if interaction_id is None or m.interaction_id == interaction_id
        ]
        # Spec flaw: `participants` is required but not defined; it carries the participants list.
        return json_response({"messages": messages, "participants": _participants(conversation)})

    @operation(V2, "sendmessagetocctransaction")
    async def send_message(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        body = json_body(request)
        validation.check(validation.v2_message(body))
        self._sandbox.customer_message(conversation, body.get("authorType", "user"), body["text"])
        return web.Response(status=202)

    # --- lookups ------------------------------------------------------------------------------

    def _webhook(self, request: web.Request) -> Webhook:
        webhook = self._sandbox.store.webhook(V2, request.match_info["id"])
        if webhook is None:
            raise ApiError(404, f"Resource of type WebHook with id {request.match_info['id']} was not found.")
        return webhook

    def _known_webhook(self, webhook_id: str) -> None:
        if self._sandbox.store.webhook(V2, webhook_id) is None:
            raise ApiError(400, "Constraint Violation", [f"webHookId: WebHook {webhook_id} does not exist."], code="invalid_webhook")

    def _channel(self, request: web.Request) -> Channel:
        channel = self._sandbox.store.channel(V2, request.match_info["id"])
        if channel is None:
            raise ApiError(404, f"Resource of type Channel with id {request.match_info['id']} was not found.")
        return channel

    def _conversation(self, request: web.Request) -> Conversation:
        conversation = self._sandbox.store.conversation(V2, request.match_info["id"])
        if conversation is None:
            raise ApiError(404, f"Resource of type Conversation with id {request.match_info['id']} was not found.")
        return conversation


def _check_region(request: web.Request) -> None:
    region = request.match_info["region"]
    if region not in REGIONS:
        raise ApiError(404, f"Region {region} does not exist.", [region])


def _page(request: web.Request, items: list[Any]) -> web.Response:
    page, size = paging(request)
    data, pages = page_of(items, page, size)
    return json_response(
        {"data": data, "page": {"pageSize": size, "pageIndex": page, "elementCount": len(items), "pageCount": pages}}
    )


def _webhook(webhook: Webhook) -> dict[str, Any]:
    return {"id": webhook.id, "name": webhook.name, "uri": webhook.uri, "version": webhook.version}


def _channel(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        "webHookId": channel.webhook_id,
        "routingOptions": {"type": "queue", "id": channel.queue_id},
    }


def _conversation(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "channelId": conversation.channel_id,
        "customer": conversation.customer,
        "status": _STATUS[conversation.state],
        "startTime": iso_time(conversation.created_ms),
        "interactions": [
            {"id": i.id, "startTime": iso_time(i.start_ms)} | ({"endTime": iso_time(i.end_ms)} if i.end_ms else {})
            for i in conversation.interactions
        ],
    }


def _participants(conversation: Conversation) -> list[dict[str, Any]]:
    # Spec flaw: declared as one participant object; it is the list of every participant.
    return [{"id": p.id, "type": p.type, "language": p.language} for p in conversation.participants.values()]


def _message(message: Message) -> dict[str, Any]:
    return {
        "interactionId": message.interaction_id,
        "originalText": message.text,
        "type": "TEXT",
        "senderId": message.author_id,
        "authorType": message.author_type,
        "participantId": message.author_id,
        "timestamp": message.created_ms,
    }
