"""Latency and faults on demand, per 8x8 operation and for webhook delivery, the same sequence for the same seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from connector.sandbox.config import FaultConfig, FaultRule

__all__ = ["Decision", "FaultInjector", "PROTECTED_OPERATIONS"]

# Faulted only when named explicitly: a default rule for "everything" means the chat API.
PROTECTED_OPERATIONS = frozenset({"createaccesstoken", "getjwkpublickey", "getjwkpublickey-1"})

_FAULTS = ("429", "429_retry_after", "500", "503", "timeout", "drop", "drop_after")


@dataclass(frozen=True)
class Decision:
    """What to do to one request: delay it, then maybe one fault (None: answer normally)."""

    delay_s: float
    fault: str | None
    rule: FaultRule


class FaultInjector:
    """Draws the decision for each request from one random stream per operation."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self._seed = seed
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        """Use `config` from now on, restarting the random streams from the seed."""
        self.config = config
        self._streams: dict[str, tuple[FaultRule, list[tuple[str, float]], random.Random] | None] = {}
        self._delivery = random.Random(f"{self._seed}:delivery")

    def decide_delivery(self) -> tuple[float, str | None]:
        """The delay (seconds) before the next webhook delivery attempt, and its fault: fail, duplicate or None."""
        rule = self.config.delivery
        if not (rule.latency_ms or rule.rate_fail or rule.rate_duplicate):
            return 0.0, None
        draw = self._delivery.random()
        fault = "fail" if draw < rule.rate_fail else "duplicate" if draw < rule.rate_fail + rule.rate_duplicate else None
        return rule.latency_ms / 1000, fault

    def decide(self, operation: str) -> Decision | None:
        """The decision for the next request to `operation`, or None when nothing applies."""
        if operation not in self._streams:
            self._streams[operation] = self._stream(operation)
        stream = self._streams[operation]
        if stream is None:
            return None
        rule, rates, rng = stream
        delay_ms = rule.latency_ms
        if rule.latency_jitter_ms:
            delay_ms += rng.uniform(-rule.latency_jitter_ms, rule.latency_jitter_ms)
        draw = rng.random()
        fault = None
        for name, rate in rates:
            if draw < rate:
                fault = name
                break
            draw -= rate
        if fault is None and delay_ms <= 0:
            return None
        return Decision(max(delay_ms, 0.0) / 1000, fault, rule)

    def _stream(self, operation: str) -> tuple[FaultRule, list[tuple[str, float]], random.Random] | None:
        """The rule of `operation`, its rates and its random stream; None when it has nothing to do."""
        rule = self.config.operations.get(operation)
        if rule is None:
            if operation in PROTECTED_OPERATIONS:
                return None
            rule = self.config.default
        rates = [(name, getattr(rule, f"rate_{name}")) for name in _FAULTS]
        if not rule.latency_ms and not rule.latency_jitter_ms and not any(rate for _, rate in rates):
            return None
        return rule, rates, random.Random(f"{self._seed}:{operation}")
