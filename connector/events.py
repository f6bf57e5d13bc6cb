"""8x8 webhook events into `ChatEvent` records (`connector.normalise`): the event agent and the status agent.

The event agent reads chat.webhooks.raw (key: 8x8 conversation id). It learns `refs[id] = ref` from
the REF_MAPPING records the command agent writes there, drops retried duplicates by event id and
Chat Gateway's echoes of the connector's own messages, holds events whose ref is not known yet,
and publishes each event once to chat.events keyed by ref.
The status agent reads chat.events (key: ref) and moves `conversations[ref]` along the status
machine. Both agents log, count and skip what they cannot read; they never stop on bad input.

State, all in Faust tables written through `connector.appender` to the partition of the record
being processed (named explicitly, so that the hold timer writes to the same partitions as the
stream, in the store as in the changelog):
- `refs[8x8 id] -> ref`, deleted on the REF_EXPIRED record the command side's retention sweep
  (`connector.retention`) writes when it deletes the conversation;
- `held-events[8x8 id] -> [{value, since, unmapped}]`: raw records waiting for their ref, in arrival
  order. The hold clock runs only while the worker is settled (not rebalancing or recovering its
  tables), so a worker's crash and recovery never uses up the time a mapping has to come. An event
  whose hold ran out is published keyed by the 8x8 id and stays held (`unmapped`) for
  `events_remap_window_s`: if its mapping comes meanwhile, it is published again with its ref;
- `seen-events[event id] -> [partition, seq, published at]`: the event ids published from each
  partition in the last `events_dedupe_window_s`, at most `events_dedupe_per_partition` of them,
  oldest deleted first. Being a table, it survives restarts and rebalances, so a retry that
  reaches a replacement worker is still dropped.
Only the active owner of a partition changes its entries on the timer (not a standby's copy).
Published events are acknowledged by Kafka before they are marked seen, so a crash in between
publishes an event twice at worst, never loses it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge

from connector import _faust_compat as compat
from connector.app import Connector
from connector.config import Settings
from connector.retention import REF_EXPIRED, settled
from connector.schemas import SchemaError
from connector.normalise import event_id_of, is_echo, normalise, parse
from connector.conversation import Conversation, after_event

__all__ = ["install"]

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
EVENTS_HELD = Gauge("connector_events_held", "Events held by this worker, waiting for their conversation ref.")
STATUS_UPDATES = Counter("connector_status_updates_total", "Conversation status changes made by chat events.")

def install(connector: Connector) -> None:
    """Add the event agent, its hold timer and the status agent to the connector's app."""
    agent = _EventAgent(connector, connector.settings)
    app = connector.app
    app.agent(connector.webhooks_raw, name="connector.events.raw")(agent.run)
    app.timer(1.0, name="connector.events.hold-timer")(agent.release_expired)
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
        """The hold timer: events held past the time bound are published without their ref (and kept a while
        in case it comes); those kept past the remap window are forgotten. Paused while the worker settles."""
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

    async def _handle(self, key: str, raw: dict[str, Any], value: bytes, partition: int) -> None:
        if raw["kind"] == REF_EXPIRED:  # the conversation was deleted after its retention time (connector.retention)
            await self._appender.delete(self._connector.refs, key, partition)
            return
        if raw["kind"] == "REF_MAPPING":
            ref = raw.get("conversation_ref")
            if not ref:
                logger.error("REF_MAPPING for %s has no conversation_ref: ignored", key)
                return
            await self._appender.put(self._connector.refs, key, ref, partition)
            held = self._held.get(key)
            if held:
                await self._appender.delete(self._held, key, partition)
                self._held_count -= len(held)
                for entry in held:  # those published unmapped already are published again, with their ref
                    if entry.get("unmapped"):
                        EVENTS_REMAPPED.inc()
                    await self._publish(await self._decode_held(entry), key, ref, partition)
            return
        event_id = event_id_of(raw["headers"], raw["body"])
        held = self._held.get(key) or []
        if event_id in self._seen or any(entry["event_id"] == event_id for entry in held):
            EVENTS_DUPLICATE.inc()
            return
        ref = self._connector.refs.get(key)
        if ref is not None or key == event_id:  # mapped, or an event of no conversation
            await self._publish(raw, key, ref, partition)
        elif self._options.events_hold_max == 0 or self._options.events_hold_s == 0:
            EVENTS_UNMAPPED.inc()
            await self._publish(raw, key, None, partition)
        else:
            await self._make_room()
            entry = {"event_id": event_id, "value": base64.b64encode(value).decode(), "since": _now_ms(), "partition": partition}
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
                await self._publish(await self._decode_held(entry), key, None, partition)
        if keep:
            await self._appender.put(self._held, key, [{**entry, "unmapped": True} for entry in held], partition)
        else:
            await self._appender.delete(self._held, key, partition)
            self._held_count -= len(held)

    async def _publish(self, raw: dict[str, Any], key: str, ref: str | None, partition: int) -> None:
        """Publish one event, wait for Kafka's ack, then remember its id (in this order: never lost)."""
        event_id = event_id_of(raw["headers"], raw["body"])
        try:
            event = parse(raw["body"])
            echo = is_echo(event)
            record = normalise(
                event,
                raw["body"].decode("utf-8", errors="replace"),
                generation=raw["generation"],
                event_id=event_id,
                received_at=_millis_of(raw["received_at"]),
                tenant_id=raw["headers"].get("x-8x8-tenant-id"),
                conversation_ref=ref,
            )
            value = self._connector.codec.encode("ChatEvent", record)
        except Exception as exc:  # a body the edge let through but the schema cannot carry: skip, loudly
            EVENTS_UNREADABLE.labels(self._connector.settings.topic_webhooks_raw).inc()
            logger.error("skipped webhook event %s: %s: %s", event_id, type(exc).__name__, exc)
            return
        if echo:  # 8x8's copy of a message the connector sent itself: nothing the enterprise does not know
            EVENTS_ECHOES.inc()
            await self._remember(event_id, partition)
            return
        await _send_until_acked(self._connector.events, (ref or key).encode(), value)
        EVENTS_PUBLISHED.labels(record["event_type"], "yes" if ref else "no").inc()
        await self._remember(event_id, partition)

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
        return await self._connector.codec.decode("RawWebhook", base64.b64decode(entry["value"]))


async def _send_until_acked(topic: Any, key: bytes, value: bytes) -> None:
    """Send and wait for the broker's ack, retrying while Kafka is away: an accepted event is never dropped."""
    delay = 0.2
    while True:
        try:
            future = await topic.send(key=key, value=value)
            await future
            return
        except Exception as exc:  # aiokafka raises several kinds while the broker is away
            logger.warning("chat.events not reachable (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


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
