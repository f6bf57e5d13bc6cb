"""The contact-center console: the page at `/`, its JSON and live endpoints, and the agent actions.

The page (connector/sandbox/console/) shows queues, agents and conversations, each conversation's
timeline (messages, and the webhooks sent with their answers), and the fault settings. A live
stream of server-sent events says which conversations changed; the page then reads the JSON again.
The agent actions go through the contact center's own methods, the ones the scripted agents use,
so what a person does at the console produces the same signed webhooks.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from connector.config import Generation
from connector.sandbox.center import Refused
from connector.sandbox.state import Agent, Conversation, Message, iso_time
from connector.sandbox.validation import MAX_ATTACHMENT_BYTES

if TYPE_CHECKING:
    from connector.sandbox.delivery import Outgoing
    from connector.sandbox.server import Sandbox

__all__ = ["Console"]

_ASSETS = {"index.html": "text/html", "console.css": "text/css", "console.js": "text/javascript"}
# Only the console's own files: no inline script, nothing from another origin (it works offline).
_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
_SHOWN = 200  # the most recent conversations listed
_KEEP_ALIVE_S = 15.0
_SETTLE_S = 0.1
# The spec's ContentType enum (chat-gateway-v1.yaml): what a card may be.
CARD_CONTENT_TYPES = (
    "application/vnd.microsoft.card.adaptive",
    "application/8x8.quick.replies",
    "Interactive",
    "Location",
    "Template",
    "Suggestions",
    "Buttons",
    "Carousel",
)
_STATUS = {"created": "CREATED", "queued": "QUEUED", "handling": "AGENT_JOINED", "idle": "AGENT_LEFT", "ended": "ENDED"}


class Console:
    """Handlers of the console; like the admin endpoints, never faulted and never in the request log."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._center = sandbox.center
        self._actions: dict[str, Callable[[Agent, dict[str, Any]], None]] = {
            "take-over": self._take_over,
            "hand-back": self._hand_back,
            "accept": self._accept,
            "message": self._message,
            "typing": self._typing,
            "read": self._read,
            "transfer": self._transfer,
            "leave": self._leave,
        }

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.page),
            web.get("/console/{name}", self.asset),
            web.get("/_sandbox/state", self.state),
            web.get("/_sandbox/live", self.live),
            web.get("/_sandbox/conversations/{id}/timeline", self.timeline),
            web.get("/_sandbox/conversations/{id}/attachments/{file}", self.attachment),
            web.post("/_sandbox/agents/{id}/{action}", self.act),
        ]

    async def page(self, request: web.Request) -> web.Response:
        return _asset("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return _asset(name)

    async def state(self, request: web.Request) -> web.Response:
        """Agents, queues (who waits, in order), and the most recent conversations, newest first."""
        store, center = self._sandbox.store, self._center
        shown = list(itertools.islice(reversed(store.conversations.values()), _SHOWN))
        line = center.queued()
        queue_ids = {c.queue_id for c in store.channels.values()} | {c.queue_id for c in shown}
        queue_ids |= {i.queue_id for _, i in line}
        queues = [
            {"id": queue_id, "waiting": [c.id for c, i in line if i.queue_id == queue_id]}
            for queue_id in sorted(queue_ids)
        ]
        return web.json_response(
            {
                "agents": [self._agent(agent) for agent in center.agents],
                "queues": queues,
                "conversations": [self._summary(c) for c in shown],
                "conversationCount": len(store.conversations),
                "pendingDeliveries": self._sandbox.deliverer.pending(),
            }
        )

    async def timeline(self, request: web.Request) -> web.Response:
        """One conversation and what happened in it: messages and the webhooks sent, by time."""
        conversation = self._conversation(request.match_info["id"])
        entries = [self._message_entry(conversation, m) for m in conversation.messages]
        entries += [_webhook_entry(outgoing) for outgoing in conversation.events]
        entries.sort(key=lambda entry: entry["time"])  # stable: a message before the webhook it caused
        return web.json_response({"conversation": self._summary(conversation), "timeline": entries})

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `data: {"conversations": [ids changed], "everything": bool}` after each change."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        with self._sandbox.feed.subscribe() as changes:  # before the headers: the client reads the state after them
            await response.prepare(request)
            try:
                await response.write(b"retry: 1000\n\n")
                while not changes.closed:
                    news = await changes.next(_KEEP_ALIVE_S, _SETTLE_S)
                    if news is None:
                        await response.write(b": keep-alive\n\n")
                        continue
                    conversations, everything = news
                    data = json.dumps({"conversations": conversations, "everything": everything})
                    await response.write(f"data: {data}\n\n".encode())
            except ConnectionResetError:
                pass  # the page was closed
        return response

    async def attachment(self, request: web.Request) -> web.Response:
        """A file an agent attached: what the pre-signed URL in the MESSAGE webhook points at."""
        conversation = self._conversation(request.match_info["id"])
        file = conversation.files.get(request.match_info["file"])
        if file is None:
            raise web.HTTPNotFound()
        disposition = f"attachment; filename*=UTF-8''{quote(file.name)}"
        return web.Response(body=file.data, content_type=file.content_type, headers={"Content-Disposition": disposition})

    async def act(self, request: web.Request) -> web.Response:
        """One agent action, `POST /_sandbox/agents/{id}/{action}` with a JSON body; answers the agent."""
        agent = self._center.agent(request.match_info["id"])
        action = self._actions.get(request.match_info["action"])
        if agent is None or action is None:
            raise web.HTTPNotFound()
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise _error(web.HTTPBadRequest, "The body must be JSON.") from None
        if not isinstance(body, dict):
            raise _error(web.HTTPBadRequest, "The body must be a JSON object.")
        try:
            action(agent, body)
        except Refused as refused:
            raise _error(web.HTTPConflict, str(refused)) from None
        return web.json_response(self._agent(agent))

    # --- the actions ---------------------------------------------------------------------------

    def _take_over(self, agent: Agent, body: dict[str, Any]) -> None:
        self._center.take_over(agent)

    def _hand_back(self, agent: Agent, body: dict[str, Any]) -> None:
        self._center.hand_back(agent)

    def _accept(self, agent: Agent, body: dict[str, Any]) -> None:
        _played(agent)
        self._center.accept(agent, self._conversation(_text(body, "conversationId")))

    def _message(self, agent: Agent, body: dict[str, Any]) -> None:
        conversation = self._joined(agent)
        text = _text(body, "text", required=False)
        attachment, card = body.get("attachment"), body.get("card")
        if conversation.generation is Generation.CHAT_API_V2 and (attachment or card):
            raise Refused("Chat API v2 messages carry text only: attachments and cards are Chat Gateway's.")
        attachments = [self._attach(conversation, attachment)] if attachment else []
        cards = [self._card(card)] if card else []
        if not (text or attachments or cards):
            raise _error(web.HTTPBadRequest, "A message needs text, an attachment or a card.")
        self._center.say(conversation, agent, text, attachments=attachments, cards=cards)

    def _typing(self, agent: Agent, body: dict[str, Any]) -> None:
        typing = body.get("typing", True)
        if not isinstance(typing, bool):
            raise _error(web.HTTPBadRequest, "typing must be true or false.")
        self._center.typing(self._joined(agent, gateway_only="typing indicators"), agent, typing)

    def _read(self, agent: Agent, body: dict[str, Any]) -> None:
        self._center.read(self._joined(agent, gateway_only="read receipts"), agent)

    def _transfer(self, agent: Agent, body: dict[str, Any]) -> None:
        conversation = self._joined(agent)
        self._center.transfer(conversation, agent, _text(body, "queueId", required=False) or None)

    def _leave(self, agent: Agent, body: dict[str, Any]) -> None:
        self._center.leave(self._joined(agent), agent)

    def _joined(self, agent: Agent, *, gateway_only: str = "") -> Conversation:
        """The conversation a person plays `agent` in; refused when a script plays it or it serves none."""
        _played(agent)
        conversation = self._center.serving(agent)
        if conversation is None:
            raise Refused(f"{agent.name} serves no conversation: accept one first.")
        if gateway_only and conversation.generation is Generation.CHAT_API_V2:
            raise Refused(f"Chat API v2 has no {gateway_only}: they are Chat Gateway's.")
        return conversation

    def _attach(self, conversation: Conversation, attachment: Any) -> dict[str, Any]:
        """Keep an uploaded file (`{fileName, contentType, data: base64}`); answer the webhook's attachment."""
        if not isinstance(attachment, dict):
            raise _error(web.HTTPBadRequest, "attachment must be {fileName, contentType, data}.")
        name = _text(attachment, "fileName")
        content_type = _text(attachment, "contentType", required=False) or "application/octet-stream"
        try:
            data = base64.b64decode(_text(attachment, "data", required=False), validate=True)
        except binascii.Error:
            raise _error(web.HTTPBadRequest, "attachment.data must be base64.") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise _error(web.HTTPRequestEntityTooLarge, f"Attachments are limited to {MAX_ATTACHMENT_BYTES} bytes.")
        return self._sandbox.attachment_of(conversation, self._sandbox.keep_file(conversation, name, content_type, data))

    def _card(self, card: Any) -> dict[str, Any]:
        """A card as the gateway carries it (`{id, contentType, content}`), content type from the spec's list."""
        if not isinstance(card, dict) or not isinstance(card.get("content"), dict):
            raise _error(web.HTTPBadRequest, "card must be {contentType, content: {...}}.")
        content_type = card.get("contentType", CARD_CONTENT_TYPES[0])
        if content_type not in CARD_CONTENT_TYPES:
            raise _error(web.HTTPBadRequest, f"card.contentType must be one of {', '.join(CARD_CONTENT_TYPES)}.")
        return {"id": self._sandbox.store.new_id("card"), "contentType": content_type, "content": card["content"]}

    # --- views ---------------------------------------------------------------------------------

    def _conversation(self, conversation_id: str) -> Conversation:
        conversation = self._sandbox.store.conversations.get(conversation_id)
        if conversation is None:
            raise _error(web.HTTPNotFound, f"No conversation {conversation_id}.")
        return conversation

    def _agent(self, agent: Agent) -> dict[str, Any]:
        return {
            "id": agent.id,
            "name": agent.name,
            "scripted": agent.scripted,
            "busy": agent.busy,
            "conversationId": agent.serving,
            "joined": self._center.serving(agent) is not None,
        }

    def _summary(self, conversation: Conversation) -> dict[str, Any]:
        interaction = conversation.interaction
        agent = self._center.agent(conversation.agent_id) if conversation.agent_id else None
        status = _STATUS[conversation.state]
        if status == "QUEUED" and interaction is not None and interaction.transferred:
            status = "TRANSFERRING"
        return {
            "id": conversation.id,
            "generation": conversation.generation.value,
            "status": status,
            "customer": _customer_name(conversation),
            "ref": _ref(conversation),
            "queueId": interaction.queue_id if interaction is not None else conversation.queue_id,
            "agentId": conversation.agent_id,
            "agentName": agent.name if agent is not None else None,
            "interaction": len(conversation.interactions),
            "createdAt": iso_time(conversation.created_ms),
        }

    def _message_entry(self, conversation: Conversation, message: Message) -> dict[str, Any]:
        if message.author_type == "agent":
            agent = self._center.agent(message.author_id)
            author = agent.name if agent is not None else message.author_id
        else:
            author = _customer_name(conversation) if message.author_type == "user" else "bot"
        return {
            "kind": "message",
            "time": message.created_ms,
            "id": message.id,
            "authorType": message.author_type,
            "author": author,
            "text": message.text,
            "attachments": message.attachments,
            "cards": message.cards,
        }


def _webhook_entry(outgoing: Outgoing) -> dict[str, Any]:
    event = json.loads(outgoing.body)
    return {
        "kind": "webhook",
        "time": event.get("timestamp", 0),
        "eventId": outgoing.event_id,
        "eventType": outgoing.event_type,
        "event": event,
        "attempts": outgoing.attempts,
        "answers": outgoing.answers,
        "outcome": outgoing.outcome,
    }


def _played(agent: Agent) -> None:
    if agent.scripted:
        raise Refused(f"A script plays {agent.name}: take the agent over first.")


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise _error(web.HTTPBadRequest, f"{name} must be a{' non-empty' if required else ''} string.")
    return value


def _customer_name(conversation: Conversation) -> str:
    return str(conversation.customer.get("name") or conversation.customer_id)


def _ref(conversation: Conversation) -> str | None:
    """The connector's reference stamped in the customer (v2) or user's additional properties (gateway)."""
    customer = conversation.customer
    if isinstance(customer.get("connectorRef"), str):
        return customer["connectorRef"]
    properties = customer.get("additionalProperties")
    if isinstance(properties, list):
        for item in properties:
            if isinstance(item, dict) and item.get("key") == "connectorRef":
                return str(item.get("value"))
    return None


def _asset(name: str) -> web.Response:
    data = (resources.files("connector.sandbox") / "console" / name).read_bytes()
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": _POLICY, "X-Content-Type-Options": "nosniff"}
    return web.Response(body=data, content_type=_ASSETS[name], charset="utf-8", headers=headers)


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"message": message}), content_type="application/json")
