"""What the command agent says back: `CommandResult` records, the copies it sends to the DLQ, and the
records that map an 8x8 conversation to its ref, each appended and acknowledged by Kafka.

The record builders are pure; `Outputs` appends what they build and waits for Kafka's ack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram

from connector.appender import Appender, NotDelivered
from connector.command import Command
from connector.config import Settings
from connector.credentials import AUTH_FAILED, Credentials
from connector.eightbyeight import PlatformError
from connector.schemas import AvroCodec
from connector.tracing import kafka_headers, of_headers

__all__ = [
    "CONNECT_ERRORS",
    "DLQ_RECORDS",
    "END_TO_END",
    "ERROR_CODE_HEADER",
    "RESULTS",
    "Outputs",
    "failure",
    "id_record",
    "now_ms",
    "observe_end_to_end",
    "recalled",
    "remembered",
    "result",
    "unreadable",
]

logger = logging.getLogger(__name__)

# The DLQ's error headers: Kafka Connect's names (KIP-298), and the connector's own error code.
CONNECT_ERRORS = "__connect.errors."
ERROR_CODE_HEADER = "connector.error.code"

RESULTS = Counter(
    "connector_command_results_total",
    "Command results published, by command type, status, and whether it re-emits an earlier result.",
    ["command_type", "status", "duplicate"],
)
DLQ_RECORDS = Counter("connector_commands_dlq_total", "Records sent to the command DLQ, by error code.", ["code"])
END_TO_END = Histogram(
    "connector_command_end_to_end_seconds",
    "Time from a command's record timestamp on chat.commands (when it was published) to its result in Kafka, "
    "by command type and status.",
    ["command_type", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def result(command: Command, status: str, generation: str, **fields: Any) -> dict[str, Any]:
    """The CommandResult of `command` (fields: conversation_id, http_status, error_code, error_message, attempts)."""
    return {
        "command_id": command.command_id,
        "conversation_ref": command.ref,
        "command_type": command.kind.value,
        "status": status,
        **_RESULT_DEFAULTS,
        "generation": generation,
        "processed_at": now_ms(),
        **fields,
    }


def failure(command: Command, exc: Exception, generation: str, **fields: Any) -> dict[str, Any]:
    """The FAILED result of `command` that `exc` (an 8x8 refusal, a record of its Kafka refuses for good, else an
    invalid command) ended."""
    if isinstance(exc, PlatformError):
        return result(
            command,
            "FAILED",
            generation,
            http_status=exc.http_status,
            error_code=AUTH_FAILED if exc.http_status == 401 else exc.code,  # the key, token or tenant refused
            error_message=exc.message,
            attempts=exc.attempts,
            **fields,
        )
    if isinstance(exc, NotDelivered):  # a record the command owes that Kafka refuses for good (a transcript too large)
        return result(command, "FAILED", generation, error_code="RECORD_TOO_LARGE", error_message=str(exc), **fields)
    return result(command, "FAILED", generation, error_code="INVALID_COMMAND", error_message=str(exc), **fields)


def unreadable(ref: str, command_id: str, code: str, exc: Exception) -> dict[str, Any]:
    """The FAILED result of a record that is no usable command (its type is unknown)."""
    return {
        "command_id": command_id,
        "conversation_ref": ref,
        "command_type": "UNKNOWN",
        "status": "FAILED",
        **_RESULT_DEFAULTS,
        "error_code": code,
        "error_message": str(exc)[:1000],
        "processed_at": now_ms(),
    }


def remembered(answer: dict[str, Any], offset: int) -> dict[str, Any]:
    """What the table keeps of a result (what is not a default), with the offset of the record it answered."""
    kept = {
        key: value
        for key, value in answer.items()
        if key not in ("conversation_ref", "command_id") and _RESULT_DEFAULTS.get(key, ...) != value
    }
    kept["offset"] = offset
    return kept


def recalled(ref: str, command_id: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The result again from what the table kept."""
    answer = {**_RESULT_DEFAULTS, **stored, "conversation_ref": ref, "command_id": command_id}
    answer.pop("offset", None)
    return answer


def id_record(kind: str, generation: str, ref: str | None, received_at: int) -> dict[str, Any]:
    """A RawWebhook record about an 8x8 id's ref for the event agent (REF_MAPPING, REF_EXPIRED), not a webhook."""
    return {"kind": kind, "generation": generation, "body": b"", "headers": {}, "received_at": received_at, "conversation_ref": ref}


def now_ms() -> int:
    return int(time.time() * 1000)


def observe_end_to_end(answer: dict[str, Any], published_at_s: float) -> None:
    """Time a command's trip, from its record's timestamp (`published_at_s`, epoch seconds) to its result in Kafka now."""
    END_TO_END.labels(answer["command_type"], answer["status"]).observe(max(0.0, time.time() - published_at_s))


