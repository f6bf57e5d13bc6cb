"""Avro schemas of the topics and their Confluent wire format (magic 0, 4-byte schema id, body).

The `.avsc` files live in `schemas/` (shipped as `connector._avsc`). Each is registered under the
TopicNameStrategy subject `<topic>-value`. Encoding uses the id obtained at registration; decoding
resolves the writer's schema by id (cached) against ours, so records written by older or newer
compatible schema versions read fine. `connector schemas register` also sets each subject's
compatibility (`COMPATIBILITY`). With `CONNECTOR_SCHEMA_REGISTRY_AUTO_REGISTER=false` nothing is
registered: the schemas are looked up, and a missing one is a `SchemaMissing` naming its subject.
Unions of records are written and read with their names
(fastavro's tuple notation) where a union has more than one record, because a dict alone cannot say which command it is.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import struct
import time
from functools import lru_cache
from importlib import resources
from typing import Any, NoReturn

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient, SchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from connector.config import Settings

__all__ = [
    "COMPATIBILITY",
    "SCHEMA_NAMES",
    "AvroCodec",
    "RegistryUnavailable",
    "SchemaError",
    "SchemaMissing",
    "async_registry",
    "check_registered",
    "load_schema",
    "plain",
    "register_all",
    "subjects",
    "sync_registry",
]

logger = logging.getLogger(__name__)

SCHEMA_NAMES = ("ConversationCommand", "CommandResult", "ChatEvent", "ConversationTranscript", "RawWebhook")
MAGIC_BYTE = 0
# Each subject's compatibility level. chat.commands is read by the connector and written by others:
# BACKWARD, so that the connector is upgraded first and reads both older and newer commands. The
# topics the connector writes are read by consumers that upgrade on their own schedule (FORWARD:
# old readers read new records) and by the connector itself (results read back after a crash,
# chat.webhooks.raw and chat.events by its agents: BACKWARD), hence FULL.
COMPATIBILITY = {
    "ConversationCommand": "BACKWARD",
    "CommandResult": "FULL",
    "ChatEvent": "FULL",
    "ConversationTranscript": "FULL",
    "RawWebhook": "FULL",
}


class SchemaError(ValueError):
    """Bytes that are not a record of the expected schema (the reason says why)."""


class SchemaMissing(Exception):
    """A schema is not registered and CONNECTOR_SCHEMA_REGISTRY_AUTO_REGISTER=false forbids registering it."""


class RegistryUnavailable(Exception):
    """The registry could not say what a schema id is now (network, 5xx, auth): worth asking again."""


# How long an id the registry said does not exist is remembered, and how many such ids at most.
_UNKNOWN_TTL_S = 300.0
_UNKNOWN_MAX = 10_000


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` as written in `schemas/<name>.avsc`."""
    text = resources.files("connector._avsc").joinpath(f"{name}.avsc").read_text()
    return json.loads(text)


def subjects(settings: Settings) -> dict[str, str]:
    """Schema name -> registry subject (TopicNameStrategy: `<topic>-value`)."""
    return {
        "ConversationCommand": f"{settings.topic_commands}-value",
        "CommandResult": f"{settings.topic_command_results}-value",
        "ChatEvent": f"{settings.topic_events}-value",
        "ConversationTranscript": f"{settings.topic_transcripts}-value",
        "RawWebhook": f"{settings.topic_webhooks_raw}-value",
    }


def sync_registry(settings: Settings) -> SchemaRegistryClient:
    """A blocking registry client, for the CLI and enterprise code."""
    return _with_tls(
        SchemaRegistryClient(settings.schema_registry_url, auth=_auth(settings), timeout=httpx.Timeout(10.0)), settings
    )


def async_registry(settings: Settings) -> AsyncSchemaRegistryClient:
    """A non-blocking registry client, for the worker."""
    return _with_tls(
        AsyncSchemaRegistryClient(settings.schema_registry_url, auth=_auth(settings), timeout=httpx.Timeout(10.0)),
        settings,
    )


def register_all(settings: Settings) -> dict[str, tuple[int, str]]:
    """Set each subject's compatibility, then register its schema (idempotent); subject -> (schema id, level)."""
    client = sync_registry(settings)
    registered = {}
    for name, subject in subjects(settings).items():
        client.update_compatibility(COMPATIBILITY[name], subject)
        registered[subject] = (client.register(subject, AvroSchema(load_schema(name))), COMPATIBILITY[name])
    return registered


