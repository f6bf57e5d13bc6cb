"""8x8 webhook events of both generations into `ChatEvent` records: pure, no Kafka, no Faust.

The body is parsed once (`parse`) and the parsed event is what `normalise` and `event_key` read;
the edge keys chat.webhooks.raw with `event_key` and `event_id_of`. Gateway messages' attachments
and cards, ACTIVITY's typing, read receipts and card or quick-reply actions, and
CONVERSATION_UPDATE's state, assignment and channel are fields of their own; everything else 8x8 sends is kept in `raw_json` (unknown types as `UNKNOWN`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from connector.config import Generation

__all__ = ["NormaliseError", "attachments", "cards", "epoch_ms", "event_id_of", "event_key", "is_echo", "normalise", "parse", "text"]

V2 = Generation.CHAT_API_V2.value


class NormaliseError(ValueError):
    """A webhook body that is not a JSON object."""


def event_id_of(headers: dict[str, str], body: bytes) -> str:
    """x-8x8-event-id; without it (verification off), a digest of the body so identical retries still match."""
    return headers.get("x-8x8-event-id") or "sha256:" + hashlib.sha256(body).hexdigest()


def event_key(event: dict[str, Any], event_id: str) -> str:
    """The chat.webhooks.raw key of a parsed webhook event: its 8x8 conversation id, else the event id."""
    conversation_id = event.get("conversationId")
    if isinstance(conversation_id, (int, float)) and not isinstance(conversation_id, bool):
        return str(conversation_id)  # 8x8 ids are sometimes numeric
    return conversation_id if isinstance(conversation_id, str) and conversation_id else event_id


def parse(body: bytes) -> dict[str, Any]:
    """The webhook body as a JSON object; NormaliseError says why it is not one."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise NormaliseError(f"body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise NormaliseError("body is not a JSON object")
    return event


def is_echo(event: dict[str, Any]) -> bool:
    """A gateway MESSAGE that echoes a message the connector itself sent (8x8 sends one to every participant)."""
    data = event.get("data")
    return event.get("eventType") == "MESSAGE" and isinstance(data, dict) and data.get("isEcho") is True


def normalise(
    event: dict[str, Any],
    raw_json: str,
    *,
    generation: str,
    event_id: str,
    received_at: int,
    tenant_id: str | None = None,
    conversation_ref: str | None = None,
) -> dict[str, Any]:
    """The ChatEvent record of one parsed webhook event of either generation; `raw_json` is its body as received."""
    raw_type = text(event.get("eventType")) or ""
    record: dict[str, Any] = {
        **_NULLS,
        "event_id": event_id,
        "event_type": "UNKNOWN",
        "raw_event_type": raw_type,
        "generation": generation,
        "conversation_id": text(event.get("conversationId")),
        "conversation_ref": conversation_ref,
        "interaction_count": None,  # the event agent's to set: it counts the interactions of each conversation
        "timestamp": epoch_ms(event.get("timestamp")) or received_at,
        "received_at": received_at,
        "tenant_id": tenant_id,
        "is_echo": False,
        "raw_json": raw_json,
        "attachments": [],
        "cards": [],
        "activity_user_ids": [],
    }
    data = event.get("data")
    if generation == V2 or not isinstance(data, dict):
        record.update(_v2_fields(raw_type, event))
    else:
        record.update(_gateway_fields(raw_type, data))
    return record


# Every optional scalar ChatEvent field, so that each record names all of them.
_NULLS = dict.fromkeys(
    (
        "agent_id", "agent_name", "queue_id", "queue_name", "text", "sender_id", "sender_type", "member_type",
        "member_change", "attachments_json", "cards_json", "activity_name", "activity_value_json",
        "conversation_state", "assignment_type", "assignment_id", "assignment_resource_id", "message_id",
        "typing", "read_at", "action_card_id", "action_title", "action_data_json", "channel_id", "msisdn",
    )
)


def _v2_fields(raw_type: str, event: dict[str, Any]) -> dict[str, Any]:
    agent = {"agent_id": text(event.get("agentId")), "agent_name": text(event.get("agentName"))}
    if raw_type == "QUEUED":
        return {"event_type": "QUEUED", "queue_id": text(event.get("queueId")), "queue_name": text(event.get("queueName"))}
    if raw_type in ("AGENT_JOINED", "AGENT_LEFT"):
        return {"event_type": raw_type, **agent}
    if raw_type == "TRANSFER":
        return {"event_type": "TRANSFER"}
    if raw_type == "TEXT":
        sender_type = (text(event.get("messageType")) or "agent").lower()
        return {
            "event_type": "MESSAGE",
            "text": text(event.get("message")),
            "sender_type": sender_type,
            "sender_id": agent["agent_id"],
            "message_id": text(event.get("messageId")),
            **agent,
        }
    return {}


