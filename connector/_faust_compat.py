"""Every use the connector makes of Faust's and aiokafka's undocumented internals, in one place.

Each function says what it relies on and why the public API does not do. `RELIED_ON` names every
attribute they touch, so that `tests/unit/test_faust_compat.py` fails, naming the function, when
an upgrade moves one; pyproject pins both libraries below their next minor release.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # `connector edge` imports this module (refresh_metadata) and must not import Faust
    import faust
    from aiokafka import AIOKafkaProducer
    from faust.types import TP

__all__ = [
    "RELIED_ON",
    "active_partitions",
    "changelog_value",
    "consumer_generation",
    "in_partition",
    "key_partition",
    "message_generation",
    "on_rebalance_start",
    "fetch_only_active_partitions",
    "raw_key_table",
    "refresh_metadata",
    "resume_streams_after_seek",
    "settle_unacked",
    "store_pop",
    "store_set",
    "table_keys",
    "store_persisted",
]


def settle_unacked(message: Any) -> None:
    """Let Faust stop waiting for `message` without acking it, so that its offset is never committed here.

    Faust's consumer waits, before a rebalance or a stop completes, until every record handed to a
    stream is acked (`Consumer.wait_empty`); `Consumer.ack` would also record the offset for the
    next commit. Marking the message acked is what that wait looks at, and nothing else. Faust has
    no public way to hand a record back.
    """
    message.acked = True


def resume_streams_after_seek(app: faust.App) -> None:
    """Hold the stream partitions Faust resumes at the end of a rebalance back until their seek is over.

    Once the tables are recovered, Faust resumes the stream partitions (`Consumer.resume_partitions`),
    then seeks them to their committed offsets (`Consumer.perform_seek`), then resumes the flow
    (`FlowControlEvent.resume`, which empties every stream's queue, and `Consumer.resume_flow`);
    see `Recovery.on_recovery_completed` and `Recovery._resume_streams`. Its fetcher runs during the
    seek and hands out the records aiokafka fetched meanwhile: they are emptied out with the queues,
    but the partition's read offset stays at the last of them, so after the seek Faust drops the
    records below it when they come again (`Consumer._drain_messages`) until a later rebalance seeks
    again; in a partition nobody has committed yet there is no seek at all (aiokafka seeks only to a
    committed offset above 0) and they are lost for good. Its streams then wait on records that never
    come, or get them a rebalance later, out of order. Here a stream partition resumed this way is
    only resumed by the `resume_flow` that follows, after the seek and the emptying; changelog
    partitions (table recovery, standbys) are resumed at once, as before.
    """
    new_consumer = app._new_consumer

    def consumer_resuming_streams_after_seek() -> Any:
        consumer = new_consumer()
        resume_partitions, resume_flow = consumer.resume_partitions, consumer.resume_flow
        held: dict[TP, int] = {}  # stream partition -> the consumer generation it was resumed in

        def resume_partitions_later(tps: Any) -> None:
            changelogs = app.tables.changelog_topics
            tps = set(tps)
            streams = {tp for tp in tps if tp.topic not in changelogs}
            held.update(dict.fromkeys(streams, app.consumer_generation_id))
            resume_partitions(tps - streams)

        def resume_flow_and_streams() -> None:
            resume_flow()
            generation = app.consumer_generation_id
            due = {tp for tp, held_in in held.items() if held_in == generation}
            held.clear()  # those of an earlier generation were revoked since: the next assignment pauses them anew
            if due:
                resume_partitions(due)

        consumer.resume_partitions = resume_partitions_later
        consumer.resume_flow = resume_flow_and_streams
        return consumer

    app._new_consumer = consumer_resuming_streams_after_seek  # type: ignore[method-assign]


def fetch_only_active_partitions(app: faust.App) -> None:
    """Never let Faust's fetcher take the records of a paused partition from aiokafka.

    Faust's fetcher passes its live set of active partitions to aiokafka's `Fetcher.fetched_records`,
    which waits for records in the consumer thread and returns those of the partitions in the set,
    or of every partition when the set is empty (`if partitions and tp not in partitions`). Faust
    empties the set while a rebalance ends (every partition paused at the assignment, then the
    changelogs paused again once restored, before standbys or streams resume); a wait that began
    before then returns the records aiokafka prefetched for the paused stream partitions, and Faust
    drops them (`Consumer.getmany` hands out only active partitions' records) with aiokafka's position
    already past them. Where a committed offset exists the seek after the restore goes back for them;
    in a partition nobody committed yet they are lost: the stream waits on records that never come.
    Here aiokafka sees the same live set, except that it is never empty.
    """
    new_consumer = app._new_consumer

    def consumer_fetching_only_active_partitions() -> Any:
        consumer = new_consumer()
        getmany = consumer._getmany

        async def getmany_of_active(active_partitions: Any, timeout: float) -> Any:
            return await getmany(_NeverEmpty(active_partitions), timeout)

        consumer._getmany = getmany_of_active
        return consumer

    app._new_consumer = consumer_fetching_only_active_partitions  # type: ignore[method-assign]


class _NeverEmpty:
    """A live view of a set of partitions that is true even when the set is empty (see `fetch_only_active_partitions`)."""

    __slots__ = ("_tps",)

    def __init__(self, tps: Any) -> None:
        self._tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: Any) -> bool:
        return tp in self._tps


def message_generation(message: Any) -> int:
    """The consumer generation a record was fetched in (Faust stamps `Message.generation_id`)."""
    return message.generation_id


def consumer_generation(app: faust.App) -> int:
    """The consumer group generation the app is in now (`App.consumer_generation_id`, set on each assignment)."""
    return app.consumer_generation_id


def on_rebalance_start(app: faust.App, callback: Callable[[], None]) -> None:
    """Call `callback` first thing when partitions are revoked, before Faust waits for the streams to ack.

    Faust's `on_partitions_revoked` signal comes only after that wait, which would then wait for
    commands that are not started; `App.on_rebalance_start` is the method it calls before it.
    """
    original = app.on_rebalance_start

    def wrapped() -> None:
        original()
        callback()

    app.on_rebalance_start = wrapped  # type: ignore[method-assign]


def active_partitions(app: faust.App) -> set[TP]:
    """The topic partitions this worker holds as active (not standby), from Faust's assignor."""
    return app.assignor.assigned_actives()


def key_partition(app: faust.App, topic: str, key: bytes) -> TP:
    """The topic partition Kafka's default partitioner gives `key` in `topic` (the producer's own choice)."""
    return app.producer.key_partition(topic, key)


def raw_key_table(app: faust.App, name: str, partitions: int, **options: Any) -> faust.Table:
    """A table keyed by str whose changelog keys are raw UTF-8, like the topics' keys; `options` are
    `App.Table`'s own (its changelog's topic settings, its store's options).

    Faust would JSON-encode str keys (`"ref"` with quotes) and so hash them to another partition
    than the same key on chat.commands; `App.Table` takes no key serializer, so the table is built
    as `App.Table` builds it and its `key_serializer` set before registering (which makes its
    changelog topic).
    """
    table = app.conf.Table(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        partitions=partitions,
        key_type=str,
        **options,
    )
    table.key_serializer = "raw"
    return app.tables.add(table)


@contextlib.contextmanager
def in_partition(partition: int) -> Iterator[None]:
    """Faust's RocksDB store keeps one database per partition and takes a write's partition from the
    current event (`faust.streams._current_event`); outside a stream (timers) or for another
    partition than the event's, name it."""
    from faust.streams import _current_event

    stand_in = _PartitionEvent(partition)  # held here: the context variable keeps only a weak reference
    token = _current_event.set(weakref.ref(stand_in))
    try:
        yield
    finally:
        _current_event.reset(token)


def store_set(table: faust.Table, key: str, value: Any, partition: int) -> None:
    """Set `key` in the table's store (`Table.data`) without Faust's changelog send: the caller appends it."""
    with in_partition(partition):
        table.data[key] = value


def store_pop(table: faust.Table, key: str, partition: int) -> Any:
    """Remove `key` from the table's store without a changelog send; its value, or None."""
    with in_partition(partition):
        return table.data.pop(key, None)


def table_keys(table: faust.Table) -> Iterator[str]:
    """The keys of the table's store, safe to walk across awaits: a copy of the in-memory store's
    dict (`faust.stores.memory.Store.data`, made by its `__post_init__`), which a write meanwhile
    would break; else the store's own iterator (RocksDB's reads a snapshot, so the writes made
    meanwhile do not disturb it). Faust's `keys()` walks the in-memory dict itself."""
    store = table.data
    if isinstance(getattr(store, "data", None), dict):
        return iter(list(store.data))
    return iter(store.keys())


def store_persisted(table: faust.Table, topic_partition: Any, offset: int) -> None:
    """Record the changelog offset a write reached (RocksDB resumes its recovery there), as Faust's own writes do."""
    table.data.set_persisted_offset(topic_partition, offset)


def changelog_value(value: Any) -> bytes:
    """A table value in Faust's changelog format for the connector's tables (JSON, as Faust's default codec writes it)."""
    return orjson.dumps(value)


async def refresh_metadata(producer: AIOKafkaProducer) -> bool:
    """Ask the brokers for fresh metadata through the producer's own client (`AIOKafkaProducer.client`):
    whether they answer. aiokafka's producer has no public call that talks to a broker without sending."""
    return bool(await producer.client.force_metadata_update())


class _PartitionEvent:
    """Stands in for the current event: the store reads only `event.message.partition`."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = types.SimpleNamespace(partition=partition)


# (function, object or import path, attribute) for every internal the functions above rely on, and
# for the Faust behaviour `connector.lanes` works around (`Consumer._new_offset`, `_drain_messages`).
RELIED_ON: tuple[tuple[str, str, str], ...] = (
    ("settle_unacked", "faust.types.tuples.Message", "acked"),
    ("message_generation", "faust.types.tuples.Message", "generation_id"),
    ("consumer_generation", "faust.app.base.App", "consumer_generation_id"),
    ("on_rebalance_start", "faust.app.base.App", "on_rebalance_start"),
    ("active_partitions", "faust.assignor.PartitionAssignor", "assigned_actives"),
    ("key_partition", "faust.transport.producer.Producer", "key_partition"),
    ("raw_key_table", "faust.tables.table.Table", "key_serializer"),
    ("in_partition", "faust.streams", "_current_event"),
    ("store_set", "faust.tables.base.Collection", "data"),
    ("store_persisted", "faust.stores.base.Store", "set_persisted_offset"),
    ("table_keys", "faust.stores.memory.Store", "__post_init__"),
    ("refresh_metadata", "aiokafka.client.AIOKafkaClient", "force_metadata_update"),
    ("fetch_only_active_partitions", "faust.app.base.App", "_new_consumer"),
    ("fetch_only_active_partitions", "faust.transport.consumer.ThreadDelegateConsumer", "_getmany"),
    ("fetch_only_active_partitions", "aiokafka.consumer.fetcher.Fetcher", "fetched_records"),
    ("resume_streams_after_seek", "faust.app.base.App", "_new_consumer"),
    ("resume_streams_after_seek", "faust.transport.consumer.Consumer", "resume_partitions"),
    ("resume_streams_after_seek", "faust.transport.consumer.Consumer", "resume_flow"),
    ("resume_streams_after_seek", "faust.tables.recovery.Recovery", "on_recovery_completed"),
    ("lanes.InOrderAcks", "faust.transport.consumer.Consumer", "_new_offset"),
    ("lanes.FirstReads", "faust.transport.consumer.Consumer", "_drain_messages"),
)
