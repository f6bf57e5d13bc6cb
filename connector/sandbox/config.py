"""Everything a sandbox run can be told: credentials, the simulated contact center, delivery and faults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["DeliveryFaultRule", "FaultConfig", "FaultRule", "SandboxConfig"]

Rule = TypeVar("Rule", "FaultRule", "DeliveryFaultRule")


@dataclass
class FaultRule:
    """Added latency and fault rates (0..1) for one API operation; the rates are exclusive, drawn once."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_429: float = 0.0
    rate_429_retry_after: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_timeout: float = 0.0
    rate_drop: float = 0.0
    # The request takes effect, then the connection is closed: the client cannot know the outcome.
    rate_drop_after: float = 0.0
    retry_after_s: int = 1
    timeout_s: float = 60.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        """A rule from its JSON form (the field names above); unknown names are an error."""
        return _rule_from_json(cls, data)


@dataclass
class DeliveryFaultRule:
    """Faults of webhook delivery (rates 0..1, exclusive): an attempt 8x8 fails to make (retried
    later), or an event sent again after its 2xx (8x8 missed the answer: same event id, next retry)."""

    latency_ms: float = 0.0  # before each attempt
    rate_fail: float = 0.0
    rate_duplicate: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeliveryFaultRule:
        """A rule from its JSON form (the field names above); unknown names are an error."""
        return _rule_from_json(cls, data)


@dataclass
class FaultConfig:
    """A default rule for every 8x8 operation, and rules by operation id (the specs' `operationId`).

    The default never applies to the token and JWK endpoints; name them in `operations` to fault them.
    """

    default: FaultRule = field(default_factory=FaultRule)
    operations: dict[str, FaultRule] = field(default_factory=dict)
    delivery: DeliveryFaultRule = field(default_factory=DeliveryFaultRule)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultConfig:
        """The configuration from the JSON that `PUT /_sandbox/faults` takes."""
        return cls(
            default=FaultRule.from_json(data.get("default") or {}),
            operations={op: FaultRule.from_json(rule) for op, rule in (data.get("operations") or {}).items()},
            delivery=DeliveryFaultRule.from_json(data.get("delivery") or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form, as `GET /_sandbox/faults` answers it."""
        return {
            "default": dataclasses.asdict(self.default),
            "operations": {op: dataclasses.asdict(rule) for op, rule in self.operations.items()},
            "delivery": dataclasses.asdict(self.delivery),
        }


def _rule_from_json(cls: type[Rule], data: dict[str, Any]) -> Rule:
    """A rule dataclass from its JSON form; unknown names, and rates outside 0..1 or adding up past 1, are errors."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    rule = cls(**data)
    rates = [getattr(rule, name) for name in names if name.startswith("rate_")]
    if any(not 0 <= rate <= 1 for rate in rates) or sum(rates) > 1:
        raise ValueError("fault rates must each be within 0..1 and add up to at most 1")
    return rule


@dataclass
class SandboxConfig:
    """One sandbox run. The credentials are the sandbox's own, for development only."""

    host: str = "127.0.0.1"
    port: int = 8088  # 0 picks a free port
    tenant: str = "sandbox-tenant"
    customer_id: str = "sandbox-customer"
    api_key: str = "sandbox-api-key"
    api_secret: str = "sandbox-api-secret"
    token_ttl_s: float = 3600.0
    webhook_url: str | None = None  # creates one webhook and one channel per generation at start
    queue_id: str = "101"
    seed: int = 0

    agents: int = 2
    agent_accept_delay_s: float = 1.0
    agent_reply_delay_s: float = 0.5
    exchanges: int = 3  # customer messages an agent answers before leaving; 0 = never leaves
    transfer_probability: float = 0.0
    agent_extras: float = 0.0  # gateway: read receipts, and this share of answers with a file and a card

    delivery_timeout_s: float = 10.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    retry_max_attempts: int = 1000
    delivery_concurrency: int = 256

    max_conversations: int = 100_000
    log_size: int = 100_000
    faults: FaultConfig = field(default_factory=FaultConfig)
