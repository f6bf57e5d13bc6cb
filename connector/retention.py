"""Keeping state bounded: ended conversations and their id mappings are deleted a set time after they end.

A `Sweeper` on each worker walks the `conversations` entries of the partitions it owns, in slices,
and deletes each ENDED or FAILED one unchanged for `state_retention_s`: first it asks the event
agent to delete the 8x8 id's `refs` entry (a REF_EXPIRED record on chat.webhooks.raw, keyed and
so ordered like the REF_MAPPING it undoes) and waits for Kafka's ack, then it deletes the entry
through the appender, whose tombstone follows every earlier write of the entry in the changelog.
A crash in between leaves the entry, which the next sweep finds again. Compaction then removes
the entries from the changelogs (`CHANGELOG_CONFIG`), so a recovering worker never loads them.

Only the active owner of a partition deletes, only while the worker is settled (no rebalance,
tables recovered), and never an entry whose ref has commands in its lane or that changed while
the sweep waited: a command for a deleted ref is answered as for a ref never started.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from connector import _faust_compat as compat
from connector.appender import NotDelivered
from connector.conversation import Status
from connector.results import id_record

if TYPE_CHECKING:
    from connector.app import Connector

__all__ = ["CHANGELOG_CONFIG", "REF_EXPIRED", "Sweeper", "expired", "last_change", "settled", "sweep_interval"]

logger = logging.getLogger(__name__)

# The RawWebhook kind that tells the event agent to delete the `refs` entry of the 8x8 id in the key.
REF_EXPIRED = "REF_EXPIRED"

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

# Topic settings of every table changelog. Compacted: the latest value of each key is kept and a
# tombstone removes the key. An entry's value is left uncompacted for ten minutes (a conversation is
# rewritten many times while it is busy: no use cleaning that up), a quiet changelog is compacted
# within a day all the same (its active segment is rolled for it), and a tombstone is kept a day
# after compaction, so that a worker reading the changelog meanwhile (recovery, standby) sees the
# delete. A worker that missed it (a RocksDB store offline longer) deletes the entry again itself.
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(_HOUR_MS // 6),
    "max.compaction.lag.ms": str(_DAY_MS),
    "delete.retention.ms": str(_DAY_MS),
}

SLICE = 500  # entries looked at between two returns to the event loop

STATE_EXPIRED = Counter(
    "connector_state_expired_total", "Ended conversations deleted with their refs entries after the retention time."
)

_FINAL = frozenset({Status.ENDED.value, Status.FAILED.value})


def last_change(value: dict[str, Any]) -> int:
    """When a `conversations` entry last changed, epoch ms: its latest timestamp or remembered result."""
    times = [value.get(name) or 0 for name in ("created_at", "updated_at", "ended_at")]
    times += [result.get("processed_at") or 0 for result in (value.get("recent_commands") or {}).values()]
    return max(times)


def expired(value: dict[str, Any] | None, now_ms: int, retention_s: float) -> bool:
    """Whether a `conversations` entry is to be deleted at `now_ms`: ENDED or FAILED, unchanged for `retention_s`."""
    if not value or value.get("status") not in _FINAL:
        return False
    return now_ms - last_change(value) >= retention_s * 1000


def sweep_interval(retention_s: float) -> float:
    """Seconds between two sweeps: a twentieth of the retention, between one second and ten minutes."""
    return min(600.0, max(1.0, retention_s / 20))


def settled(app: Any) -> bool:
    """Not rebalancing, and the tables of the active partitions are recovered."""
    return not app.rebalancing and app.tables.actives_ready


class Sweeper:
    """Deletes the expired conversations of the partitions this worker owns, and their refs entries."""

    def __init__(self, connector: Connector, busy: Callable[[str], bool]) -> None:
        self._connector = connector
        self._busy = busy  # whether a ref has commands in its lane

    async def tick(self) -> None:
        """The timer: one sweep now; an unexpected error is logged and the next tick sweeps again."""
        try:
            await self.sweep(time.time_ns() // 1_000_000)
        except Exception:  # a bug must not stop the timer, nor the worker
            logger.exception("the retention sweep failed; the next one tries again")

    async def sweep(self, now_ms: int) -> int:
        """One pass over the table, a slice at a time; how many conversations it deleted.

        It stops early when a rebalance starts (the partitions may not be this worker's any more)
        and when Kafka refuses a REF_EXPIRED record for good (logged; the next pass tries again).
        """
        app = self._connector.app
        if not settled(app):
            return 0
        generation = compat.consumer_generation(app)
        table = self._connector.conversations
        retention_s = self._connector.settings.state_retention_s
        deleted = 0
        keys = compat.table_keys(table)
        while batch := list(itertools.islice(keys, SLICE)):
            due = [(key, value) for key in batch if expired(value := table.get(key), now_ms, retention_s)]
            if due:
                try:
                    deleted += await self._delete(due, generation, now_ms)
                except NotDelivered as exc:
                    logger.error("expired conversations not deleted, their refs entries could not be: %s", exc)
                    break
            await asyncio.sleep(0)
            if not settled(app) or compat.consumer_generation(app) != generation:
                break
        if deleted:
            STATE_EXPIRED.inc(deleted)
            logger.info("deleted %d conversations ended more than %.0fs ago", deleted, retention_s)
        return deleted

    async def _delete(self, due: list[tuple[str, dict[str, Any]]], generation: int, now_ms: int) -> int:
        """Delete the owned ones of `due`: their refs entries first (acknowledged), then the entries left unchanged."""
        app = self._connector.app
        topic = self._connector.commands.get_topic_name()
        owned = compat.active_partitions(app)
        mine = []
        for key, value in due:
            tp = compat.key_partition(app, topic, key.encode())
            if tp in owned and not self._busy(key):
                mine.append((key, value, tp.partition))
        await asyncio.gather(*(self._expire_ref(value, now_ms) for _, value, _ in mine if value.get("conversation_id")))
        if not settled(app) or compat.consumer_generation(app) != generation:
            return 0
        deleted = 0
        table = self._connector.conversations
        for key, value, partition in mine:
            # No await between this check and the delete's removal from the store.
            if table.get(key) == value and not self._busy(key):
                await self._connector.appender.delete(table, key, partition)
                deleted += 1
        return deleted

    async def _expire_ref(self, value: dict[str, Any], now_ms: int) -> None:
        """Append the REF_EXPIRED record of the entry's 8x8 id and wait for Kafka's ack."""
        settings = self._connector.settings
        generation = value.get("generation") or settings.platform_generation.value
        record = id_record(REF_EXPIRED, generation, value.get("ref"), now_ms)
        encoded = self._connector.codec.encode("RawWebhook", record)
        await self._connector.appender.deliver(settings.topic_webhooks_raw, value["conversation_id"].encode(), encoded)