def check_registered(settings: Settings) -> None:
    """In look-up-only mode, SchemaMissing naming every subject that lacks our schema; else nothing to check."""
    if settings.schema_registry_auto_register:
        return
    client = sync_registry(settings)
    missing = [
        subject for name, subject in subjects(settings).items() if client.check_version(subject, AvroSchema(load_schema(name))) is None
    ]
    if missing:
        raise SchemaMissing(_missing(settings, missing))


class AvroCodec:
    """Encodes and decodes the connector's records in the Confluent wire format.

    `await codec.start()` registers (or looks up) our schemas; it is idempotent and cheap once done,
    so every agent and view awaits it before its first record. After that `encode` is a pure
    in-memory call. `decode` fetches an unknown writer schema from the registry once per id.
    Blocking code (the CLI, `connector.client`) uses `start_sync` and `decode_sync` instead.
    """

    def __init__(self, settings: Settings, registry: AsyncSchemaRegistryClient | None = None) -> None:
        self._settings = settings
        self._registry = registry or async_registry(settings)
        self._ids: dict[str, int] = {}
        self._parsed = {name: fastavro.parse_schema(load_schema(name)) for name in SCHEMA_NAMES}
        self._writers: dict[int, Any] = {}
        self._unknown: dict[int, tuple[float, str]] = {}  # id -> (when, why it is no Avro schema of ours)
        self._lock = asyncio.Lock()

    async def start(self, *names: str) -> None:
        """Register our schemas `names` (all if none), or find them registered, and remember their ids, once."""
        if names and all(name in self._ids for name in names):
            return  # the edge asks for RawWebhook on every request: no lock once it is known
        async with self._lock:
            if any(name not in self._ids for name in names or SCHEMA_NAMES):
                await self._register(names)

    def start_sync(self, *names: str) -> None:
        """Register (or look up) the schemas `names` (all if none) with a blocking client."""
        client = sync_registry(self._settings)
        for name, subject in subjects(self._settings).items():
            if name not in self._ids and (not names or name in names):
                schema = AvroSchema(load_schema(name))
                if self._settings.schema_registry_auto_register:
                    self._remember(name, client.register(subject, schema))
                else:
                    self._remember(name, self._found(subject, client.check_version(subject, schema)))

    async def _register(self, names: tuple[str, ...]) -> None:
        for name, subject in subjects(self._settings).items():
            if name in self._ids or (names and name not in names):
                continue
            schema = AvroSchema(load_schema(name))
            if self._settings.schema_registry_auto_register:
                self._remember(name, await self._registry.register(subject, schema))
            else:
                self._remember(name, self._found(subject, await self._registry.check_version(subject, schema)))

    def _found(self, subject: str, version: Any) -> int:
        """The id of a looked-up schema; SchemaMissing when the registry does not have it."""
        if version is None:
            raise SchemaMissing(_missing(self._settings, [subject]))
        return version.schema_id

    def _remember(self, name: str, schema_id: int) -> None:
        self._ids[name] = schema_id
        self._writers[schema_id] = self._parsed[name]

    def schema_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise RuntimeError(f"schema {name} is not registered yet: call AvroCodec.start() first") from None

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """The record in wire format under our registered schema `name`."""
        buffer = io.BytesIO()
        buffer.write(struct.pack(">bI", MAGIC_BYTE, self.schema_id(name)))
        fastavro.schemaless_writer(buffer, self._parsed[name], record)
        return buffer.getvalue()

    async def decode(self, name: str, data: bytes | None) -> dict[str, Any]:
        """The record in `data`, read as our schema `name`.

        SchemaError when the bytes are not such a record (for good); RegistryUnavailable when the
        writer's schema could not be fetched now (the caller waits and asks again).
        """
        schema_id = _schema_id_of(data)
        writer = self._writers.get(schema_id)
        if writer is None:
            self._check_unknown(schema_id)
            try:
                schema = await self._registry.get_by_id(schema_id)
            except Exception as exc:  # the registry client raises several kinds
                schema = self._refused(schema_id, exc)
            writer = self._keep_writer(schema_id, schema)
        return self._read(name, writer, data)  # type: ignore[arg-type]

    async def decode_waiting(self, name: str, data: bytes | None) -> dict[str, Any]:
        """Like `decode`, but while the registry is unavailable it waits and asks again (the stream waits)."""
        delay = 0.5
        while True:
            try:
                return await self.decode(name, data)
            except RegistryUnavailable as exc:
                logger.warning("%s; asking again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def decode_sync(self, name: str, data: bytes | None) -> dict[str, Any]:
        """Like `decode`, fetching an unknown writer schema with a blocking client."""
        schema_id = _schema_id_of(data)
        writer = self._writers.get(schema_id)
        if writer is None:
            self._check_unknown(schema_id)
            try:
                schema = sync_registry(self._settings).get_by_id(schema_id)
            except Exception as exc:  # the registry client raises several kinds
                schema = self._refused(schema_id, exc)
            writer = self._keep_writer(schema_id, schema)
        return self._read(name, writer, data)  # type: ignore[arg-type]

    def _check_unknown(self, schema_id: int) -> None:
        """SchemaError at once for an id the registry refused lately, without asking it again."""
        known = self._unknown.get(schema_id)
        if known is not None and time.monotonic() - known[0] < _UNKNOWN_TTL_S:
            raise SchemaError(known[1])

    def _refused(self, schema_id: int, exc: Exception) -> NoReturn:
        """Sort a failed look-up: no answer (network, an HTTP error, an unreadable body) may pass; a schema the client could not
        build from the answer (Protobuf, broken Avro) is final."""
        if not isinstance(exc, (httpx.HTTPError, ClientError, OSError, asyncio.TimeoutError, json.JSONDecodeError)):
            self._not_avro(schema_id, f"schema id {schema_id} is not an Avro schema: {type(exc).__name__}: {exc}")
        http_code = getattr(exc, "http_code", None)
        raise RegistryUnavailable(
            f"schema id {schema_id} could not be fetched from the registry: "
            f"{type(exc).__name__}{f' (HTTP {http_code})' if http_code else ''}"
        ) from None

    def _keep_writer(self, schema_id: int, schema: Any) -> Any:
        if schema is None:
            self._not_avro(schema_id, f"schema id {schema_id} is unknown to the registry")
        if getattr(schema, "schema_type", "AVRO") != "AVRO":
            self._not_avro(schema_id, f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        try:
            writer = fastavro.parse_schema(schema.raw_schema)
        except Exception as exc:  # fastavro raises several kinds for what is no Avro schema
            self._not_avro(schema_id, f"schema id {schema_id} is not a usable Avro schema: {type(exc).__name__}: {exc}")
        self._writers[schema_id] = writer
        return writer

    def _not_avro(self, schema_id: int, reason: str) -> NoReturn:
        """Remember that `schema_id` holds no Avro schema (for a while: it may be registered later) and say so."""
        if len(self._unknown) >= _UNKNOWN_MAX:
            self._unknown.pop(next(iter(self._unknown)))
        self._unknown[schema_id] = (time.monotonic(), reason)
        raise SchemaError(reason)

    def _read(self, name: str, writer: Any, data: bytes) -> dict[str, Any]:
        try:
            return fastavro.schemaless_reader(
                io.BytesIO(data[5:]),
                writer,
                self._parsed[name],
                return_record_name=True,
                return_record_name_override=True,
            )
        except Exception as exc:  # fastavro raises many kinds for bad or incompatible bytes
            raise SchemaError(f"not a valid {name} record: {type(exc).__name__}: {exc}") from None


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record as plain JSON values (timestamps as epoch milliseconds)."""
    return {
        key: round(value.timestamp() * 1000) if isinstance(value, datetime.datetime) else value
        for key, value in record.items()
    }


def _schema_id_of(data: bytes | None) -> int:
    if not data:
        raise SchemaError("empty value: expected an Avro record in Confluent wire format")
    if len(data) < 5 or data[0] != MAGIC_BYTE:
        raise SchemaError("value is not in Confluent wire format (magic byte 0 and a 4-byte schema id)")
    return struct.unpack(">I", data[1:5])[0]


def _missing(settings: Settings, missing: list[str]) -> str:
    return (
        f"this connector's schema is not registered under {', '.join(missing)} at {settings.schema_registry_url}, "
        "and CONNECTOR_SCHEMA_REGISTRY_AUTO_REGISTER=false forbids registering it: run `connector schemas register` "
        "(or your schema pipeline) first"
    )


def _with_tls(client: Any, settings: Settings) -> Any:
    """The client verifying the registry with our CA and presenting our certificate, when they are set.

    The client library uses a CA file only together with a client certificate; ours covers both.
    """
    context = settings.schema_registry_ssl_context()
    if context is not None:
        client.client_kwargs["verify"] = context
    return client


def _auth(settings: Settings) -> httpx.BasicAuth | None:
    if not settings.schema_registry_username:
        return None
    password = settings.schema_registry_password.get_secret_value() if settings.schema_registry_password else ""
    return httpx.BasicAuth(settings.schema_registry_username, password)
