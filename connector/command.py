"""A command from `chat.commands`: the record it is read from and the rules that say whether it runs now.

Pure functions only, so the command agent's decisions are tested without Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.eightbyeight import InvalidCommand, NewConversation
from connector.status import CommandKind, Conversation, Status, check_command

__all__ = ["Command", "new_conversation", "parse_command", "refusal"]


@dataclass(frozen=True)
class Command:
    """A decoded ConversationCommand: its id, ref, kind and the fields of its kind."""

    command_id: str
    ref: str
    kind: CommandKind
    body: dict[str, Any]


def parse_command(record: dict[str, Any], key: str | None) -> Command:
    """The command in a decoded record; InvalidCommand says what is wrong with it."""
    command_id = record.get("command_id") or ""
    ref = record.get("conversation_ref") or ""
    if not command_id.strip():
        raise InvalidCommand("command_id is empty")
    if not ref.strip():
        raise InvalidCommand("conversation_ref is empty")
    if key != ref:
        raise InvalidCommand(f"the record key {key!r} is not the conversation_ref {ref!r}; the key must be the ref")
    name, body = record["command"]
    kind = _KINDS.get(name.rsplit(".", 1)[-1])
    if kind is None:
        raise InvalidCommand(f"unknown command {name}")
    return Command(command_id, ref, kind, body)


def refusal(command: Command, existing: Conversation | None) -> tuple[str, str] | None:
    """Why `command` is refused now (error code, reason), None when it runs.

    The status machine's rule, except for a start whose create never got an 8x8 id (a crash or an
    unknown outcome): that one resumes, looking the conversation up before creating it.
    """
    resuming = (
        command.kind is CommandKind.START_CONVERSATION
        and existing is not None
        and existing.status is Status.CREATING
        and existing.conversation_id is None
    )
    return None if resuming else check_command(existing, command.kind)


def new_conversation(command: Command, default_channel: str) -> NewConversation:
    """The create request of a StartConversation command."""
    customer = command.body["customer"]
    assignment = command.body.get("assignment")
    if isinstance(assignment, tuple):  # a union read with its record name: (name, record)
        assignment = assignment[1]
    return NewConversation(
        ref=command.ref,
        channel_id=command.body.get("channel_id") or default_channel,
        name=customer["name"],
        customer_id=customer.get("customer_id"),
        email=customer.get("email"),
        phone=customer.get("phone"),
        company=customer.get("company"),
        case_id=customer.get("case_id"),
        language=customer.get("language"),
        properties=dict(customer.get("properties") or {}),
        history=[(m["text"], m.get("author_type", "USER").lower()) for m in command.body.get("history") or ()],
        assignment=(assignment["type"].lower(), assignment["id"]) if assignment else None,
    )


_KINDS = {
    "StartConversation": CommandKind.START_CONVERSATION,
    "SendMessage": CommandKind.SEND_MESSAGE,
    "EndConversation": CommandKind.END_CONVERSATION,
    "FetchTranscript": CommandKind.FETCH_TRANSCRIPT,
}
