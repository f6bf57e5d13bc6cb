"""A bounded, clearable log of records with sequence numbers (requests received, deliveries attempted)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

__all__ = ["Journal"]


class Journal:
    """The last `size` records, oldest first; each gets a `seq` that keeps growing across clears.

    `listener`, if given, is told of each record as it is appended.
    """

    def __init__(self, size: int, listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._seq = 0
        self._listener = listener

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep `record` (dropping the oldest when full) and return it with its `seq`."""
        self._seq += 1
        record["seq"] = self._seq
        self._records.append(record)
        if self._listener is not None:
            self._listener(record)
        return record

    def records(self, since: int = 0) -> list[dict[str, Any]]:
        """The records whose `seq` is greater than `since`."""
        if since <= 0:
            return list(self._records)
        return [record for record in self._records if record["seq"] > since]

    def clear(self) -> None:
        """Forget every record."""
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
