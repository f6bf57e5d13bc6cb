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

On a rebalance the items not started yet are taken back (`Lanes.take_waiting`) and their tickets
abandoned (`Ticket.abandon`): their offsets are never acked, so the partition's next owner reads
them again. An abandoned ticket takes the ack of every later one of its partition with it, since
no offset after it may be committed either.

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

__all__ = ["FirstReads", "InOrderAcks", "Lanes", "Ticket"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

logger = logging.getLogger(__name__)


class Lanes(Generic[K, T]):
    """Runs `run(item)` for the items of each key one after another, keys concurrently."""

    def __init__(self, run: Callable[[T], Awaitable[None]], max_buffered: int) -> None:
        self._run = run
        self._max = max_buffered
        self._queues: dict[K, collections.deque[T]] = {}
        self._running: dict[K, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffered = 0
        self._waiting = 0
        self._room = asyncio.Condition()

    @property
    def buffered(self) -> int:
        """Items accepted and not finished (running ones included)."""
        return self._buffered

    @property
    def active(self) -> int:
        """Keys with work."""
        return len(self._queues)

    def holds(self, key: K) -> bool:
        """Whether `key` has items accepted and not finished."""
        return key in self._queues

    async def put(self, key: K, item: T) -> None:
        """Queue `item` behind the earlier items of `key`; waits while `max_buffered` items are held."""
        if self._buffered >= self._max:
            self._waiting += 1
            try:
                async with self._room:
                    await self._room.wait_for(lambda: self._buffered < self._max)
            finally:
                self._waiting -= 1
        self._buffered += 1
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._queues[key] = collections.deque([item])
        task = asyncio.create_task(self._drain(key), name=f"lane:{key}")
        self._running[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def join(self) -> None:
        """Wait until every item accepted so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def take_waiting(self) -> list[T]:
        """Remove and return every item that has not started (each key's running item stays)."""
        taken: list[T] = []
        for queue in self._queues.values():
            while len(queue) > 1:
                taken.append(queue.pop())
        self._release(len(taken))
        return taken[::-1]

    def cancel(self, running: Callable[[T], bool]) -> int:
        """Cancel the lanes whose running item `running` picks (their queued items go too); how many."""
        doomed = [task for key, task in self._running.items() if running(self._queues[key][0])]
        for task in doomed:
            task.cancel()
        return len(doomed)

    async def _drain(self, key: K) -> None:
        queue = self._queues[key]
        try:
            while queue:
                try:
                    await self._run(queue[0])
                except Exception:  # run() handles its own failures; this is a bug, not a reason to stall the lane
                    logger.exception("lane %r: unexpected error", key)
                queue.popleft()
                self._release(1)
        finally:
            self._release(len(queue))  # cancelled: the running item and the queued ones are dropped
            del self._queues[key]
            del self._running[key]

    def _release(self, count: int) -> None:
        if not count:
            return
        self._buffered -= count
        if self._waiting:
            asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._room:
            self._room.notify_all()


class Ticket:
    """One tracked record: `done()` once it is finished; acked when every earlier one is too.

    `abandon()` gives the record up: it is never acked (`forget` lets the consumer stop waiting for
    it without recording its offset), and the later records of its partition lose their ack too:
    they are forgotten as they finish, since no offset after an abandoned one may be committed.
    """

    __slots__ = ("_acks", "_partition", "ack", "forget", "finished", "orphaned")

    def __init__(self, acks: InOrderAcks, partition: Any, ack: Callable[[], Any], forget: Callable[[], Any]) -> None:
        self._acks = acks
        self._partition = partition
        self.ack = ack
        self.forget = forget
        self.finished = False
        self.orphaned = False

    def done(self) -> None:
        if self.orphaned:
            self.forget()
            return
        self.finished = True
        self._acks._release(self._partition)

    def abandon(self) -> None:
        """Never ack this record, nor any later one of its partition."""
        self._acks._abandon(self._partition, self)
        self.forget()


class InOrderAcks:
    """Acks records in offset order per partition: a record is acked once it and every earlier one is done."""

    def __init__(self) -> None:
        # partition -> tickets in offset order
        self._pending: dict[Any, collections.deque[Ticket]] = collections.defaultdict(collections.deque)

    def track(self, partition: Any, ack: Callable[[], Any], forget: Callable[[], Any]) -> Ticket:
        """Register the next record of `partition` (records arrive in offset order); returns its ticket.

        `ack` acknowledges the record; `forget` releases it without an acknowledgement.
        """
        ticket = Ticket(self, partition, ack, forget)
        self._pending[partition].append(ticket)
        return ticket

    def pending(self) -> int:
        """Records tracked and not acked yet."""
        return sum(len(queue) for queue in self._pending.values())

    def _release(self, partition: Any) -> None:
        queue = self._pending.get(partition)
        if queue is None:
            return
        while queue and queue[0].finished:
            queue.popleft().ack()
        if not queue:
            del self._pending[partition]

    def _abandon(self, partition: Any, ticket: Ticket) -> None:
        queue = self._pending.get(partition)
        if ticket.orphaned or queue is None or ticket not in queue:
            return  # acked already, or abandoned with an earlier one
        while True:
            last = queue.pop()
            last.orphaned = True
            if last is ticket:
                break
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
