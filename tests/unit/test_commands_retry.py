"""The retry policy: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import dataclasses
import random

import pytest

from connector.config import load_settings
from connector.eightbyeight import PlatformError, RetryPolicy, retrying


def _flaky(errors: list[PlatformError], value: str = "ok"):
    calls = []

    async def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return value

    return call, calls


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _retryable(**kwargs) -> PlatformError:
    return PlatformError("send", "busy", retryable=True, **kwargs)


async def test_retries_transient_errors_then_succeeds() -> None:
    clock = _Clock()
    call, calls = _flaky([_retryable(http_status=503), _retryable()])
    attempted = await retrying(_policy(max_attempts=5), call, sleep=clock.sleep, clock=clock)
    assert (attempted.value, attempted.attempts, len(calls)) == ("ok", 3, 3)


async def test_honours_retry_after() -> None:
    clock = _Clock()
    call, _ = _flaky([_retryable(http_status=429, retry_after=2.5)])
    await retrying(_policy(), call, sleep=clock.sleep, clock=clock)
    assert clock.waits == [2.5]


async def test_final_error_is_not_retried() -> None:
    call, calls = _flaky([PlatformError("send", "bad", http_status=400)])
    with pytest.raises(PlatformError) as caught:
        await retrying(_policy(), call)
    assert len(calls) == 1 and caught.value.attempts == 1 and caught.value.code == "REJECTED_BY_8X8"


async def test_gives_up_after_max_attempts() -> None:
    clock = _Clock()
    call, calls = _flaky([_retryable() for _ in range(10)])
    with pytest.raises(PlatformError) as caught:
        await retrying(_policy(max_attempts=4), call, sleep=clock.sleep, clock=clock)
    assert len(calls) == 4 and caught.value.attempts == 4 and caught.value.code == "RETRIES_EXHAUSTED"


async def test_gives_up_when_the_time_budget_would_be_exceeded() -> None:
    clock = _Clock()
    call, calls = _flaky([_retryable(retry_after=4.0) for _ in range(10)])
    with pytest.raises(PlatformError) as caught:
        await retrying(_policy(max_attempts=100, max_total_s=10.0), call, sleep=clock.sleep, clock=clock)
    assert clock.waits == [4.0, 4.0] and len(calls) == 3 and caught.value.code == "RETRIES_EXHAUSTED"


def test_backoff_is_full_jitter_below_an_exponential_cap() -> None:
    policy = _policy(backoff_base_s=0.1, backoff_cap_s=1.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (12, 1.0)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a fixed wait


def _policy(**changes: float) -> RetryPolicy:
    """The configured policy (Settings' defaults) with `changes`."""
    return dataclasses.replace(RetryPolicy.from_settings(load_settings()), **changes)
