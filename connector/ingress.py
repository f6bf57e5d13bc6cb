"""Settings of the webhook ingress (edge, signature, event agent), read from `CONNECTOR_*` variables.

They are kept apart from `connector.config.Settings` only until the lead merges them there; the
names, defaults and variables stay the same when that happens.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["IngressSettings"]


class IngressSettings(BaseSettings):
    """Every ingress setting. Each field is the variable `CONNECTOR_<FIELD NAME>`."""

    model_config = SettingsConfigDict(env_prefix="CONNECTOR_", case_sensitive=False, extra="ignore")

    webhook_verify_signatures: bool = Field(
        True, description="Verify 8x8's JWS on every webhook. Off only for development (logged loudly)."
    )
    webhook_replay_window_s: float = Field(
        300.0, gt=0, description="Largest distance of x-8x8-transmission-time from now, seconds (replay guard)."
    )
    webhook_max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest webhook body accepted (413 above).")
    webhook_append_timeout_s: float = Field(
        5.0, gt=0, description="How long the edge waits for Kafka's ack before answering 503 (8x8 retries)."
    )
    webhook_jwk_refetch_interval_s: float = Field(
        5.0, gt=0, description="Unknown signing key ids are fetched at most once per this many seconds (burst 3)."
    )
    events_hold_max: int = Field(
        10_000, ge=0, description="Events held per worker while their conversation's ref is not known yet."
    )
    events_hold_s: float = Field(
        30.0, ge=0, description="How long an event waits for its ref before it is published keyed by the 8x8 id."
    )
    events_dedupe_per_partition: int = Field(
        10_000, ge=1, description="Recent event ids remembered per partition of chat.webhooks.raw to drop retries."
    )
