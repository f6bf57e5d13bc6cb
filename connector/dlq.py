"""`connector dlq tail` and `connector dlq replay`: read the command DLQ, and send its records back to chat.commands.

A DLQ record is the original command record (key, value, headers) plus the error headers of
`connector.results` (Kafka Connect's `__connect.errors.*` and `connector.error.code`). Replay
republishes the original key, value and headers to chat.commands; with the same command id, a
command the connector had answered is answered again from its table (`duplicate: true`), so
`new_ids` gives each replayed command a new id to have it run again. Like `connector events tail`,
both read with no consumer group: nobody's committed offsets move, and replaying twice sends twice.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from connector.client import DELIVERY_WAIT_S, commands_producer
from connector.config import Settings
from connector.kafka_errors import KafkaAccessError, describe
from connector.results import CONNECT_ERRORS, ERROR_CODE_HEADER
from connector.schemas import AvroCodec, SchemaError
from connector.topics import read_records

__all__ = ["DeadLetter", "Replayed", "replay", "tail"]


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One record of the DLQ: where it is, the original record, and the error headers."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def ref(self) -> str | None:
        """The conversation ref (the record key), if there is one."""
        return self.key.decode("utf-8", "replace") if self.key is not None else None

    @property
    def error(self) -> dict[str, str]:
        """The error headers by their short name: code, exception.class.name, exception.message, topic, ..."""
        found = {}
        for name, value in self.headers:
            if name.startswith(CONNECT_ERRORS):
                found[name.removeprefix(CONNECT_ERRORS)] = value.decode("utf-8", "replace")
            elif name == ERROR_CODE_HEADER:
                found["code"] = value.decode("utf-8", "replace")
        return found

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the command was published with (those the DLQ added left out)."""
        return [(name, value) for name, value in self.headers if not _added_by_dlq(name)]

    def describe(self, command_id: str | None) -> dict[str, Any]:
        """The record as plain JSON values."""
        error = self.error
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "timestamp": self.timestamp_ms,
            "ref": self.ref,
            "command_id": command_id,
            "error_code": error.get("code"),
            "exception_class": error.get("exception.class.name"),
            "exception_message": error.get("exception.message"),
            "source": {"topic": error.get("topic"), "partition": _int(error.get("partition")), "offset": _int(error.get("offset"))},
            "body_omitted": self.value is None,
            "headers": {name: value.decode("utf-8", "replace") for name, value in self.original_headers},
        }


@dataclasses.dataclass
class Replayed:
    """What a replay did: records republished (or that would be, in a dry run) and those it could not send."""

    sent: int = 0
    skipped: int = 0


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
    """Echo each DLQ record (of `ref` only, if given); stop after `limit` records or `timeout_s` idle seconds.
    Answer the count echoed."""
    codec = AvroCodec(settings)
    count = 0
    for letter in _read(settings, from_beginning=from_beginning, timeout_s=timeout_s, to_end=False):
        if ref is not None and letter.ref != ref:
            continue
        fields = letter.describe(_command_id(codec, letter.value))
        echo(json.dumps(fields, ensure_ascii=False, separators=(",", ":")) if as_json else _line(fields))
        count += 1
        if limit is not None and count >= limit:
            break
    return count


def replay(
    settings: Settings,
    *,
    ref: str | None,
    dry_run: bool = False,
    new_ids: bool = False,
    echo: Callable[[str], None] = print,
) -> Replayed:
    """Republish the DLQ's records (of `ref`, or all when None) as they are at the start of the call to chat.commands.

    Original key, value and headers; `new_ids` gives each command a new id (a record that is no
    command is sent unchanged). A record whose body the DLQ could not take is skipped. `dry_run`
    says what would be sent and sends nothing.
    """
    codec = AvroCodec(settings)
    if new_ids:
        codec.start_sync("ConversationCommand")
    producer = None if dry_run else _producer(settings)
    outcome = Replayed()
    try:
        for letter in _read(settings, from_beginning=True, timeout_s=None, to_end=True):
            if ref is not None and letter.ref != ref:
                continue
            where = f"{settings.topic_commands_dlq}[{letter.partition}]@{letter.offset}"
            if letter.value is None:
                echo(f"skipped {where} (ref {letter.ref}): its body was too large for the DLQ")
                outcome.skipped += 1
                continue
            command_id = _command_id(codec, letter.value)
            value, new_id = _with_new_id(codec, letter.value) if new_ids else (letter.value, None)
            what = f"{where} (ref {letter.ref}, command {command_id or 'unreadable'}"
            what += f" as {new_id})" if new_id else ")"
            if producer is not None:
                try:  # the producer says within the wait whether it was delivered: no record goes out after an error
                    sent = producer.send(
                        settings.topic_commands, key=letter.key, value=value, headers=letter.original_headers
                    ).get(timeout=DELIVERY_WAIT_S)
                except KafkaError as exc:
                    raise KafkaAccessError(describe(exc, settings, need=f"Write on Topic {settings.topic_commands}")) from None
                except KeyboardInterrupt:
                    echo(f"interrupted while replaying {what}: it may have reached {settings.topic_commands}")
                    raise
                echo(f"replayed {what} -> {settings.topic_commands}[{sent.partition}]@{sent.offset}")
            else:
                echo(f"would replay {what}")
            outcome.sent += 1
    finally:
        if producer is not None:
            producer.close()
    return outcome


def _read(settings: Settings, *, from_beginning: bool, timeout_s: float | None, to_end: bool) -> Iterator[DeadLetter]:
    """DLQ records until `timeout_s` idle seconds pass, or (`to_end`) up to the end offsets as they were at the start."""
    records = read_records(settings, settings.topic_commands_dlq, from_beginning=from_beginning, timeout_s=timeout_s, to_end=to_end)
    for record in records:
        yield DeadLetter(record.partition, record.offset, record.timestamp, record.key, record.value, tuple(record.headers or ()))


def _producer(settings: Settings) -> KafkaProducer:
    return commands_producer(settings, max_request_size=settings.kafka_max_message_bytes)


def _command_id(codec: AvroCodec, value: bytes | None) -> str | None:
    """The command id of a DLQ record's value, if it is a readable command."""
    try:
        return codec.decode_sync("ConversationCommand", value)["command_id"]
    except Exception:  # no command (SchemaError), or the registry cannot say now: the line goes without the id
        return None


def _with_new_id(codec: AvroCodec, value: bytes) -> tuple[bytes, str | None]:
    """The command re-encoded under a new command id, with the id; unchanged (and None) if it is no command."""
    try:
        command = codec.decode_sync("ConversationCommand", value)
    except SchemaError:
        return value, None
    new_id = str(uuid.uuid4())
    return codec.encode("ConversationCommand", {**command, "command_id": new_id}), new_id


def _added_by_dlq(name: str) -> bool:
    return name.startswith((CONNECT_ERRORS, "connector.error.", "connector.dlq.", "connector.source."))


def _line(fields: dict[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(fields["timestamp"] / 1000, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    source = fields["source"]
    body = " (body omitted)" if fields["body_omitted"] else ""
    return (
        f"{when} {fields['ref']} {fields['command_id'] or '(unreadable)'} {fields['error_code']}: "
        f"{fields['exception_message']} [{source['topic']}[{source['partition']}]@{source['offset']}]{body}"
    )


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None
