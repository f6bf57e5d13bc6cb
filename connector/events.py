"""8x8 webhook events into `ChatEvent` records (`connector.normalise`): the event agent and the status agent.

The event agent reads chat.webhooks.raw (key: 8x8 conversation id). It learns `refs[id] = ref` from
the REF_MAPPING records the command agent writes there, drops retried duplicates by event id and
Chat Gateway's echoes of the connector's own messages, holds events whose ref is not known yet,
and publishes each event once to chat.events keyed by ref.
The status agent reads chat.events (key: ref) and moves `conversations[ref]` along the status
machine. Both agents log, count and skip what they cannot read, and the event agent a ChatEvent too
large for chat.events (the event remembered as published, so that a retry of it is dropped too); they
never stop on bad input. A chat.events that refuses every record (a missing ACL) makes the agent wait.

State, all in Faust tables written through `connector.appender` to the partition of the record
being processed (named explicitly, so that the hold timer writes to the same partitions as the
stream, in the store as in the changelog):
- `refs[8x8 id] -> ref`, deleted on the REF_EXPIRED record the command side's retention sweep
  (`connector.retention`) writes when it deletes the conversation;
- `held-events[8x8 id] -> [{event_id, value, since, partition, interaction_count, unmapped}]`: raw
  records waiting for their ref, in arrival order, deleted once all of them are published with it. The
  hold clock runs only while the worker is settled (not rebalancing or recovering its tables), so a
  worker's crash and recovery never uses up the time a mapping has to come. An event whose hold ran out is published keyed by the 8x8 id and
  stays held (`unmapped`) for `events_remap_window_s`: if its mapping comes meanwhile, it is published
  again with its ref;
- `seen-events[event id] -> [partition, seq, published at]`: the event ids published from each
  partition in the last `events_dedupe_window_s`, at most `events_dedupe_per_partition` of them,
  oldest deleted first. Being a table, it survives restarts and rebalances, so a retry that
  reaches a replacement worker is still dropped;
- `interactions[8x8 id] -> {count, phase, partition, at, recent}`: which 8x8 interaction of the
  conversation its events belong to (`connector.conversation.next_interaction`), the ChatEvents'
  `interaction_count`. Counted when an event arrives, so one held and published later carries the
  count of its arrival; written when the count or phase changes (at `at`), with the ids of the last
  events that changed it (`recent`, see `counted`). Deleted with the `refs` entry on REF_EXPIRED; an
  entry whose 8x8 id has no ref, unchanged for `state_retention_s`, by a slow sweep in slices
  (`forget_interactions`), so that conversations never mapped do not stay forever.
Only the active owner of a partition changes its entries on the timer (not a standby's copy); an error
in a timer is logged and the next tick tries again.
Published events are acknowledged by Kafka before they are marked seen, and held events before their
entry is deleted, so a crash in between publishes an event twice at worst, never loses it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge

from connector import _faust_compat as compat
from connector.app import Connector
from connector.appender import NotDelivered
from connector.config import Settings
from connector.retention import REF_EXPIRED, SLICE, settled, sweep_interval
from connector.schemas import SchemaError
from connector.normalise import event_id_of, is_echo, normalise, parse
from connector.conversation import Conversation, Interaction, Phase, after_event, next_interaction

__all__ = ["counted", "install"]

logger = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "connector_events_published_total", "ChatEvents published to chat.events.", ["event_type", "mapped"]
)
EVENTS_DUPLICATE = Counter("connector_events_duplicates_total", "Webhook events dropped as retried duplicates.")
EVENTS_UNREADABLE = Counter(
    "connector_events_unreadable_total", "Records skipped because they could not be decoded.", ["topic"]
)
EVENTS_ECHOES = Counter(
    "connector_events_echoes_total", "Chat Gateway echoes of the connector's own messages, dropped."
)
EVENTS_UNMAPPED = Counter(
    "connector_events_unmapped_total",
    "Events published without a conversation ref because the hold bound (count or time) was reached.",
)
EVENTS_REMAPPED = Counter(
    "connector_events_remapped_total",
    "Events published again with their conversation ref after they were published without it.",
)
EVENTS_UNDELIVERABLE = Counter(
    "connector_events_undeliverable_total", "ChatEvents too large for chat.events: skipped."
)
# While chat.events refuses every record (not authorised), the event waits this long, doubling up to the cap.
_REFUSED_FIRST_S = 1.0
_REFUSED_CAP_S = 30.0
EVENTS_HELD = Gauge("connector_events_held", "Events held by this worker, waiting for their conversation ref.")
STATUS_UPDATES = Counter("connector_status_updates_total", "Conversation status changes made by chat events.")

# How many of the events that changed an `interactions` entry it remembers (see `counted`).
RECENT_CHANGES = 4


def install(connector: Connector) -> None:
    """Add the event agent, its hold timer and the status agent to the connector's app."""
    agent = _EventAgent(connector, connector.settings)
    app = connector.app
    app.agent(connector.webhooks_raw, name="connector.events.raw")(agent.run)
    app.timer(1.0, name="connector.events.hold-timer")(agent.release_expired)
    interval = sweep_interval(connector.settings.state_retention_s)
    app.timer(interval, name="connector.events.interactions-sweep")(agent.forget_interactions)
    app.agent(connector.events, name="connector.events.status")(_status_agent(connector))


