"""What the publishers send and answer: command bodies and values, and the types of their API.

`connector.client` (kafka-python) and `connector.async_client` (aiokafka) publish the same records.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import mimetypes
import os
import pathlib
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connector.schemas import AvroCodec, plain

__all__ = [
    "Attachment",
    "CommandResult",
    "PublishError",
    "Started",
    "encode_command",
    "message_body",
    "start_body",
]

NAMESPACE = "io.kafka8x8.chat"


@dataclasses.dataclass(frozen=True)
class Attachment:
    """A file for a SendMessage (Chat Gateway): its bytes, or a URL the connector fetches them from."""

    file_name: str
    content_type: str
    data: bytes | None = None
    url: str | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Attachment:
        """The file at `path`, its type guessed from its name."""
        path = pathlib.Path(path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path.name, content_type, data=path.read_bytes())


class PublishError(Exception):
    """Kafka did not take one or more commands; nothing says they were published."""


class Started(str):
    """The StartConversation's command id; `message_id` is that of the first message sent with it, if any."""

    message_id: str | None = None

    def __new__(cls, command_id: str, message_id: str | None = None) -> Started:
        started = super().__new__(cls, command_id)
        started.message_id = message_id
        return started

    @property
    def command_ids(self) -> list[str]:
        """Both ids in publishing order (the start's alone when no text was sent)."""
        return [str(self)] + ([self.message_id] if self.message_id else [])


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """The outcome of one command, as the connector published it to chat.command-results."""

    command_id: str
    conversation_ref: str
    command_type: str  # START_CONVERSATION, SEND_MESSAGE, END_CONVERSATION, FETCH_TRANSCRIPT, SET_TYPING, MARK_READ or UNKNOWN
    status: str  # SUCCEEDED or FAILED
    processed_at: datetime.datetime
    conversation_id: str | None = None
    generation: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    duplicate: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CommandResult:
        """The result from a decoded CommandResult record (fields a later schema adds are left out)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (processed_at in epoch milliseconds)."""
        return plain(dataclasses.asdict(self))


def start_body(
    name: str,
    customer_id: str | None,
    email: str | None,
    phone: str | None,
    company: str | None,
    case_id: str | None,
    language: str | None,
    properties: Mapping[str, str] | None,
    history: Iterable[tuple[str, str]],
    channel_id: str | None,
    assignment: tuple[str, str] | None,
) -> dict[str, Any]:
    """The body of a StartConversation."""
    customer = {
        "name": name,
        "customer_id": customer_id,
        "email": email,
        "phone": phone,
        "company": company,
        "case_id": case_id,
        "language": language,
        "properties": dict(properties or {}),
    }
    return {
        "customer": customer,
        "channel_id": channel_id,
        "assignment": {"type": assignment[0].upper(), "id": assignment[1]} if assignment else None,
        "history": [{"text": t, "author_type": a.upper()} for t, a in history],
    }


def message_body(
    text: str, author_type: str, attachments: Sequence[Attachment] = (), cards: Sequence[tuple[str, Mapping[str, Any]]] = ()
) -> dict[str, Any]:
    """The body of a SendMessage."""
    return {
        "text": text,
        "author_type": author_type.upper(),
        "attachments": [dataclasses.asdict(attachment) for attachment in attachments],
        "cards": [{"content_type": kind, "content_json": json.dumps(content)} for kind, content in cards],
    }


def encode_command(codec: AvroCodec, ref: str, kind: str, body: Mapping[str, Any], command_id: str | None) -> tuple[str, bytes]:
    """The command id (a new UUID unless given) and the wire-format value of a ConversationCommand."""
    command_id = command_id or str(uuid.uuid4())
    record = {
        "command_id": command_id,
        "conversation_ref": ref,
        "created_at": int(time.time() * 1000),
        "command": (f"{NAMESPACE}.{kind}", dict(body)),
    }
    return command_id, codec.encode("ConversationCommand", record)
