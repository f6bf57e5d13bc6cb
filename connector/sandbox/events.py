"""The webhook events of both generations: v2's flat events and the gateway's events with `data`."""

from __future__ import annotations

from typing import Any

from connector.config import Generation
from connector.sandbox.delivery import Deliverer
from connector.sandbox.feed import Feed
from connector.sandbox.state import Agent, Conversation, Message, Store, Webhook, now_ms

__all__ = ["Notifier", "verify_event"]

V2 = Generation.CHAT_API_V2

NOTIFICATION_VERSION = {Generation.CHAT_API_V2: "v2.0", Generation.CHAT_GATEWAY_V1: "Chat Gateway v1.0"}


class Notifier:
    """Turns what happens in the contact center into events for the conversation's webhook,
    kept on the conversation (the console's timeline), and tells the console's feed."""

    def __init__(self, store: Store, deliverer: Deliverer, feed: Feed) -> None:
        self._store = store
        self._deliverer = deliverer
        self._feed = feed

    def verify(self, webhook: Webhook) -> None:
        """`WEB_HOOK_VERIFY` to a webhook just created."""
        self._deliverer.submit(f"webhook:{webhook.id}", webhook.uri, verify_event(webhook.generation))

    def created(self, conversation: Conversation) -> None:
        """Gateway only: the conversation exists, its interaction is on its way."""
        if conversation.generation is not V2:
            self._update(conversation, "created", {"type": "queue", "id": conversation.queue_id})

    def queued(self, conversation: Conversation, queue_id: str) -> None:
        """The interaction waits in a queue."""
        details = {"queueId": queue_id, "queueName": f"Queue {queue_id}"}
        if conversation.generation is V2:
            self._send(conversation, "QUEUED", details)
        else:
            self._send(conversation, "QUEUED", {"data": details})

    def agent_joined(self, conversation: Conversation, agent: Agent) -> None:
        """An agent accepted the interaction."""
        if conversation.generation is V2:
            self._send(conversation, "AGENT_JOINED", {"agentId": agent.id, "agentName": agent.name})
        else:
            self._members(conversation, "agent", "joined", agent.id)
            self._update(conversation, "active", {"type": "agent", "id": agent.id, "resourceId": agent.id})

    def agent_left(self, conversation: Conversation, agent: Agent, *, idle: bool) -> None:
        """The agent left the interaction; `idle` when no other agent is to follow."""
        if conversation.generation is V2:
            self._send(conversation, "AGENT_LEFT", {"agentId": agent.id, "agentName": agent.name})
        else:
            self._members(conversation, "agent", "left", agent.id)
            if idle:
                self._update(conversation, "idle", None)

    def transfer(self, conversation: Conversation) -> None:
        """The agent hands the conversation over: the agent-left that follows is not the end."""
        self._send(conversation, "TRANSFER", {})

    def user_left(self, conversation: Conversation) -> None:
        """Gateway only: the user left (customer leaves was called)."""
        if conversation.generation is not V2:
            self._members(conversation, "user", "left", conversation.customer_id)
            self._update(conversation, "idle", None)

    def agent_message(self, conversation: Conversation, agent: Agent, message: Message) -> None:
        """The agent wrote `message`."""
        if conversation.generation is V2:
            self._send(
                conversation,
                "TEXT",
                {"messageType": "AGENT", "agentId": agent.id, "agentName": agent.name, "message": message.text},
            )
        else:
            self._message(conversation, message, echo=False)

    def user_message(self, conversation: Conversation, message: Message) -> None:
        """Gateway: the echo of a message the integration itself sent; v2 sends nothing."""
        if conversation.generation is not V2:
            self._message(conversation, message, echo=True)
        else:
            self._feed.touch(conversation.id)

    def typing(self, conversation: Conversation, agent: Agent, typing: bool) -> None:
        """Gateway only: the agent started (or stopped) typing."""
        if conversation.generation is not V2:
            users = [agent.id] if typing else []
            self._send(conversation, "ACTIVITY", {"data": {"name": "typing", "value": {"users": users}}})

    def read_receipt(self, conversation: Conversation, agent: Agent, read_at_ms: int) -> None:
        """Gateway only: the agent read every message up to `read_at_ms`.

        The spec documents no webhook body for it; the value takes `readAt` (epoch ms) from the spec's
        read-receipt request and `users` from the typing activity.
        """
        if conversation.generation is not V2:
            value = {"users": [agent.id], "readAt": read_at_ms}
            self._send(conversation, "ACTIVITY", {"data": {"name": "read-receipts", "value": value}})

    def changed(self, conversation: Conversation | None = None) -> None:
        """Something the console shows changed without an event (an agent assigned, taken over, freed)."""
        self._feed.touch(conversation.id if conversation is not None else None)

    def forget(self, conversation: Conversation) -> None:
        """Drop the undelivered events of an evicted conversation."""
        self._deliverer.forget(conversation.id)

    def _message(self, conversation: Conversation, message: Message, *, echo: bool) -> None:
        data = {
            "id": message.id,
            "isEcho": echo,
            "sender": {"id": message.author_id, "type": message.author_type},
            "text": message.text,
            "attachments": message.attachments,
            "cards": message.cards,
        }
        self._send(conversation, "MESSAGE", {"data": data})

    def _members(self, conversation: Conversation, member_type: str, change: str, member_id: str) -> None:
        self._send(conversation, "MEMBERS_CHANGED", {"data": {"memberType": member_type, "change": change, "id": member_id}})

    def _update(self, conversation: Conversation, state: str, assignment: dict[str, Any] | None) -> None:
        data: dict[str, Any] = {"state": state}
        if assignment is not None:
            data["assignment"] = assignment
        data["user"] = conversation.customer
        data["channel"] = conversation.channel_id
        self._send(conversation, "CONVERSATION_UPDATE", {"data": data})

    def _send(self, conversation: Conversation, event_type: str, fields: dict[str, Any]) -> None:
        webhook = self._store.webhook_of(conversation)
        if webhook is None:
            return  # the channel or its webhook was deleted: 8x8 has nowhere to send
        event: dict[str, Any] = {"eventType": event_type}
        if conversation.generation is V2:
            event["messageType"] = fields.pop("messageType", "SYSTEM")
        event["conversationId"] = conversation.id
        event["timestamp"] = now_ms()
        event.update(fields)
        conversation.events.append(self._deliverer.submit(conversation.id, webhook.uri, event))
        self._feed.touch(conversation.id)


def verify_event(generation: Generation) -> dict[str, Any]:
    """The `WEB_HOOK_VERIFY` event of a generation: no conversation, only the notification version."""
    event: dict[str, Any] = {"eventType": "WEB_HOOK_VERIFY"}
    if generation is V2:
        event["messageType"] = "SYSTEM"
    event["timestamp"] = now_ms()
    event["notificationVersion"] = NOTIFICATION_VERSION[generation]
    return event