# --- the event agent -----------------------------------------------------------------------------


class _EventAgent:
    """chat.webhooks.raw -> chat.events: mapping, hold, dedupe (see the module docstring)."""

    def __init__(self, connector: Connector, options: Settings) -> None:
        self._connector = connector
        self._options = options
        self._appender = connector.appender
        self._held = connector.held_events
        self._seen = connector.seen_events
        self._interactions = connector.interactions
        # Per partition, the ids of `seen-events` with the time they were published, oldest first; rebuilt
        # from the table after each rebalance (`_order_of`).
        self._order: dict[int, collections.deque[tuple[str, int]]] = {}
        self._order_generation: int | None = None
        self._seq = 0
        self._held_count = 0
        self._lock = asyncio.Lock()
        self._settled_since: int | None = None  # when the worker last finished a rebalance and its recovery

    async def run(self, stream: Any) -> None:
        """The agent: one raw record at a time, never stopping on a bad one."""
        await self._connector.codec.start()
        async for event in stream.events():
            try:
                raw = await self._connector.codec.decode_waiting("RawWebhook", event.value)
            except SchemaError as exc:
                EVENTS_UNREADABLE.labels(self._connector.settings.topic_webhooks_raw).inc()
                logger.error("skipped raw webhook at %s: %s", _where(event), exc)
                continue
            key = (event.key or b"").decode("utf-8", errors="replace")
            async with self._lock:
                await self._handle(key, raw, event.value, event.message.partition)

    async def release_expired(self) -> None:
        """The hold timer, every second: events held past the time bound are published without their ref (and
        kept a while in case it comes); those kept past the remap window are forgotten. Paused while the worker
        settles. An error is logged, and the next tick tries again."""
        try:
            await self._release_expired()
        except Exception:  # a bug must not stop the timer, nor the worker (Faust crashes the app on a timer's error)
            logger.exception("the hold timer failed; the next tick tries again")

    async def _release_expired(self) -> None:
        app = self._connector.app
        now = _now_ms()
        if not settled(app):
            self._settled_since = None  # a mapping may still be on its way: the clock waits
            return
        if self._settled_since is None:
            self._settled_since = now
        # Expired: held longer than the bound, by a worker settled for at least that long.
        cutoff = now - int(self._options.events_hold_s * 1000)
        expiring = self._settled_since <= cutoff
        forget_before = now - int(self._options.events_remap_window_s * 1000)
        topic = self._connector.settings.topic_webhooks_raw
        owned = {tp.partition for tp in compat.active_partitions(app) if tp.topic == topic}
        async with self._lock:
            for key, held in list(self._held.items()):
                if not held or held[0]["partition"] not in owned:
                    continue  # a standby's copy, or left from a partition this worker held before: not its to change
                waiting = [entry for entry in held if not entry.get("unmapped")]
                if waiting:
                    if expiring and waiting[0]["since"] <= cutoff:
                        await self._flush_unmapped(key, held)
                elif held and held[-1]["since"] <= forget_before:
                    await self._appender.delete(self._held, key, held[0]["partition"])
            self._held_count = sum(len(held) for held in self._held.values())
            EVENTS_HELD.set(self._held_count)
            await self._forget_seen(owned, now - int(self._options.events_dedupe_window_s * 1000))

    async def forget_interactions(self) -> None:
        """The interactions sweep, every `sweep_interval` of the retention time: deletes the entries of owned
        partitions unchanged for `state_retention_s` whose 8x8 id has no ref. An error is logged, and the next
        sweep tries again."""
        try:
            deleted = await self._forget_interactions(_now_ms() - int(self._options.state_retention_s * 1000))
        except Exception:  # a bug must not stop the timer, nor the worker
            logger.exception("the interactions sweep failed; the next one tries again")
            return
        if deleted:
            logger.info("forgot the interaction counts of %d conversations with no ref", deleted)

    async def _forget_interactions(self, before: int) -> int:
        """One pass, a slice at a time, holding the agent's lock only per slice; stops when a rebalance starts."""
        app = self._connector.app
        if not settled(app):
            return 0
        generation = compat.consumer_generation(app)
        topic = self._connector.settings.topic_webhooks_raw
        owned = {tp.partition for tp in compat.active_partitions(app) if tp.topic == topic}
        refs = self._connector.refs
        deleted = 0
        keys = compat.table_keys(self._interactions)
        while batch := list(itertools.islice(keys, SLICE)):
            async with self._lock:
                if not settled(app) or compat.consumer_generation(app) != generation:
                    break
                for key in batch:
                    entry = self._interactions.get(key)
                    if entry and entry["partition"] in owned and entry["at"] <= before and refs.get(key) is None:
                        await self._appender.delete(self._interactions, key, entry["partition"])
                        deleted += 1
            await asyncio.sleep(0)
        return deleted

    async def _handle(self, key: str, raw: dict[str, Any], value: bytes, partition: int) -> None:
        if raw["kind"] == REF_EXPIRED:  # the conversation was deleted after its retention time (connector.retention)
            await self._appender.delete(self._connector.refs, key, partition)
            await self._appender.delete(self._interactions, key, partition)
            return
        if raw["kind"] == "REF_MAPPING":
            ref = raw.get("conversation_ref")
            if not ref:
                logger.error("REF_MAPPING for %s has no conversation_ref: ignored", key)
                return
            await self._appender.put(self._connector.refs, key, ref, partition)
            held = self._held.get(key)
            if held:
                for entry in held:  # those published unmapped already are published again, with their ref
                    if entry.get("unmapped"):
                        EVENTS_REMAPPED.inc()
                    await self._publish(await self._decode_held(entry), key, ref, partition, entry.get("interaction_count"))
                # Deleted once all are published: a crash meanwhile publishes them again, never loses one.
                await self._appender.delete(self._held, key, partition)
                self._held_count -= len(held)
                EVENTS_HELD.set(self._held_count)
            return
        event_id = event_id_of(raw["headers"], raw["body"])
        held = self._held.get(key) or []
        if event_id in self._seen or any(entry["event_id"] == event_id for entry in held):
            EVENTS_DUPLICATE.inc()
            return
        read = self._read(raw, event_id)
        if read is None:
            return
        record, echo = read
        # Counted at its arrival, so that a held event carries that count whenever it is published; echoes (dropped)
        # and events of no conversation are not counted.
        count = None if echo or key == event_id else await self._count(key, event_id, record["event_type"], partition)
        ref = self._connector.refs.get(key)
        if ref is not None or key == event_id:  # mapped, or an event of no conversation
            await self._publish(raw, key, ref, partition, count, read)
        elif self._options.events_hold_max == 0 or self._options.events_hold_s == 0:
            EVENTS_UNMAPPED.inc()
            await self._publish(raw, key, None, partition, count, read)
        else:
            await self._make_room()
            # Read again: making room may have published this conversation's held events and dropped them.
            held = self._held.get(key) or []
            entry = {
                "event_id": event_id,
                "value": base64.b64encode(value).decode(),
                "since": _now_ms(),
                "partition": partition,
                "interaction_count": count,
            }
            await self._appender.put(self._held, key, [*held, entry], partition)
            self._held_count += 1
            EVENTS_HELD.set(self._held_count)

    async def _make_room(self) -> None:
        """Past the count bound, the conversation held longest is published without its ref and not kept."""
        while self._held_count >= self._options.events_hold_max and self._held:
            key, held = min(self._held.items(), key=lambda item: item[1][0]["since"])
            await self._flush_unmapped(key, held, keep=False)

    async def _flush_unmapped(self, key: str, held: list[dict[str, Any]], *, keep: bool = True) -> None:
        """Publish `key`'s held events keyed by the 8x8 id (their ref did not come in time); with `keep`, they
        stay held, marked unmapped, to be published again with their ref if it comes."""
        partition = held[0]["partition"]
        for entry in held:
            if not entry.get("unmapped"):
                EVENTS_UNMAPPED.inc()
                await self._publish(await self._decode_held(entry), key, None, partition, entry.get("interaction_count"))
        if keep:
            await self._appender.put(self._held, key, [{**entry, "unmapped": True} for entry in held], partition)
        else:
            await self._appender.delete(self._held, key, partition)
            self._held_count -= len(held)

    async def _count(self, key: str, event_id: str, event_type: str, partition: int) -> int:
        """The interaction of `key`'s conversation an arriving event belongs to; its entry written if that changed it."""
        # No await between the read and the write (the appender's put sets the entry before it awaits).
        count, entry = counted(self._interactions.get(key), event_id, event_type, partition, _now_ms())
        if entry is not None:
            await self._appender.put(self._interactions, key, entry, partition)
        return count

    def _read(self, raw: dict[str, Any], event_id: str) -> tuple[dict[str, Any], bool] | None:
        """The ChatEvent record of a raw webhook, without ref and count, and whether it is an echo of the connector's
        own message; None, logged and counted, for a body the edge let through but that cannot be read."""
        try:
            event = parse(raw["body"])
            record = normalise(
                event,
                raw["body"].decode("utf-8", errors="replace"),
                generation=raw["generation"],
                event_id=event_id,
                received_at=_millis_of(raw["received_at"]),
                tenant_id=raw["headers"].get("x-8x8-tenant-id"),
            )
        except Exception as exc:
            self._unreadable(event_id, exc)
            return None
        return record, is_echo(event)

    async def _publish(
        self,
        raw: dict[str, Any],
        key: str,
        ref: str | None,
        partition: int,
        interaction_count: int | None,
        read: tuple[dict[str, Any], bool] | None = None,
    ) -> None:
        """Publish one event (`read`: its record and echo flag, when read already), wait for Kafka's ack, then
        remember its id (in this order: never lost). While Kafka is away it waits (`Appender.deliver`), and while
        chat.events refuses every record (an ACL) too; an event too large for it is logged, counted and remembered
        as published: nothing would change if tried again."""
        read = read or self._read(raw, event_id_of(raw["headers"], raw["body"]))
        if read is None:
            return
        record, echo = read
        if echo:  # 8x8's copy of a message the connector sent itself: nothing the enterprise does not know
            EVENTS_ECHOES.inc()
            await self._remember(record["event_id"], partition)
            return
        record = {**record, "conversation_ref": ref, "interaction_count": interaction_count}
        try:
            value = self._connector.codec.encode("ChatEvent", record)
        except Exception as exc:  # a body the schema cannot carry: skip, loudly
            self._unreadable(record["event_id"], exc)
            return
        delay = _REFUSED_FIRST_S
        while True:
            try:
                await self._appender.deliver(self._connector.settings.topic_events, (ref or key).encode(), value)
            except NotDelivered as exc:
                if not exc.too_large:  # not authorised, say: every event would be refused, so wait for the fix
                    logger.error("chat.events refuses ChatEvents (%s); event %s waits, tried again in %g s", exc, record["event_id"], delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _REFUSED_CAP_S)
                    continue
                EVENTS_UNDELIVERABLE.inc()
                logger.error("skipped webhook event %s: its ChatEvent is too large for chat.events: %s", record["event_id"], exc)
            else:
                EVENTS_PUBLISHED.labels(record["event_type"], "yes" if ref else "no").inc()
            break
        await self._remember(record["event_id"], partition)

    def _unreadable(self, event_id: str, exc: Exception) -> None:
        EVENTS_UNREADABLE.labels(self._connector.settings.topic_webhooks_raw).inc()
        logger.error("skipped webhook event %s: %s: %s", event_id, type(exc).__name__, exc)

    async def _remember(self, event_id: str, partition: int) -> None:
        order = self._order_of(partition)
        self._seq += 1
        now = _now_ms()
        await self._appender.put(self._seen, event_id, [partition, self._seq, now], partition)
        order.append((event_id, now))
        while len(order) > self._options.events_dedupe_per_partition:
            await self._appender.delete(self._seen, order.popleft()[0], partition)

    async def _forget_seen(self, owned: set[int], before: int) -> None:
        """Delete the ids of the owned partitions published before `before` (the dedupe window)."""
        for partition in owned:
            order = self._order_of(partition)
            while order and order[0][1] < before:
                await self._appender.delete(self._seen, order.popleft()[0], partition)

    def _order_of(self, partition: int) -> collections.deque[tuple[str, int]]:
        """The ids of `partition` oldest first, rebuilt from the restored table when the assignment changed
        (another worker may have added and deleted ids meanwhile)."""
        generation = compat.consumer_generation(self._connector.app)
        if generation != self._order_generation:
            self._order_generation = generation
            self._order.clear()
            now = _now_ms()
            # [partition, seq, published at], oldest first; an id remembered without its time counts from now.
            entries = sorted((entry[2] if len(entry) > 2 else now, entry[1], eid, entry[0]) for eid, entry in self._seen.items())
            for at, seq, eid, owner in entries:
                self._order.setdefault(owner, collections.deque()).append((eid, at))
                self._seq = max(self._seq, seq)
        return self._order.setdefault(partition, collections.deque())

    async def _decode_held(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A held record, read as the stream reads it: waiting while the registry is away."""
        return await self._connector.codec.decode_waiting("RawWebhook", base64.b64decode(entry["value"]))


def counted(
    entry: dict[str, Any] | None, event_id: str, event_type: str, partition: int, now: int
) -> tuple[int, dict[str, Any] | None]:
    """The interaction count of an arriving event, from its conversation's `interactions` entry, and the entry
    after it (None: unchanged).

    A worker can stop after writing the entry and before the event is published or held; the event then comes
    again and must not count twice. So the entry keeps the ids of the last events that changed it, and such an
    event gets the count it had, the entry unchanged. Of the events that come again, those published already are
    dropped before they are counted (seen-events), those held too (their held entry), and those that changed
    nothing change nothing again: what remains is the one event in flight under the agent's lock when the worker
    stopped, the last to change the entry if it changed it. The few more ids cover the events whose seen-events
    write, not acknowledged yet, was lost with the worker: published twice (module docstring), they count once.
    """
    if entry is not None:
        for seen_id, count in entry["recent"]:
            if seen_id == event_id:
                return count, None
    before = Interaction(entry["count"], Phase(entry["phase"])) if entry is not None else None
    after = next_interaction(before, event_type)
    if after == before:
        return after.count, None
    recent = [*(entry["recent"] if entry is not None else []), [event_id, after.count]][-RECENT_CHANGES:]
    return after.count, {"count": after.count, "phase": after.phase.value, "partition": partition, "at": now, "recent": recent}


def _millis_of(value: Any) -> int:
    """fastavro reads timestamp-millis as an aware datetime; the schema writes it back from either."""
    if isinstance(value, int):
        return value
    return round(value.timestamp() * 1000)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _where(event: Any) -> str:
    return f"{event.message.topic}[{event.message.partition}]@{event.message.offset}"


# --- the status agent ----------------------------------------------------------------------------


def _status_agent(connector: Connector) -> Any:
    async def statuses(stream: Any) -> None:
        """chat.events -> conversations[ref]: the status machine on the current table value."""
        await connector.codec.start()
        async for event in stream.events():
            try:
                record = await connector.codec.decode_waiting("ChatEvent", event.value)
            except SchemaError as exc:
                EVENTS_UNREADABLE.labels(connector.settings.topic_events).inc()
                logger.error("skipped chat event at %s: %s", _where(event), exc)
                continue
            ref = record.get("conversation_ref")
            # No await from here to the write: the command agent writes the same entries.
            current = connector.conversations.get(ref) if ref else None
            if current is None:
                continue
            before = Conversation.from_dict(current)
            after = after_event(
                before,
                record["event_type"],
                _millis_of(record["timestamp"]),
                agent_id=record.get("agent_id"),
                agent_name=record.get("agent_name"),
                queue_id=record.get("queue_id"),
                queue_name=record.get("queue_name"),
            )
            if after != before:
                # Through the appender, like the command agent's writes of the same entries, so the
                # changelog keeps the order of both (Faust's flush before a commit covers it).
                await connector.appender.put(connector.conversations, ref, after.to_dict(), event.message.partition)
                STATUS_UPDATES.inc()

    return statuses
