"""The conversation record kept in the `conversations` table, and the status machine over it.

Pure functions only, so the rules of the 8x8 flow are tested without Kafka. The agents use them:
the command agent (`check_command`, `after_command`), the status agent (`after_event`) and the
event agent, which counts the interactions of each 8x8 conversation (`next_interaction`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CommandKind",
    "Conversation",
    "Interaction",
    "Phase",
    "Status",
    "after_command",
    "after_event",
    "check_command",
    "next_interaction",
]

RECENT_COMMANDS = 64


class Status(str, enum.Enum):
    CREATING = "CREATING"
    QUEUED = "QUEUED"
    AGENT_JOINED = "AGENT_JOINED"
    AGENT_LEFT = "AGENT_LEFT"
    TRANSFERRING = "TRANSFERRING"
    ENDED = "ENDED"
    FAILED = "FAILED"


class CommandKind(str, enum.Enum):
    START_CONVERSATION = "START_CONVERSATION"
    SEND_MESSAGE = "SEND_MESSAGE"
    END_CONVERSATION = "END_CONVERSATION"
    FETCH_TRANSCRIPT = "FETCH_TRANSCRIPT"
    SET_TYPING = "SET_TYPING"
    MARK_READ = "MARK_READ"


@dataclass(frozen=True)
class Conversation:
    """What the connector knows of one conversation, by the enterprise's ref."""

    ref: str
    status: Status = Status.CREATING
    conversation_id: str | None = None
    generation: str | None = None
    channel_id: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    queue_id: str | None = None
    queue_name: str | None = None
    interaction_count: int = 0
    created_at: int = 0
    updated_at: int = 0
    agent_left_at: int | None = None
    ended_at: int | None = None
    last_customer_message_at: int | None = None
    error: str | None = None
    # The SendMessage whose 8x8 call may have been made, with no outcome recorded yet: its command id
    # and when it started (a replay looks for the message on 8x8 before sending it again).
    sending: str | None = None
    sending_at: int | None = None
    # command id -> the CommandResult dict last emitted for it (bounded, oldest first)
    recent_commands: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Flat, not dataclasses.asdict (recursive, and costly on the hot path): every field is a scalar
        # but recent_commands, whose results are flat dicts of scalars; copied so the caller may change them.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["status"] = self.status.value
        data["recent_commands"] = {key: dict(result) for key, result in self.recent_commands.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Conversation":
        known = _FIELD_SET
        values = {key: value for key, value in data.items() if key in known}
        values["status"] = Status(values.get("status", Status.CREATING))
        return cls(**values)

    def remember(self, command_id: str, result: dict[str, Any]) -> "Conversation":
        """This conversation with the result of `command_id` remembered (oldest forgotten past the bound);
        a send intent of that command is settled by it."""
        recent = dict(self.recent_commands)
        recent.pop(command_id, None)
        recent[command_id] = result
        while len(recent) > RECENT_COMMANDS:
            recent.pop(next(iter(recent)))
        if self.sending == command_id:
            return dataclasses.replace(self, recent_commands=recent, sending=None, sending_at=None)
        return dataclasses.replace(self, recent_commands=recent)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Conversation))
_FIELD_SET = frozenset(_FIELD_NAMES)


def check_command(conversation: Conversation | None, kind: CommandKind) -> tuple[str, str] | None:
    """Why `kind` makes no sense for this conversation now, as an error code and words a person understands;
    None if it does."""
    if conversation is not None and conversation.status is Status.ENDED:
        if kind is CommandKind.START_CONVERSATION:
            return "ENDED", "this conversation ref was already used for a conversation that has ended; use a new ref"
        if kind is CommandKind.FETCH_TRANSCRIPT:
            return None
        return "ENDED", "the conversation has already ended"
    if kind is CommandKind.START_CONVERSATION:
        if conversation is None or conversation.status is Status.FAILED:
            return None
        return "ALREADY_ACTIVE", f"a conversation is already active for this ref (status {conversation.status.value})"
    if conversation is None or conversation.status is Status.FAILED and conversation.conversation_id is None:
        return "NOT_STARTED", "no conversation was started for this ref"
    if conversation.conversation_id is None:
        return "STILL_CREATING", "the conversation is still being created"
    return None