class Outputs:
    """Appends the command agent's records (Avro under the connector's schemas) and waits for Kafka's ack.

    Each method returns once Kafka has the record, or raises `NotDelivered` when it refused it for good.
    """

    def __init__(self, settings: Settings, codec: AvroCodec, appender: Appender) -> None:
        self._settings = settings
        self._codec = codec
        self._appender = appender
        self.credentials = Credentials()

    async def result(self, answer: dict[str, Any], *, key: bytes | None = None, duplicate: bool = False) -> None:
        """Publish a CommandResult, keyed by its ref unless `key` says otherwise."""
        answer = {**answer, "duplicate": duplicate}
        record_key = key if key is not None else answer["conversation_ref"].encode()
        await self.emit(self._settings.topic_command_results, record_key, "CommandResult", answer)
        if not duplicate:
            self.credentials.saw(answer)
        RESULTS.labels(answer["command_type"], answer["status"], str(duplicate).lower()).inc()

    async def mapping(self, conversation_id: str, ref: str, generation: str) -> None:
        """Tell the event agent which ref an 8x8 id belongs to (it alone writes the `refs` table)."""
        record = id_record("REF_MAPPING", generation, ref, now_ms())
        await self.emit(self._settings.topic_webhooks_raw, conversation_id.encode(), "RawWebhook", record)

    async def dead_letter(
        self, message: Any, code: str, error_class: str, text: str, *, answer: dict[str, Any] | None = None
    ) -> None:
        """The record, its headers and the error in headers, to the DLQ; its body is left out if the DLQ cannot take it.

        The error headers are Kafka Connect's (KIP-298), so that DLQ tooling made for Connect reads them,
        plus the connector's `connector.error.code`. Logged once at WARNING with the ids of `answer`, the
        FAILED result published for the record.
        """
        headers = [
            (f"{CONNECT_ERRORS}topic", message.topic.encode()),
            (f"{CONNECT_ERRORS}partition", str(message.partition).encode()),
            (f"{CONNECT_ERRORS}offset", str(message.offset).encode()),
            (f"{CONNECT_ERRORS}exception.class.name", error_class.encode()),
            (f"{CONNECT_ERRORS}exception.message", text[:1000].encode("utf-8", "replace")),
            (ERROR_CODE_HEADER, code.encode()),
        ]
        dlq = self._settings.topic_commands_dlq
        try:
            await self._appender.deliver(dlq, message.key, message.value, headers=list(_header_items(message.headers)) + headers)
        except NotDelivered as exc:
            if not exc.too_large:
                raise
            size = len(message.value or b"") + len(message.key or b"")
            logger.warning(
                "%s[%s]@%s: DLQ copy too large (%d bytes); its body and headers are left out",
                message.topic,
                message.partition,
                message.offset,
                size,
            )
            dropped = [
                ("connector.dlq.body.omitted", f"{type(exc.cause).__name__}: {size} bytes".encode()),
                ("connector.source.size", str(size).encode()),
            ]
            await self._appender.deliver(dlq, message.key, None, headers=headers + dropped)
        DLQ_RECORDS.labels(code).inc()
        _log_failure(message, code, text, answer or {}, dlq)

    async def emit(self, topic: str, key: bytes | None, schema: str, record: dict[str, Any]) -> None:
        """Append `record`, Avro-encoded under our registered `schema`, to `topic` (with the running command's
        traceparent), and wait until Kafka has it."""
        await self._appender.deliver(topic, key, self._codec.encode(schema, record), headers=kafka_headers())


# A remembered result keeps only what is not a default, to keep 64 of them per ref small.
_RESULT_DEFAULTS: dict[str, Any] = {
    "conversation_id": None,
    "generation": None,
    "http_status": None,
    "error_code": None,
    "error_message": None,
    "attempts": 0,
    "duplicate": False,
}


def _log_failure(message: Any, code: str, reason: str, answer: dict[str, Any], dlq: str) -> None:
    """One WARNING line per FAILED command and its DLQ record, with the ids as fields."""
    ref = answer.get("conversation_ref") or (message.key or b"").decode("utf-8", "replace")
    ids = {
        "ref": ref,
        "command_id": answer.get("command_id"),
        "conversation_id": answer.get("conversation_id"),
        "error_code": code,
        "reason": reason[:1000],
    }
    trace = of_headers(message.headers)
    if trace:
        ids["traceparent"] = trace
    logger.warning(
        "command %s of %s FAILED: %s: %s (record %s[%s]@%s copied to %s)",
        ids["command_id"] or "(unreadable)", ref, code, ids["reason"], message.topic, message.partition, message.offset, dlq,
        extra=ids,
    )


def _header_items(headers: Any) -> Iterator[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        yield key, value
