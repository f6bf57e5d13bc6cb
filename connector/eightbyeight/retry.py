"""When and how long to wait before trying an 8x8 call again.

Network errors, timeouts, 429 and 5xx are retried up to a number of attempts and a total time;
a 429's `Retry-After` is honoured, otherwise the wait is exponential backoff with full jitter
(uniform between 0 and min(cap, base * 2**n)), so that many lanes retrying at once spread out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter

from connector.config import Settings
from connector.eightbyeight.base import PlatformError

__all__ = ["RETRIES", "Attempted", "RetryPolicy", "retrying"]

T = TypeVar("T")

RETRIES = Counter("connector_8x8_retries_total", "8x8 calls tried again, by operation and reason.", ["operation", "reason"])


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to try one 8x8 call (`from_settings`: the configured one)."""

    max_attempts: int
    max_total_s: float
    backoff_base_s: float
    backoff_cap_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.command_max_attempts,
            settings.command_retry_max_s,
            settings.command_backoff_base_s,
            settings.command_backoff_cap_s,
        )

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True)
class Attempted(Generic[T]):
    """A call's value and how many attempts it took."""

    value: T
    attempts: int


async def retrying(
    policy: RetryPolicy,
    call: Callable[[], Awaitable[T]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Attempted[T]:
    """`call()` until it succeeds; else its last PlatformError, with `.attempts` set and, when retries ran
    out, `.code` RETRIES_EXHAUSTED."""
    deadline = clock() + policy.max_total_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return Attempted(await call(), attempt)
        except PlatformError as exc:
            exc.attempts = attempt
            if not exc.retryable:
                raise
            wait = policy.delay(attempt, exc.retry_after)
            if attempt >= policy.max_attempts or clock() + wait > deadline:
                exc.code = "RETRIES_EXHAUSTED"
                raise
            RETRIES.labels(exc.operation, exc.reason).inc()
            await sleep(wait)

