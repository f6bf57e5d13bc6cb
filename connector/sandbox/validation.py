"""Request body checks of both generations; each answers the problems found, empty when valid."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from connector.sandbox.problems import ApiError

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_CUSTOMER_PROPERTIES",
    "MAX_HISTORY_MESSAGES",
    "Upload",
    "attachment_upload",
    "check",
    "read_receipt",
    "typing",
    "gateway_conversation",
    "gateway_message",
    "v2_conversation",
    "v2_message",
    "channel",
    "webhook",
    "webhook_verify",
]

MAX_CUSTOMER_PROPERTIES = 30
MAX_HISTORY_MESSAGES = 200
# The sandbox's own bound on one file (8x8 publishes none).
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
_AUTHORS = ("user", "bot")
_USER_FIELDS = ("name", "userId", "email", "phone", "company", "caseId", "language")


def check(problems: list[str]) -> None:
    """Raise the 400 that lists `problems`, if there are any."""
    if problems:
        raise ApiError(400, "Constraint Violation", problems, code="invalid_request")


def v2_conversation(body: dict[str, Any]) -> list[str]:
    """Problems of a v2 create-conversation body (`customer`, though the spec says `user`)."""
    problems = _required_string(body, "channelId")
    customer = body.get("customer")
    if not isinstance(customer, dict):
        problems.append("customer: May not be empty.")
    else:
        if len(customer) > MAX_CUSTOMER_PROPERTIES:
            problems.append(f"customer: At most {MAX_CUSTOMER_PROPERTIES} properties are allowed.")
        problems += [f"customer.{key}: Must be a string." for key, value in customer.items() if not isinstance(value, str)]
        problems += _email(customer, "customer.email")
    problems += _history(body, lambda m, where: _required_string(m, "text", where) + _author(m, "type", where, required=False))
    return problems


def v2_message(body: dict[str, Any]) -> list[str]:
    """Problems of a v2 send-message body."""
    return _required_string(body, "text") + _author(body, "authorType", "", required=False)


def gateway_conversation(body: dict[str, Any]) -> list[str]:
    """Problems of a gateway create-conversation body."""
    problems = _required_string(body, "channelId")
    user = body.get("user")
    if not isinstance(user, dict):
        problems.append("user: May not be empty.")
    else:
        problems += [f"user.{key}: Must be a string." for key in _USER_FIELDS if key in user and not isinstance(user[key], str)]
        problems += _email(user, "user.email")
        extra = user.get("additionalProperties", [])
        if not isinstance(extra, list) or not all(
            isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value", ""), str)
            for item in extra
        ):
            problems.append("user.additionalProperties: Must be a list of {key, value} strings.")
        elif len(extra) > MAX_CUSTOMER_PROPERTIES:
            problems.append(f"user.additionalProperties: At most {MAX_CUSTOMER_PROPERTIES} properties are allowed.")
    assignment = body.get("assignment")
    if assignment is not None and (
        not isinstance(assignment, dict)
        or assignment.get("type", "queue") not in ("queue", "script")
        or not isinstance(assignment.get("id", ""), str)
    ):
        problems.append("assignment: Must be {type: queue|script, id}.")
    problems += _history(body, lambda m, where: gateway_message(m, where))
    return problems


def gateway_message(body: dict[str, Any], where: str = "") -> list[str]:
    """Problems of a gateway message (sent, or in the history)."""
    problems = _author(body, "authorType", where, required=True)
    if "text" in body and not isinstance(body["text"], str):
        problems.append(f"{where}text: Must be a string.")
    for name in ("attachments", "cards"):
        if name in body and not isinstance(body[name], list):
            problems.append(f"{where}{name}: Must be a list.")
    if not any(body.get(name) for name in ("text", "attachments", "cards", "externalProvider")):
        problems.append(f"{where}text: May not be empty.")
    return problems


def typing(body: dict[str, Any]) -> list[str]:
    """Problems of a typing-indicator body (TypingRequest)."""
    return _author(body, "authorType", "", required=True)


def read_receipt(body: dict[str, Any]) -> list[str]:
    """Problems of a read-receipt body (ReadReceiptRequest: authorType and readAt, epoch ms)."""
    problems = _author(body, "authorType", "", required=True)
    read_at = body.get("readAt")
    if not isinstance(read_at, int) or isinstance(read_at, bool) or read_at < 0:
        problems.append("readAt: Must be a time in milliseconds since the epoch.")
    return problems


@dataclass(frozen=True)
class Upload:
    """An attachment upload's parts: the file (name, type, bytes) and the author type."""

    file_name: str
    content_type: str
    data: bytes
    author_type: str


