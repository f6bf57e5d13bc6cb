"""A command from `chat.commands`: the record it is read from and the rules that say whether it runs now.

Pure functions only, so the command agent's decisions are tested without Kafka.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from connector.eightbyeight import Card, File, InvalidCommand, NewConversation, Platform
from connector.eightbyeight.base import ATTACHMENTS, CARDS, READ_RECEIPTS, TYPING
from connector.conversation import CommandKind, Conversation, Status, check_command

__all__ = ["Command", "Message", "message_of", "new_conversation", "parse_command", "refusal", "unsupported"]


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
    unknown outcome): that one resumes, looking the conversation up before creating it. Its status
    may have moved on from CREATING meanwhile: the conversation's events reach the table too, and
    after a crash between the create and its result they are read again.
    """
    resuming = (
        command.kind is CommandKind.START_CONVERSATION
        and existing is not None
        and existing.status not in (Status.ENDED, Status.FAILED)
        and existing.conversation_id is None
    )
    return None if resuming else check_command(existing, command.kind)


def unsupported(command: Command, platform: Platform) -> tuple[str, str] | None:
    """UNSUPPORTED_BY_GENERATION when the command needs what the configured 8x8 generation does not have."""
    missing = [feature for feature in _needs(command) if feature not in platform.features]
    if not missing:
        return None
    return "UNSUPPORTED_BY_GENERATION", f"{platform.generation} has no {' and no '.join(missing)}; nothing was sent to 8x8"


@dataclass(frozen=True)
class Message:
    """What a SendMessage sends: text, author, the files it carries, those to fetch first (name, type, URL), cards."""

    text: str
    author_type: str
    files: tuple[File, ...] = ()
    to_fetch: tuple[tuple[str, str, str], ...] = ()
    cards: tuple[Card, ...] = ()


def message_of(command: Command, max_file_bytes: int) -> Message:
    """The message of a SendMessage command; InvalidCommand names the attachment or card that is wrong."""
    body = command.body
    files: list[File] = []
    to_fetch: list[tuple[str, str, str]] = []
    for index, attachment in enumerate(body.get("attachments") or ()):
        where = f"attachments[{index}]"
        name, content_type, data, url = (attachment.get(k) for k in ("file_name", "content_type", "data", "url"))
        if not name or not content_type:
            raise InvalidCommand(f"{where}: file_name and content_type may not be empty")
        if (data is None) == (url is None):
            raise InvalidCommand(f"{where}: give the file's data or its url, not both, not neither")
        if data is not None:
            if len(data) > max_file_bytes:
                raise InvalidCommand(f"{where}: {len(data)} bytes; CONNECTOR_COMMAND_ATTACHMENT_MAX_BYTES is {max_file_bytes}")
            files.append(File(name, content_type, data))
        elif urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise InvalidCommand(f"{where}: url {url!r} is not an http(s) URL")
        else:
            to_fetch.append((name, content_type, url))
    cards: list[Card] = []
    for index, card in enumerate(body.get("cards") or ()):
        try:
            content = json.loads(card["content_json"])
        except ValueError as exc:
            raise InvalidCommand(f"cards[{index}].content_json is not JSON: {exc}") from None
        if not isinstance(content, dict):
            raise InvalidCommand(f"cards[{index}].content_json is not a JSON object")
        cards.append(Card(card["content_type"], content))
    author_type = body.get("author_type", "USER").lower()
    return Message(body["text"], author_type, tuple(files), tuple(to_fetch), tuple(cards))


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
    "SetTyping": CommandKind.SET_TYPING,
    "MarkRead": CommandKind.MARK_READ,
}


def _needs(command: Command) -> list[str]:
    """The features of `Platform.features` a command needs."""
    if command.kind is CommandKind.SET_TYPING:
        return [TYPING]
    if command.kind is CommandKind.MARK_READ:
        return [READ_RECEIPTS]
    if command.kind is CommandKind.SEND_MESSAGE:
        return [feature for feature, key in ((ATTACHMENTS, "attachments"), (CARDS, "cards")) if command.body.get(key)]
    return []