def after_command(conversation: Conversation | None, kind: CommandKind, now: int, **facts: Any) -> Conversation:
    """The conversation after `kind` succeeded at 8x8 (facts: conversation_id, generation, channel_id, ref)."""
    if kind is CommandKind.START_CONVERSATION:
        base = conversation or Conversation(ref=facts["ref"], created_at=now)
        return dataclasses.replace(
            base,
            status=Status.QUEUED if base.status in (Status.CREATING, Status.FAILED) else base.status,
            conversation_id=facts.get("conversation_id", base.conversation_id),
            generation=facts.get("generation", base.generation),
            channel_id=facts.get("channel_id", base.channel_id),
            interaction_count=max(base.interaction_count, 1),
            created_at=base.created_at or now,
            updated_at=now,
            error=None,
        )
    assert conversation is not None
    if kind is CommandKind.SEND_MESSAGE:
        if conversation.status is Status.AGENT_LEFT:
            # A customer message after the agent left opens a new interaction, queued again.
            return dataclasses.replace(
                conversation,
                status=Status.QUEUED,
                agent_id=None,
                agent_name=None,
                agent_left_at=None,
                interaction_count=conversation.interaction_count + 1,
                last_customer_message_at=now,
                updated_at=now,
            )
        return dataclasses.replace(conversation, last_customer_message_at=now, updated_at=now)
    if kind is CommandKind.END_CONVERSATION:
        return dataclasses.replace(conversation, status=Status.ENDED, ended_at=now, updated_at=now)
    return conversation


def after_event(conversation: Conversation, event_type: str, now: int, **facts: Any) -> Conversation:
    """The conversation after a normalised ChatEvent of `event_type` (facts: agent_id/name, queue_id/name)."""
    if conversation.status in (Status.ENDED, Status.FAILED):
        return conversation
    if event_type == "QUEUED":
        return dataclasses.replace(
            conversation,
            status=Status.TRANSFERRING if conversation.status is Status.TRANSFERRING else Status.QUEUED,
            queue_id=facts.get("queue_id") or conversation.queue_id,
            queue_name=facts.get("queue_name") or conversation.queue_name,
            updated_at=now,
        )
    if event_type == "AGENT_JOINED":
        return dataclasses.replace(
            conversation,
            status=Status.AGENT_JOINED,
            agent_id=facts.get("agent_id"),
            agent_name=facts.get("agent_name"),
            agent_left_at=None,
            updated_at=now,
        )
    if event_type == "TRANSFER":
        return dataclasses.replace(conversation, status=Status.TRANSFERRING, updated_at=now)
    if event_type == "AGENT_LEFT":
        if conversation.status is Status.TRANSFERRING:
            # A transfer makes the next agent-left not an end: another agent will join.
            return dataclasses.replace(conversation, agent_id=None, agent_name=None, updated_at=now)
        return dataclasses.replace(
            conversation, status=Status.AGENT_LEFT, agent_id=None, agent_name=None, agent_left_at=now, updated_at=now
        )
    return conversation


class Phase(str, enum.Enum):
    """Where the current interaction of a conversation is, as far as its events tell."""

    OPEN = "OPEN"  # queued, or with an agent
    TRANSFERRING = "TRANSFERRING"  # a TRANSFER since the last AGENT_JOINED: the next agent-left is not an end
    LEFT = "LEFT"  # the agent left, not in a transfer: the next QUEUED or AGENT_JOINED opens a new interaction


@dataclass(frozen=True)
class Interaction:
    """Which 8x8 interaction of its conversation an event belongs to (1 for the first), and its phase."""

    count: int = 1
    phase: Phase = Phase.OPEN


def next_interaction(interaction: Interaction | None, event_type: str) -> Interaction:
    """The interaction after a normalised event of `event_type`, from the one before (None: the conversation's
    first event, which belongs to the first). The same rules as the status machine: a new interaction starts
    when the conversation is queued or joined again after the agent left, and a transfer does not end one."""
    current = interaction or Interaction()
    if event_type in ("QUEUED", "AGENT_JOINED"):
        if current.phase is Phase.LEFT:
            return Interaction(current.count + 1, Phase.OPEN)
        if event_type == "AGENT_JOINED":
            return dataclasses.replace(current, phase=Phase.OPEN)
        return current  # queued while open or in a transfer: no change
    if event_type == "TRANSFER":
        return dataclasses.replace(current, phase=Phase.TRANSFERRING)
    if event_type == "AGENT_LEFT" and current.phase is not Phase.TRANSFERRING:
        return dataclasses.replace(current, phase=Phase.LEFT)
    return current
