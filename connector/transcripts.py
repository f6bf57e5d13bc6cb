"""The ConversationTranscript record: a conversation read back from 8x8, in one shape for both generations."""

from __future__ import annotations

import json
from typing import Any

from connector.eightbyeight import ReadBack

__all__ = ["record"]


def record(
    ref: str,
    conversation_id: str,
    generation: str,
    reason: str,
    command_id: str | None,
    read: ReadBack,
    now_ms: int,
    *,
    error: str | None = None,
) -> dict[str, Any]:
    """The transcript record of `read` (reason ENDED or REQUESTED), ready for the Avro codec; `error` when it
    could not be read, and `read` is then empty."""
    return {
        "conversation_ref": ref,
        "conversation_id": conversation_id,
        "generation": generation,
        "reason": reason,
        "command_id": command_id,
        "fetched_at": now_ms,
        "status": read.status,
        "messages": read.messages,
        "participants": read.participants,
        "interactions": read.interactions,
        "conversation_json": json.dumps(read.conversation, separators=(",", ":")),
        "error": error,
    }
