"""`connector events tail`: print the ChatEvent records of chat.events, decoded through the registry.

A plain kafka-python consumer with every partition assigned and no group, so tailing never moves
anyone's committed offsets.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

from connector.config import Settings
from connector.schemas import AvroCodec, SchemaError, plain
from connector.topics import read_records

__all__ = ["format_line", "tail"]


def tail(
    settings: Settings,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    timeout_s: float | None = None,
    echo: Callable[[str], None] = print,
    as_json: bool = False,
    ref: str | None = None,
) -> int:
    """Echo each record (of conversation `ref` only, if given) as it comes; stop after `limit` records or
    `timeout_s` idle seconds. Answer the count echoed."""
    return asyncio.run(_tail(settings, from_beginning, limit, timeout_s, echo, as_json, ref))


def format_line(record: dict[str, Any], *, as_json: bool) -> str:
    """One record as a JSON object (timestamps in epoch ms) or as a short human line."""
    fields = plain(record)
    if as_json:
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    when = datetime.datetime.fromtimestamp(fields["timestamp"] / 1000, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    who = fields.get("agent_name") or fields.get("agent_id") or fields.get("sender_type") or ""
    what = fields.get("text") or fields.get("queue_name") or fields.get("activity_name") or fields.get("conversation_state") or ""
    echo = " (echo)" if fields.get("is_echo") else ""
    ref = fields.get("conversation_ref") or f"8x8:{fields.get('conversation_id')}"
    return f"{when} {ref} {fields['event_type']:<19} {who} {what}{echo}".rstrip()


async def _tail(
    settings: Settings,
    from_beginning: bool,
    limit: int | None,
    timeout_s: float | None,
    echo: Callable[[str], None],
    as_json: bool,
    ref: str | None,
) -> int:
    codec = AvroCodec(settings)
    count = 0
    for value in _values(settings, from_beginning, timeout_s):
        try:
            record = await codec.decode("ChatEvent", value)
        except SchemaError as exc:
            echo(json.dumps({"error": str(exc)}) if as_json else f"undecodable record: {exc}")
            continue
        if ref is not None and record.get("conversation_ref") != ref:
            continue
        echo(format_line(record, as_json=as_json))
        count += 1
        if limit is not None and count >= limit:
            break
    return count


def _values(settings: Settings, from_beginning: bool, timeout_s: float | None) -> Iterator[bytes]:
    """Record values of chat.events until `timeout_s` seconds pass without one."""
    for record in read_records(settings, settings.topic_events, from_beginning=from_beginning, timeout_s=timeout_s):
        yield record.value
