"""What the sandbox remembers, in memory: webhooks, channels and conversations of both generations.

Conversations are bounded: past `max_conversations` the oldest ended one is evicted first, else the
oldest of all, so that a long benchmark does not grow without limit.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector.config import Generation

if TYPE_CHECKING:
    from connector.sandbox.delivery import Outgoing

__all__ = [
    "Agent",
    "Channel",
    "Conversation",
    "File",
    "Interaction",
    "Message",
    "Participant",
    "Store",
    "Webhook",
    "iso_time",
    "now_ms",
]


@dataclass
class Agent:
    """A contact center agent: scripted, or played by someone at the console after a take-over."""

    id: str
    name: str
    scripted: bool = True
    serving: str | None = None  # the conversation assigned to the agent (accepting, or joined)

    @property
    def busy(self) -> bool:
        return self.serving is not None


@dataclass
class Webhook:
    id: str
    generation: Generation
    name: str
    uri: str
    version: str


@dataclass
class Channel:
    id: str
    generation: Generation
    name: str
    webhook_id: str
    queue_id: str
    type: str = "ChatAPI"


@dataclass
class Interaction:
    id: str
    queue_id: str
    start_ms: int
    end_ms: int | None = None
    transferred: bool = False
    agent_ids: list[str] = field(default_factory=list)


@dataclass
class Message:
    id: str
    interaction_id: str
    author_type: str  # user, bot, agent, system
    author_id: str
    text: str
    created_ms: int
    attachments: list[Any] = field(default_factory=list)
    cards: list[Any] = field(default_factory=list)


@dataclass
class File:
    """A file attached to a message (by an agent, or uploaded by the integration), downloadable at its pre-signed URL."""

    id: str
    name: str
    content_type: str
    data: bytes
    created_ms: int = field(default_factory=lambda: now_ms())


@dataclass
class Participant:
    id: str
    type: str  # user, bot, agent
    language: str = "en"
    removed: bool = False


@dataclass
class Conversation:
    """One conversation; `customer` is v2's customer object or the gateway's user object, as sent."""

    id: str
    generation: Generation
    channel_id: str
    queue_id: str
    customer: dict[str, Any]
    customer_id: str
    created_ms: int
    assignment: dict[str, Any] | None = None
    messages: list[Message] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)
    participants: dict[str, Participant] = field(default_factory=dict)
    state: str = "created"  # created, queued, handling, idle, ended
    agent_id: str | None = None
    inbox: asyncio.Queue[Message] | None = None  # the scripted agent's, while one serves
    events: list[Outgoing] = field(default_factory=list)  # the webhook events sent, in order
    files: dict[str, File] = field(default_factory=dict)
    # The integration's typing indicators and read receipts, oldest first: {name, authorType, at[, readAt]}.
    activity: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interaction(self) -> Interaction | None:
        """The interaction still open, if any."""
        if self.interactions and self.interactions[-1].end_ms is None:
            return self.interactions[-1]
        return None

    @property
    def ended(self) -> bool:
        return self.state == "ended"


class Store:
    """The sandbox's records and its id generator (deterministic given the seed)."""

    def __init__(self, *, seed: int, max_conversations: int) -> None:
        self._seed = seed
        self._max_conversations = max_conversations
        self._counters: collections.defaultdict[str, itertools.count[int]] = collections.defaultdict(lambda: itertools.count(1))
        self.webhooks: dict[str, Webhook] = {}
        self.channels: dict[str, Channel] = {}
        self.conversations: collections.OrderedDict[str, Conversation] = collections.OrderedDict()
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()

    def new_id(self, kind: str) -> str:
        """A fresh id shaped like 8x8's (22 characters of base64url): the n-th of a kind is the same for a seed."""
        digest = hashlib.blake2b(f"{self._seed}:{kind}:{next(self._counters[kind])}".encode(), digest_size=16).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def new_number(self) -> str:
        """A fresh numeric id, as webhooks and channels have."""
        return str(next(self._counters["number"]))

    def add_conversation(self, conversation: Conversation) -> list[Conversation]:
        """Remember `conversation`; answer the conversations evicted to stay within the bound."""
        self.conversations[conversation.id] = conversation
        evicted = []
        while len(self.conversations) > self._max_conversations:
            victim_id = next(iter(self._ended)) if self._ended else next(iter(self.conversations))
            evicted.append(self.conversations.pop(victim_id))
            self._ended.pop(victim_id, None)
        return evicted

    def mark_ended(self, conversation: Conversation) -> None:
        """Make `conversation` the first candidate for eviction among those still remembered."""
        conversation.state = "ended"
        self._ended[conversation.id] = None

    def conversation(self, generation: Generation, conversation_id: str) -> Conversation | None:
        """The conversation with that id created through that generation's API, if remembered."""
        conversation = self.conversations.get(conversation_id)
        return conversation if conversation is not None and conversation.generation is generation else None

    def webhook(self, generation: Generation, webhook_id: str) -> Webhook | None:
        webhook = self.webhooks.get(webhook_id)
        return webhook if webhook is not None and webhook.generation is generation else None

    def channel(self, generation: Generation, channel_id: str) -> Channel | None:
        channel = self.channels.get(channel_id)
        return channel if channel is not None and channel.generation is generation else None

    def webhook_of(self, conversation: Conversation) -> Webhook | None:
        """The webhook events of `conversation` go to: its channel's, now."""
        channel = self.channels.get(conversation.channel_id)
        return self.webhooks.get(channel.webhook_id) if channel is not None else None

    def clear(self) -> None:
        """Forget everything (ids keep counting, so old ids are never reused)."""
        self.webhooks.clear()
        self.channels.clear()
        self.conversations.clear()
        self._ended.clear()


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, as 8x8 timestamps are."""
    return time.time_ns() // 1_000_000


def iso_time(ms: int) -> str:
    """`ms` as an RFC 3339 UTC date-time with milliseconds."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
