"""Which conversations changed, for the console's live clients; costs a loop over nobody while none listens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["Feed", "Subscription"]

# Past this many changed conversations between two reads, a client is told "everything changed".
_MAX_NAMED = 200


class Subscription:
    """One live client's changes since it last read them."""

    def __init__(self) -> None:
        self._changed: set[str] = set()
        self._everything = False
        self._ready = asyncio.Event()
        self.closed = False

    def add(self, conversation_id: str | None) -> None:
        """Note a change to a conversation (None: to agents, queues or settings only)."""
        if conversation_id is not None and not self._everything:
            self._changed.add(conversation_id)
            if len(self._changed) > _MAX_NAMED:
                self._everything = True
                self._changed.clear()
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout_s: float, settle_s: float) -> tuple[list[str], bool] | None:
        """Wait for a change, then `settle_s` more (a burst is told at once): (the conversations, whether
        everything changed); None when `timeout_s` passed without a change, or the subscription closed."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        if not self.closed:
            await asyncio.sleep(settle_s)
        if self.closed:
            return None
        self._ready.clear()
        changed, everything = sorted(self._changed), self._everything
        self._changed.clear()
        self._everything = False
        return changed, everything


class Feed:
    """Tells every subscription what changed."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def touch(self, conversation_id: str | None = None) -> None:
        """Something changed, in `conversation_id` if given."""
        for subscription in self._subscriptions:
            subscription.add(conversation_id)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the `with` block."""
        subscription = Subscription()
        self._subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.remove(subscription)

    def close(self) -> None:
        """End every subscription (the sandbox stops)."""
        for subscription in self._subscriptions:
            subscription.close()
