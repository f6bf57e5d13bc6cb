"""`connector events tail`: print the ChatEvent records of chat.events, decoded through the registry.

A plain kafka-python consumer with every partition assigned and no group, so tailing never moves
anyone's committed offsets.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from connector.config import Settings
from connector.schemas import AvroCodec, SchemaError

__all__ = ["format_line", "tail"]


def tail(
    settings: Settings,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    timeout_s: float | None = None,
    echo: Callable[[str], None] = print,
    as_json: bool = False,
) -> int:
    """Echo each record as it comes; stop after `limit` records or `timeout_s` idle seconds. Answer the count."""
    return asyncio.run(_tail(settings, from_beginning, limit, timeout_s, echo, as_json))


def format_line(record: dict[str, Any], *, as_json: bool) -> str:
    """One record as a JSON object (timestamps in epoch ms) or as a short human line."""
    plain = {name: _plain(value) for name, value in record.items()}
    if as_json:
        return json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    when = datetime.datetime.fromtimestamp(plain["timestamp"] / 1000, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    who = plain.get("agent_name") or plain.get("agent_id") or plain.get("sender_type") or ""
    what = plain.get("text") or plain.get("queue_name") or plain.get("activity_name") or plain.get("conversation_state") or ""
    echo = " (echo)" if plain.get("is_echo") else ""
    ref = plain.get("conversation_ref") or f"8x8:{plain.get('conversation_id')}"
    return f"{when} {ref} {plain['event_type']:<19} {who} {what}{echo}".rstrip()


async def _tail(
    settings: Settings,
    from_beginning: bool,
    limit: int | None,
    timeout_s: float | None,
    echo: Callable[[str], None],
    as_json: bool,
) -> int:
    codec = AvroCodec(settings)
    count = 0
    for value in _values(settings, from_beginning, timeout_s):
        try:
            record = await codec.decode("ChatEvent", value)
        except SchemaError as exc:
            echo(json.dumps({"error": str(exc)}) if as_json else f"undecodable record: {exc}")
            continue
        echo(format_line(record, as_json=as_json))
        count += 1
        if limit is not None and count >= limit:
            break
    return count


def _values(settings: Settings, from_beginning: bool, timeout_s: float | None) -> Iterator[bytes]:
    """Record values of chat.events until `timeout_s` seconds pass without one."""
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic_events, p) for p in _partitions(consumer, settings.topic_events)]
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        idle_since = time.monotonic()
        while timeout_s is None or time.monotonic() - idle_since < timeout_s:
            batches = consumer.poll(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    idle_since = time.monotonic()
                    yield record.value
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        time.sleep(0.2)
    raise RuntimeError(f"topic {topic} does not exist")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return round(value.timestamp() * 1000)
    return value
