"""The one small interface every 8x8 chat generation implements, and the errors its calls raise.

Each method makes one logical call to 8x8 and either returns what the connector needs or raises a
`PlatformError` that says whether trying again may help. Retrying is the caller's job
(`connector.eightbyeight.retry`), so that attempts, reconciliation and results live in one place.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.normalise import text

__all__ = [
    "ATTACHMENTS",
    "CARDS",
    "CONNECTOR_REF",
    "READ_RECEIPTS",
    "TYPING",
    "MAX_HISTORY",
    "MAX_PROPERTIES",
    "Card",
    "Channel",
    "File",
    "InvalidCommand",
    "NewConversation",
    "Platform",
    "PlatformError",
    "ReadBack",
    "Webhook",
]

# The customer/user property that carries the enterprise's ref, stamped on every conversation created.
CONNECTOR_REF = "connectorRef"
MAX_PROPERTIES = 30
MAX_HISTORY = 200
# What a generation may offer beyond the conversation flow (`Platform.features`).
ATTACHMENTS = "attachments"
CARDS = "cards"
TYPING = "typing indicators"
READ_RECEIPTS = "read receipts"


@dataclass(frozen=True)
class NewConversation:
    """What a conversation is created with, whatever the generation."""

    ref: str
    channel_id: str
    name: str
    customer_id: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    case_id: str | None = None
    language: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    # (text, "user" | "bot"), oldest first
    history: Sequence[tuple[str, str]] = ()
    # ("queue" | "script", id): Chat Gateway only
    assignment: tuple[str, str] | None = None

    def stamped_properties(self) -> dict[str, str]:
        """The free-form properties with `connectorRef` set to the ref (the connector's stamp wins)."""
        return {**{k: v for k, v in self.properties.items() if k != CONNECTOR_REF}, CONNECTOR_REF: self.ref}

    def check(self) -> None:
        """Raise InvalidCommand for what 8x8 would refuse anyway, before anything is sent."""
        if not self.channel_id:
            raise InvalidCommand("no channel: the command names none and CONNECTOR_PLATFORM_CHANNEL_ID is empty")
        if len(self.stamped_properties()) > MAX_PROPERTIES:
            raise InvalidCommand(
                f"{len(self.stamped_properties())} customer properties ({CONNECTOR_REF} included); 8x8 allows {MAX_PROPERTIES}"
            )
        if len(self.history) > MAX_HISTORY:
            raise InvalidCommand(f"{len(self.history)} history messages; 8x8 allows {MAX_HISTORY}")


@dataclass(frozen=True)
class File:
    """A file to send with a message: its name, MIME type and bytes."""

    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Card:
    """A card to send with a message: 8x8's content type and the content, a JSON object."""

    content_type: str
    content: dict[str, Any]


@dataclass(frozen=True)
class ReadBack:
    """A conversation as read back from 8x8, already in the ConversationTranscript record's shapes."""

    status: str | None
    conversation: dict[str, Any]
    messages: list[dict[str, Any]]
    participants: list[dict[str, Any]]
    interactions: list[dict[str, Any]]


@dataclass(frozen=True)
class Webhook:
    """A web-hook registered with 8x8: where it delivers events, in which notification version."""

    id: str
    name: str
    uri: str
    version: str | None

    @classmethod
    def of(cls, item: dict[str, Any]) -> Webhook:
        """From 8x8's web-hook object (the same fields in both generations)."""
        return cls(text(item.get("id")) or "", text(item.get("name")) or "", text(item.get("uri")) or "", text(item.get("version")))


@dataclass(frozen=True)
class Channel:
    """A chat channel: conversations created on it are delivered to its web-hook and queued on its queue."""

    id: str
    name: str
    webhook_id: str | None
    queue_id: str | None

    @classmethod
    def of(cls, item: dict[str, Any]) -> Channel:
        """From 8x8's channel object (the same fields in both generations)."""
        routing = item.get("routingOptions")
        queue = text(routing.get("id")) if isinstance(routing, dict) else None
        return cls(text(item.get("id")) or "", text(item.get("name")) or "", text(item.get("webHookId")), queue)


class PlatformError(Exception):
    """An 8x8 call that did not succeed; never carries a credential.

    `retryable`: trying again may succeed (network error, timeout, 429, 5xx).
    `outcome_unknown`: the request may have taken effect (sent, but no answer, or a 5xx).
    `retry_after`: seconds 8x8 asked us to wait (429 `Retry-After`), if it said.
    """

    def __init__(
        self,
        operation: str,
        message: str,
        *,
        http_status: int | None = None,
        retryable: bool = False,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
        code: str = "REJECTED_BY_8X8",
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.message = message
        self.http_status = http_status
        self.retryable = retryable
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after
        self.code = code
        # For metrics: the HTTP status, or "timeout" / "network" when there was no answer.
        self.attempts = 1  # set by the retry loop
        self.reason = reason or (str(http_status) if http_status is not None else "error")


class InvalidCommand(ValueError):
    """A command that cannot be turned into a valid 8x8 request; nothing was sent."""


class Platform(abc.ABC):
    """One 8x8 chat generation: create, send, end, find by ref, get, and read back; web-hooks and channels;
    and the `features` it has beyond the conversation flow."""

    generation: str
    features: frozenset[str] = frozenset()

    def check(self, conversation: NewConversation) -> None:
        """Raise InvalidCommand if this generation cannot create `conversation` as asked."""
        conversation.check()

    @abc.abstractmethod
    async def create(self, conversation: NewConversation) -> str:
        """Create the conversation; its 8x8 id."""

    @abc.abstractmethod
    async def send(
        self, conversation_id: str, text: str, author_type: str, *, files: Sequence[File] = (), cards: Sequence[Card] = ()
    ) -> None:
        """Send a customer ("user") or "bot" message; files and cards need `ATTACHMENTS` and `CARDS`."""

    async def typing(self, conversation_id: str, author_type: str) -> None:
        """Show the agent that the customer ("user") or "bot" is typing (`TYPING`)."""
        raise self.unsupported(TYPING)

    async def mark_read(self, conversation_id: str, message_id: str, author_type: str) -> None:
        """Tell the agent every message up to `message_id` was read (`READ_RECEIPTS`)."""
        raise self.unsupported(READ_RECEIPTS)

    def unsupported(self, feature: str) -> PlatformError:
        """The error of a call this generation cannot make; 8x8 is not asked."""
        return PlatformError(
            feature, f"{self.generation} has no {feature}", code="UNSUPPORTED_BY_GENERATION",
            reason="unsupported",
        )

    @abc.abstractmethod
    async def end(self, conversation_id: str) -> None:
        """The customer leaves: ends the conversation and frees the agent."""

    @abc.abstractmethod
    async def find_by_ref(self, ref: str) -> str | None:
        """The id of the conversation created with `connectorRef` = ref, or None."""

    @abc.abstractmethod
    async def get(self, conversation_id: str) -> dict[str, Any]:
        """The conversation as 8x8 returns it."""

    @abc.abstractmethod
    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's messages, oldest first, in the TranscriptMessage record's shape."""

    @abc.abstractmethod
    async def read_back(self, conversation_id: str) -> ReadBack:
        """The conversation, its messages, participants (and interactions) for a transcript."""

    @abc.abstractmethod
    async def webhooks(self) -> list[Webhook]:
        """Every web-hook of the tenant."""

    @abc.abstractmethod
    async def create_webhook(self, name: str, uri: str) -> Webhook:
        """Register a web-hook to `uri` (8x8 sends it `WEB_HOOK_VERIFY`)."""

    @abc.abstractmethod
    async def verify_webhook(self, webhook: Webhook) -> None:
        """Have 8x8 send `WEB_HOOK_VERIFY` to the web-hook's URL; PlatformError unless it answered 2xx."""

    @abc.abstractmethod
    async def delete_webhook(self, webhook_id: str) -> None:
        """Remove a web-hook."""

    @abc.abstractmethod
    async def channels(self) -> list[Channel]:
        """Every chat channel of the tenant."""

    @abc.abstractmethod
    async def channel(self, channel_id: str) -> Channel | None:
        """One channel, or None when 8x8 has none with that id."""

    @abc.abstractmethod
    async def create_channel(self, name: str, webhook_id: str, queue_id: str) -> Channel:
        """A channel bound to a web-hook whose conversations are queued on `queue_id`."""

    @abc.abstractmethod
    async def delete_channel(self, channel_id: str) -> None:
        """Remove a channel."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the HTTP connections."""
