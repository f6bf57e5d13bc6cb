"""Which command records are still this worker's, and the 8x8 calls made for them.

Faust's assignor is eager: a rebalance revokes every partition. A record fetched before the last
revocation belongs to the partition's next owner, which reads it again; no 8x8 call may start for
it here. Every call also takes one of `max_in_flight` slots, and the ownership check comes after
the wait for one, so that no call starts for a partition revoked meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust

from connector import _faust_compat as compat

__all__ = ["Ownership", "Revoked"]

T = TypeVar("T")


class Revoked(Exception):
    """The record's partition was revoked (or the worker is stopping): the new owner runs its command."""


class Ownership:
    """The consumer-generation fence and the slots of the 8x8 calls."""

    def __init__(self, app: faust.App, max_in_flight: int) -> None:
        self._app = app
        # The consumer generation revoked last: records fetched in it or before are no longer this worker's.
        self._fence = -1
        self._slots = asyncio.Semaphore(max_in_flight)
        self.halted = False  # Kafka refused a record for good: the worker is stopping, no call starts

    def owns(self, message: Any) -> bool:
        """Whether `message` was fetched after the last revocation: its partition is still this worker's."""
        return compat.message_generation(message) > self._fence

    def revoke(self) -> None:
        """Every partition fetched so far is revoked."""
        self._fence = max(self._fence, compat.consumer_generation(self._app))

    async def call(self, message: Any, label: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` once a slot is free, if `message` is still this worker's then and the worker is not
        halting; else Revoked(label)."""
        async with self._slots:
            if self.halted or not self.owns(message):
                raise Revoked(label)
            return await call()