def _gateway_fields(raw_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if raw_type == "QUEUED":
        return {"event_type": "QUEUED", "queue_id": text(data.get("queueId")), "queue_name": text(data.get("queueName"))}
    if raw_type == "MEMBERS_CHANGED":
        member_type, change = text(data.get("memberType")), text(data.get("change"))
        fields = {"event_type": "MEMBERS_CHANGED", "member_type": member_type, "member_change": change}
        if member_type == "agent" and change in ("joined", "left"):
            fields.update(event_type="AGENT_JOINED" if change == "joined" else "AGENT_LEFT", agent_id=text(data.get("id")))
        return fields
    if raw_type == "TRANSFER":
        return {"event_type": "TRANSFER"}
    if raw_type == "MESSAGE":
        return _message(data)
    if raw_type == "CONVERSATION_UPDATE":
        assignment = _object(data.get("assignment"))
        return {
            "event_type": "CONVERSATION_UPDATE",
            "conversation_state": text(data.get("state")),
            "assignment_type": text(assignment.get("type")),
            "assignment_id": text(assignment.get("id")),
            "assignment_resource_id": text(assignment.get("resourceId")),
            "channel_id": text(data.get("channel")),
            "msisdn": text(data.get("msisdn")),
        }
    if raw_type == "ACTIVITY":
        return {
            "event_type": "ACTIVITY",
            "activity_name": text(data.get("name")),
            "activity_value_json": _json_or_none(data.get("value")),
            **_activity(text(data.get("name")) or "", data.get("value")),
        }
    return {}


def _message(data: dict[str, Any]) -> dict[str, Any]:
    sender = _object(data.get("sender"))
    sender_type = text(sender.get("type"))
    return {
        "event_type": "MESSAGE",
        "message_id": text(data.get("id") or data.get("messageId")),
        "text": text(data.get("text")),
        "sender_id": text(sender.get("id")),
        "sender_type": sender_type,
        "agent_id": text(sender.get("id")) if sender_type == "agent" else None,
        "is_echo": data.get("isEcho") is True,
        "attachments_json": _json_or_none(data.get("attachments")),
        "cards_json": _json_or_none(data.get("cards")),
        "attachments": attachments(data.get("attachments")),
        "cards": cards(data.get("cards")),
    }


def _activity(name: str, value: Any) -> dict[str, Any]:
    """The fields of the ACTIVITY names the connector knows; others keep only their name and JSON value."""
    value = _object(value)
    users = [user for user in (text(u) for u in value.get("users") or ()) if user] if isinstance(value.get("users"), list) else []
    if name == "typing":
        return {"typing": bool(users), "activity_user_ids": users}
    if name == "read-receipts":
        return {"activity_user_ids": users, "read_at": epoch_ms(value.get("readAt"))}
    if name in ("adaptiveCard/action", "quickReply/action"):
        data = value.get("data", value)
        return {
            "action_card_id": text(value.get("cardId") or value.get("id")),
            "action_title": text(value.get("title")),
            "action_data_json": _json_or_none(data),
        }
    return {}


def attachments(value: Any) -> list[dict[str, Any]]:
    """The attachments of a Chat Gateway message (webhook or read back) as the records carry them."""
    return [
        {
            "attachment_id": text(item.get("id")),
            "file_name": text(item.get("fileName")),
            "content_type": text(item.get("type")),
            "url": text(item.get("preSignedUrl")),
        }
        for item in _objects(value)
    ]


def cards(value: Any) -> list[dict[str, Any]]:
    """The cards of a Chat Gateway message (webhook or read back) as the records carry them, content as JSON text."""
    return [
        {
            "card_id": text(item.get("id")),
            "content_type": text(item.get("contentType")),
            "content_json": _json_or_none(item.get("content")),
        }
        for item in _objects(value)
    ]


def text(value: Any) -> str | None:
    """A string field from what 8x8 sent: strings as they are, numbers as their text (8x8 ids are sometimes
    numeric), anything else None. The adapters read 8x8's answers with it too."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def epoch_ms(value: Any) -> int | None:
    """Milliseconds since the epoch from 8x8's timestamps (ms numbers, or ISO 8601 text), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


