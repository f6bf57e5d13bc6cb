"""Per-key lanes: work for one key runs in arrival order, different keys run in parallel.

`Lanes` holds at most `max_buffered` items across all keys; `put` waits while it is full, which
is how the command stream is back-pressured. A lane's task ends when its queue is empty, so idle
keys cost nothing.

`InOrderAcks` acknowledges Kafka records strictly in offset order per partition, whatever order
their lanes finish in. Faust's consumer must only ever see in-order acks: its `_new_offset`
(faust/transport/consumer.py) commits the first consecutive run of acked offsets, and checks the
head of that run against the committed offset with an off-by-one (`min(acked) - committed > 1`),
and not at all before the first commit, so an out-of-order ack could commit past a record still
in a lane.

`FirstReads` tells a record Faust hands out a second time without a rebalance: after a (re)start,
aiokafka's seek to the committed offsets can land after the stream has read on; Faust drops the
re-fetched records up to its read offset, but with `>=` (`Consumer._drain_messages`), so the last
record read of each partition comes again. It is in a lane or finished already.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["FirstReads", "InOrderAcks", "Lanes"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

logger = logging.getLogger(__name__)


class Lanes(Generic[K, T]):
    """Runs `run(item)` for the items of each key one after another, keys concurrently."""

    def __init__(self, run: Callable[[T], Awaitable[None]], max_buffered: int) -> None:
        self._run = run
        self._max = max_buffered
        self._queues: dict[K, collections.deque[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffered = 0
        self._room = asyncio.Condition()

    @property
    def buffered(self) -> int:
        """Items accepted and not finished (running ones included)."""
        return self._buffered

    @property
    def active(self) -> int:
        """Keys with work."""
        return len(self._queues)

    async def put(self, key: K, item: T) -> None:
        """Queue `item` behind the earlier items of `key`; waits while `max_buffered` items are held."""
        if self._buffered >= self._max:
            async with self._room:
                await self._room.wait_for(lambda: self._buffered < self._max)
        self._buffered += 1
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._queues[key] = collections.deque([item])
        task = asyncio.create_task(self._drain(key), name=f"lane:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def join(self) -> None:
        """Wait until every item accepted so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _drain(self, key: K) -> None:
        queue = self._queues[key]
        while queue:
            item = queue[0]
            try:
                await self._run(item)
            except Exception:  # run() handles its own failures; this is a bug, not a reason to stall the lane
                logger.exception("lane %r: unexpected error", key)
            finally:
                queue.popleft()
                self._buffered -= 1
                async with self._room:
                    self._room.notify()
        del self._queues[key]


class InOrderAcks:
    """Acks records in offset order per partition: a record is acked once it and every earlier one is done."""

    def __init__(self) -> None:
        # partition -> [ticket, ...] in offset order; a ticket is [done, ack]
        self._pending: dict[Any, collections.deque[list[Any]]] = collections.defaultdict(collections.deque)

    def track(self, partition: Any, ack: Callable[[], Any]) -> Callable[[], None]:
        """Register the next record of `partition` (records arrive in offset order); returns its `done`."""
        ticket = [False, ack]
        self._pending[partition].append(ticket)

        def done() -> None:
            ticket[0] = True
            self._release(partition)

        return done

    def pending(self) -> int:
        """Records tracked and not acked yet."""
        return sum(len(queue) for queue in self._pending.values())

    def _release(self, partition: Any) -> None:
        queue = self._pending[partition]
        while queue and queue[0][0]:
            queue.popleft()[1]()
        if not queue:
            del self._pending[partition]


class FirstReads:
    """Per partition, the last offset taken in the current consumer generation; a record at or below it is a re-read."""

    def __init__(self) -> None:
        self._last: dict[Any, tuple[int, int]] = {}

    def first(self, partition: Any, generation: int, offset: int) -> bool:
        """True unless `offset` was taken already from `partition` in `generation` (a rebalance starts afresh)."""
        last = self._last.get(partition)
        if last is not None and last[0] == generation and offset <= last[1]:
            return False
        self._last[partition] = (generation, offset)
        return True
