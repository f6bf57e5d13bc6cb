"""The Faust application: its topics, its tables, and the parts that install agents and views on it.

`build(settings)` makes one `Connector`; `connector worker` runs it. All topics carry raw bytes:
values are Avro in the Confluent wire format, decoded by the agents themselves so that a record
that cannot be decoded reaches the DLQ with its original bytes instead of crashing a stream.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import faust
from aiohttp import web

from connector import _faust_compat as compat
from connector.appender import Appender
from connector.config import RECORD_OVERHEAD_BYTES, Settings
from connector.retention import CHANGELOG_CONFIG
from connector.schemas import AvroCodec

__all__ = [
    "CONVERSATIONS_TABLE",
    "Check",
    "HELD_EVENTS_TABLE",
    "INTERACTIONS_TABLE",
    "REFS_TABLE",
    "Reason",
    "SEEN_EVENTS_TABLE",
    "STORE_OPTIONS",
    "TABLES",
    "Connector",
    "build",
    "canonical_url",
    "table",
]

CONVERSATIONS_TABLE = "conversations"
REFS_TABLE = "refs"
HELD_EVENTS_TABLE = "held-events"  # events waiting for their ref (event agent)
SEEN_EVENTS_TABLE = "seen-events"  # recent event ids, to drop 8x8's retries (event agent)
INTERACTIONS_TABLE = "interactions"  # the interaction count of each 8x8 conversation (event agent)
TABLES = (CONVERSATIONS_TABLE, REFS_TABLE, HELD_EVENTS_TABLE, SEEN_EVENTS_TABLE, INTERACTIONS_TABLE)

# A readiness check (True when ready), and what says why one failed (None when it cannot say).
Check = Callable[[], Awaitable[bool]]
Reason = Callable[[], Awaitable["str | None"]]

# RocksDB keeps one database per table and partition, each with its own write buffers and block
# cache. Faust's defaults (three write buffers of 64 MiB, a 2 GiB cache, per database) let a
# worker's memory grow with the writes it takes, however few entries its tables hold after the
# deletes; these keep each database's share small. The in-memory store ignores them.
STORE_OPTIONS = {"write_buffer_size": 4 * 1024**2, "max_write_buffer_number": 2, "block_cache_size": 8 * 1024**2}

@dataclass
class Connector:
    """Everything the agents and views share: the app, its topics, its tables and the Avro codec."""

    settings: Settings
    app: faust.App
    codec: AvroCodec
    # The topics the agents read; what the agents write goes through `appender` by topic name.
    commands: faust.TopicT
    events: faust.TopicT
    webhooks_raw: faust.TopicT
    # conversations[ref] -> Conversation.to_dict(); co-partitioned with commands and events (key: ref).
    conversations: faust.Table
    # refs[8x8 conversation id] -> ref; co-partitioned with webhooks_raw (key: 8x8 id).
    refs: faust.Table
    # held_events[8x8 id] -> events waiting for their ref; seen_events[event id] -> when it was published;
    # interactions[8x8 id] -> the conversation's interaction count (the event agent's, co-partitioned with
    # webhooks_raw).
    held_events: faust.Table
    seen_events: faust.Table
    interactions: faust.Table
    # Every write to `conversations` and every record the command agent publishes goes through it.
    appender: Appender
    # What the parts add for the public port (connector.web): routes (the webhook endpoint, when the worker
    # serves it), readiness checks by name, and for some of them why they failed.
    public_routes: list[web.RouteDef] = field(default_factory=list)
    readiness: dict[str, Check] = field(default_factory=dict)
    readiness_reasons: dict[str, Reason] = field(default_factory=dict)


def build(settings: Settings) -> Connector:
    """A Faust app wired to the configured Kafka, with every agent and web view installed."""
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url(),
        broker_credentials=settings.faust_broker_credentials(),
        store=settings.table_store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        # The DLQ copy of the largest command chat.commands takes, with its error headers (topics.py).
        producer_max_request_size=settings.kafka_max_message_bytes + RECORD_OVERHEAD_BYTES,
        consumer_auto_offset_reset="earliest",
        # Faust's web server is the internal admin port (metrics, conversations, routing between
        # workers); the public port is connector.web's own server. No table pages: they would serve
        # the tables' contents, customers' messages included.
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.admin_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        web_tables_enabled=False,
        canonical_url=canonical_url(settings),
        broker_client_id=settings.kafka_client_id,
        broker_session_timeout=settings.kafka_session_timeout_s,
        consumer_group_instance_id=settings.kafka_group_instance_id,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        table_cleanup_interval=30.0,
        # No leader election (nothing runs on the leader only): no <app id>-__assignor-__leader topic
        # to create, so the workers' principal needs no Create ACL (README, ACLs).
        topic_disable_leader=True,
        stream_wait_empty=True,
        autodiscover=False,
        logging_config=None,
    )
    # Else the records fetched while a rebalance ends are dropped unread (a stall, or records skipped).
    compat.resume_streams_after_seek(app)
    compat.fetch_only_active_partitions(app)
    connector = Connector(
        settings=settings,
        app=app,
        codec=AvroCodec(settings),
        commands=_topic(app, settings.topic_commands),
        events=_topic(app, settings.topic_events),
        webhooks_raw=_topic(app, settings.topic_webhooks_raw),
        conversations=table(app, CONVERSATIONS_TABLE, settings),
        refs=table(app, REFS_TABLE, settings),
        held_events=table(app, HELD_EVENTS_TABLE, settings),
        seen_events=table(app, SEEN_EVENTS_TABLE, settings),
        interactions=table(app, INTERACTIONS_TABLE, settings),
        appender=Appender(app),
    )

    _install_parts(connector)
    return connector


def canonical_url(settings: Settings) -> str:
    """Where other workers reach this one's admin port: the configured URL, else the web host's
    (the host name when it binds every address, which no other worker could reach)."""
    if settings.web_canonical_url:
        return settings.web_canonical_url
    host = settings.web_host if settings.web_host not in ("0.0.0.0", "::", "") else socket.gethostname()
    return f"http://{host}:{settings.admin_port}"


def table(app: faust.App, name: str, settings: Settings) -> faust.Table:
    """A table keyed by str, its changelog keys raw UTF-8 like the topics' keys (so co-partitioned with them)
    and compacted as `connector.retention.CHANGELOG_CONFIG` says, whoever creates it (Faust or `topics create`)."""
    # A copy of the options for each table: Faust's RocksDB store takes keys out of the dict it is given.
    return compat.raw_key_table(
        app, name, settings.kafka_partitions, extra_topic_configs=CHANGELOG_CONFIG, options=dict(STORE_OPTIONS)
    )


def _topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def _install_parts(connector: Connector) -> None:
    """Each part adds its agents, views and services to the app (imported here: they import this module)."""
    from connector import commands, events, lag, web, webhook

    for part in (web, webhook, events, commands, lag):
        part.install(connector)
