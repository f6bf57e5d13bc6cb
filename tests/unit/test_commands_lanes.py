"""Per-ref lanes and in-order acks, without Kafka."""

from __future__ import annotations

import asyncio
import random

from connector.lanes import FirstReads, InOrderAcks, Lanes


async def test_order_within_a_key_and_parallel_across_keys() -> None:
    log: list[tuple[str, int]] = []
    running = 0
    peak = 0

    async def run(item: tuple[str, int]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.random() / 500)
        log.append(item)
        running -= 1

    lanes: Lanes[str, tuple[str, int]] = Lanes(run, max_buffered=1000)
    for i in range(50):
        for key in "abcdefghij":
            await lanes.put(key, (key, i))
    await lanes.join()
    for key in "abcdefghij":
        assert [i for k, i in log if k == key] == list(range(50))
    assert peak > 1 and lanes.active == 0 and lanes.buffered == 0


async def test_put_waits_while_the_buffer_is_full() -> None:
    release = asyncio.Event()

    async def run(item: int) -> None:
        await release.wait()

    lanes: Lanes[int, int] = Lanes(run, max_buffered=3)
    for i in range(3):
        await lanes.put(i, i)
    blocked = asyncio.create_task(lanes.put(9, 9))
    await asyncio.sleep(0.01)
    assert not blocked.done() and lanes.buffered == 3
    release.set()
    await asyncio.wait_for(blocked, 1)
    await lanes.join()
    assert lanes.buffered == 0


async def test_a_failing_item_does_not_stop_its_lane() -> None:
    seen: list[int] = []

    async def run(item: int) -> None:
        seen.append(item)
        if item == 1:
            raise RuntimeError("bug")

    lanes: Lanes[str, int] = Lanes(run, max_buffered=10)
    for i in range(3):
        await lanes.put("k", i)
    await lanes.join()
    assert seen == [0, 1, 2]


def test_acks_only_a_contiguous_prefix_per_partition() -> None:
    acked: list[tuple[int, int]] = []
    acks = InOrderAcks()
    done = {(p, o): acks.track(p, lambda p=p, o=o: acked.append((p, o)), list).done for p in (0, 1) for o in range(4)}
    done[(0, 2)]()
    done[(0, 1)]()
    done[(1, 0)]()
    assert acked == [(1, 0)]
    done[(0, 0)]()
    assert acked == [(1, 0), (0, 0), (0, 1), (0, 2)]
    done[(0, 3)]()
    for o in (3, 2, 1):
        done[(1, o)]()
    assert acked[-4:] == [(0, 3), (1, 1), (1, 2), (1, 3)]
    assert acks.pending() == 0


def test_an_abandoned_record_is_never_acked_nor_anything_after_it_in_its_partition() -> None:
    acked: list[tuple[int, int]] = []
    forgotten: list[tuple[int, int]] = []
    acks = InOrderAcks()
    tickets = {
        (p, o): acks.track(p, lambda p=p, o=o: acked.append((p, o)), lambda p=p, o=o: forgotten.append((p, o)))
        for p in (0, 1)
        for o in range(4)
    }
    tickets[(0, 0)].done()
    tickets[(0, 2)].done()  # finished, waiting for (0, 1)
    tickets[(0, 1)].abandon()
    assert forgotten == [(0, 1)]
    tickets[(0, 3)].done()  # finished after the abandon: released without an ack
    tickets[(0, 2)].abandon()  # gone with (0, 1) already: only released
    for o in range(4):
        tickets[(1, o)].done()
    assert acked == [(0, 0), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert forgotten == [(0, 1), (0, 3), (0, 2)]
    assert acks.pending() == 0


async def test_waiting_items_are_taken_back_and_running_lanes_cancelled() -> None:
    started: list[tuple[str, int]] = []
    release = asyncio.Event()

    async def run(item: tuple[str, int]) -> None:
        started.append(item)
        await release.wait()

    lanes: Lanes[str, tuple[str, int]] = Lanes(run, max_buffered=4)
    for item in [("a", 0), ("a", 1), ("b", 0), ("a", 2)]:
        await lanes.put(item[0], item)
    blocked = asyncio.ensure_future(lanes.put("c", ("c", 0)))  # the lanes are full
    await asyncio.sleep(0.01)
    assert not blocked.done() and started == [("a", 0), ("b", 0)]
    assert lanes.take_waiting() == [("a", 1), ("a", 2)]
    await asyncio.wait_for(blocked, 1)  # room again
    assert lanes.cancel(lambda item: item[0] == "a") == 1
    await asyncio.sleep(0.01)
    assert lanes.active == 2 and lanes.buffered == 2  # b and c still run
    release.set()
    await lanes.join()
    assert started == [("a", 0), ("b", 0), ("c", 0)] and lanes.buffered == 0 and lanes.active == 0


def test_a_record_read_again_in_the_same_generation_is_not_a_first_read() -> None:
    reads = FirstReads()
    assert [reads.first(0, 3, o) for o in (10, 11, 12)] == [True, True, True]
    assert not reads.first(0, 3, 12)  # Faust's re-read of the last record after a late seek
    assert not reads.first(0, 3, 11)
    assert reads.first(1, 3, 12)  # other partition
    assert reads.first(0, 4, 11)  # a rebalance re-delivers from the committed offset: run again
    assert reads.first(0, 4, 12)