def attachment_upload(content_type: str, body: bytes) -> tuple[list[str], Upload | None]:
    """Problems of an attachment upload (AttachmentUpload: multipart/form-data with an `attachment` file part
    and an optional `authorType` part), and the upload when there are none."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        return ["Content-Type: Must be multipart/form-data with a boundary."], None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart() or message.defects:
        return ["body: Not a well-formed multipart/form-data body."], None
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    problems: list[str] = []
    file = parts.get("attachment")
    if file is None or not file.get_filename():
        return ["attachment: A file part named attachment, with a file name, is required."], None
    data = file.get_payload(decode=True) or b""
    if not data:
        problems.append("attachment: The file is empty.")
    elif len(data) > MAX_ATTACHMENT_BYTES:
        problems.append(f"attachment: At most {MAX_ATTACHMENT_BYTES} bytes.")
    author = parts.get("authorType")
    author_type = author.get_payload(decode=True).decode(errors="replace").strip() if author is not None else "user"
    if author_type not in _AUTHORS:
        problems.append(f"authorType: Must be one of {', '.join(_AUTHORS)}.")
    if problems:
        return problems, None
    return [], Upload(file.get_filename(), file.get_content_type(), data, author_type)


def webhook(body: dict[str, Any], versions: tuple[str, ...]) -> list[str]:
    """Problems of a webhook create or update body.

    Spec flaw: both specs require `notificationVersion` but define the property as `version`;
    either name is accepted.
    """
    problems = _required_string(body, "name", max_length=256) + _uri(body, "uri")
    version = body.get("notificationVersion", body.get("version", versions[-1]))
    if version not in versions:
        problems.append(f"notificationVersion: Must be one of {', '.join(versions)}.")
    return problems


def webhook_verify(body: dict[str, Any]) -> list[str]:
    """Problems of a webhook verify body."""
    return _required_string(body, "version") + _uri(body, "uri")


def channel(body: dict[str, Any]) -> list[str]:
    """Problems of a channel create or update body."""
    problems = _required_string(body, "name", max_length=255) + _required_string(body, "webHookId")
    routing = body.get("routingOptions")
    if not isinstance(routing, dict) or routing.get("type") != "queue" or not isinstance(routing.get("id"), str) or not routing["id"]:
        problems.append("routingOptions: Must be {type: queue, id}.")
    if "type" in body and (not isinstance(body["type"], str) or len(body["type"]) > 25):
        problems.append("type: Must be a channel type.")
    return problems


def _required_string(body: dict[str, Any], name: str, where: str = "", *, max_length: int | None = None) -> list[str]:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        return [f"{where}{name}: May not be empty."]
    if max_length is not None and len(value) > max_length:
        return [f"{where}{name}: At most {max_length} characters."]
    return []


def _author(body: dict[str, Any], name: str, where: str, *, required: bool) -> list[str]:
    if name not in body and not required:
        return []
    if body.get(name) not in _AUTHORS:
        return [f"{where}{name}: Must be one of user, bot."]
    return []


def _email(record: dict[str, Any], name: str) -> list[str]:
    email = record.get("email")
    if isinstance(email, str) and "@" not in email:
        return [f"{name}: Must be an email address."]
    return []


def _uri(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{name}: Must be an http or https URL."]
    return []


def _history(body: dict[str, Any], check_message: Any) -> list[str]:
    if "history" not in body:
        return []
    history = body["history"]
    if not isinstance(history, dict) or not isinstance(history.get("messages"), list):
        return ["history.messages: May not be empty."]
    messages = history["messages"]
    if len(messages) > MAX_HISTORY_MESSAGES:
        return [f"history.messages: At most {MAX_HISTORY_MESSAGES} messages are allowed."]
    problems: list[str] = []
    for index, message in enumerate(messages):
        where = f"history.messages[{index}]."
        problems += check_message(message, where) if isinstance(message, dict) else [f"{where[:-1]}: Must be an object."]
    return problems
