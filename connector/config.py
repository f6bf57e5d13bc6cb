"""All configuration of the connector: one settings class, read from `CONNECTOR_*` variables.

Secrets are `SecretStr` so that they never print; each may also be read from a mounted file
named by the matching `*_FILE` variable (for Kubernetes Secrets and Docker secrets).
"""

from __future__ import annotations

import enum
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "ConfigError",
    "Generation",
    "KafkaSecurityProtocol",
    "SaslMechanism",
    "Settings",
    "load_settings",
]

ENV_PREFIX = "CONNECTOR_"
# The largest request the connector's producers send (aiokafka's and Kafka's default, 1 MiB); a
# raw webhook record is its body plus at most RECORD_OVERHEAD_BYTES of key, headers and framing.
KAFKA_MAX_REQUEST_BYTES = 1_048_576
RECORD_OVERHEAD_BYTES = 65_536
MAX_WEBHOOK_BODY_BYTES = KAFKA_MAX_REQUEST_BYTES - RECORD_OVERHEAD_BYTES


class Generation(str, enum.Enum):
    """The 8x8 chat API generation a deployment talks to."""

    CHAT_API_V2 = "chat-api-v2"
    CHAT_GATEWAY_V1 = "chat-gateway-v1"


class KafkaSecurityProtocol(str, enum.Enum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(str, enum.Enum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable and what is allowed."""


class Settings(BaseSettings):
    """Every setting of the connector. Each field is the variable `CONNECTOR_<FIELD NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated host:port."
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        KafkaSecurityProtocol.PLAINTEXT,
        description="How to talk to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        SaslMechanism.PLAIN,
        description="SASL mechanism when the protocol is SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (or CONNECTOR_KAFKA_SASL_PASSWORD_FILE)."
    )
    kafka_ssl_cafile: Path | None = Field(None, description="PEM file of the CA that signed the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of the client key, if it is encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(True, description="Check the brokers' host names against their certificates.")
    kafka_partitions: int = Field(
        8, ge=1, le=10_000, description="Partitions of every topic the connector creates (all co-partitioned)."
    )
    kafka_replication_factor: int = Field(
        1, ge=1, le=32, description="Replication factor of the topics the connector creates."
    )
    kafka_session_timeout_s: float = Field(
        30.0, gt=0, description="Consumer group session timeout: how soon partitions of a dead worker move on."
    )
    kafka_heartbeat_interval_s: float = Field(
        3.0, gt=0, description="Consumer group heartbeat interval (well below the session timeout)."
    )
    kafka_rebalance_timeout_s: float = Field(
        60.0, gt=0, description="How long a rebalance waits for every worker to rejoin."
    )
    kafka_group_instance_id: str | None = Field(
        None,
        description="Static group membership (KIP-345): a name unique to this worker that survives its restarts, "
        "e.g. the StatefulSet pod name. A worker restarted within the session timeout gets its partitions back "
        "at once, with no rebalance; unset, every restart rebalances and a crashed worker's partitions wait "
        "for the session timeout.",
    )
    kafka_client_id: str = Field("kafka-8x8-connector", description="Kafka client id prefix.")
    kafka_max_message_bytes: int = Field(
        1_048_588,
        ge=65_536,
        description="The largest record batch chat.commands takes (its max.message.bytes, which `connector topics "
        "create` sets; Kafka's default). The worker's producer and the DLQ topic take this plus 64 KiB, so that "
        "the DLQ copy of any command, with its error headers, fits.",
    )
    kafka_lag_interval_s: float = Field(
        15.0,
        gt=0,
        description="Seconds between two measurements of the consumer group's lag on the topics the worker reads "
        "(metric connector_consumer_lag_records): their end offsets and the group's committed offsets, three small "
        "requests to Kafka.",
    )

    # --- Schema registry -----------------------------------------------------------------------
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081/apis/ccompat/v7",
        description="Confluent-compatible Schema Registry URL (Apicurio: .../apis/ccompat/v7).",
    )
    schema_registry_username: str | None = Field(None, description="Schema Registry basic-auth user.")
    schema_registry_password: SecretStr | None = Field(None, description="Schema Registry basic-auth password.")
    schema_registry_auto_register: bool = Field(
        True,
        description="Register the connector's schemas at start when missing. false: look them up only (for a "
        "registry whose schemas a pipeline owns); a process then refuses to start, naming the subject, when "
        "one is missing.",
    )
    schema_registry_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA that signed the registry's certificate (default: the system's CAs)."
    )
    schema_registry_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate for a registry that wants mutual TLS."
    )
    schema_registry_ssl_keyfile: Path | None = Field(None, description="PEM private key of that client certificate.")
    schema_registry_ssl_key_password: SecretStr | None = Field(
        None, description="Password of the registry client key, if it is encrypted."
    )

    # --- Topics --------------------------------------------------------------------------------
    topic_commands: str = Field("chat.commands", description="Commands from enterprise systems.")
    topic_command_results: str = Field("chat.command-results", description="One result per command.")
    topic_commands_dlq: str = Field("chat.commands.dlq", description="Poison and permanently failed commands.")
    topic_events: str = Field("chat.events", description="Normalised 8x8 chat events (ChatEvent).")
    topic_transcripts: str = Field("chat.transcripts", description="Conversation transcripts read back from 8x8.")
    topic_webhooks_raw: str = Field("chat.webhooks.raw", description="Verified raw webhook POSTs.")

    # --- Faust worker --------------------------------------------------------------------------
    app_id: str = Field(
        "kafka-8x8-connector",
        description="Faust application id: consumer group and prefix of the table changelog topics.",
    )
    data_dir: Path = Field(Path("./connector-data"), description="Where Faust keeps local table state (RocksDB).")
    table_store: str = Field(
        "memory://", description="Faust table store: memory:// or rocksdb:// (needs the rocksdb extra)."
    )
    state_retention_s: float = Field(
        604_800.0,
        ge=0,
        description="How long an ENDED or FAILED conversation, and its refs and interactions entries, are kept "
        "after their last change; then they are deleted (tombstones, which compaction removes from the changelogs). "
        "An interactions entry of an 8x8 conversation that never had a ref goes this long after its last change. "
        "Checked every twentieth of this, at least every 10 minutes and at most every second.",
    )
    web_host: str = Field("0.0.0.0", description="Address the worker's or the edge's web servers bind.")
    web_port: int = Field(
        6066, ge=1, le=65535, description="Public port: webhooks (POST /webhooks/8x8), /healthz and /readyz only."
    )
    admin_port: int = Field(
        6067,
        ge=1,
        le=65535,
        description="Internal port, never public: /metrics, /conversations/{ref} and Faust's routing between workers.",
    )
    web_canonical_url: str | None = Field(
        None,
        description="URL other workers use to reach this one's admin port (table routes), e.g. "
        "http://pod-0.svc:6067; default http://<web host, or the host name if 0.0.0.0>:<admin port>.",
    )
    web_public_url: str | None = Field(
        None,
        description="Public URL 8x8 reaches this deployment at (its web-hook is <url>/webhooks/8x8), e.g. "
        "https://chat.example.com: `connector platform setup` and `check` use it.",
    )
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or as JSON objects (timestamp, level, logger, message and ids such as ref, "
        "command_id, conversation_id, error_code as fields) for log pipelines.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="The worker's event loop: uvloop (faster; a dependency) or Python's own asyncio loop."
    )

    # --- Webhook edge and event agent ------------------------------------------------------------
    worker_serve_webhooks: bool = Field(
        False,
        description="The worker serves POST /webhooks/8x8 on its public port too, for single-process set-ups "
        "(`connector dev`); otherwise `connector edge` does, and the worker's public port has health only.",
    )
    webhook_verify_signatures: bool = Field(
        True, description="Verify 8x8's JWS on every webhook. Off only for development (logged loudly)."
    )
    webhook_replay_window_s: float = Field(
        300.0, gt=0, description="Largest distance of x-8x8-transmission-time from now, seconds (replay guard)."
    )
    webhook_max_body_bytes: int = Field(
        524_288,
        ge=1024,
        description="Largest webhook body accepted (413 above); at most 983040, so that the record fits Kafka's 1 MiB.",
    )
    webhook_read_timeout_s: float = Field(
        10.0, gt=0, description="How long the edge waits for a whole webhook body before answering 408 (slow senders)."
    )
    webhook_append_timeout_s: float = Field(
        5.0, gt=0, description="How long the edge waits for Kafka's ack before answering 503 (8x8 retries)."
    )
    webhook_jwk_refetch_interval_s: float = Field(
        5.0,
        gt=0,
        description="A signing key id that was not found is fetched again after this many seconds, doubling per "
        "miss (each id on its own budget; 401 meanwhile, 503 if the fetch failed).",
    )
    webhook_jwk_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="A cached signing key older than this is refreshed in the background while still served; "
        "one that 8x8 no longer serves is dropped, one not confirmed for twice this long expires.",
    )
    webhook_replay_memory: int = Field(
        100_000,
        ge=1,
        description="Signed event ids whose body digest the edge remembers for the replay window (a different body "
        "under a remembered id is refused); the oldest are forgotten first beyond this.",
    )
    events_hold_max: int = Field(
        10_000, ge=0, description="Events held per worker while their conversation's ref is not known yet."
    )
    events_hold_s: float = Field(
        30.0, ge=0, description="How long an event waits for its ref before it is published keyed by the 8x8 id."
    )
    events_remap_window_s: float = Field(
        600.0,
        ge=0,
        description="How long an event published without its ref (hold ran out) is kept, so that it is published "
        "again with its ref if the mapping comes after all.",
    )
    events_dedupe_per_partition: int = Field(
        10_000, ge=1, description="Recent event ids remembered per partition of chat.webhooks.raw to drop retries."
    )
    events_dedupe_window_s: float = Field(
        3600.0,
        gt=0,
        description="How long a published event's id is remembered to drop 8x8's retries of it (within the "
        "per-partition count).",
    )

    # --- Command processor ----------------------------------------------------------------------
    command_max_attempts: int = Field(
        5, ge=1, description="Attempts per 8x8 call (network errors, timeouts, 429 and 5xx are retried)."
    )
    command_retry_max_s: float = Field(
        30.0, gt=0, description="Total seconds one call may spend retrying; a Retry-After beyond it gives up."
    )
    command_backoff_base_s: float = Field(
        0.2, gt=0, description="First backoff ceiling, seconds; doubles per attempt, full jitter."
    )
    command_backoff_cap_s: float = Field(5.0, gt=0, description="Largest backoff ceiling, seconds.")
    command_max_in_flight: int = Field(
        256, ge=1, description="8x8 requests in flight per worker (also the connection pool size)."
    )
    command_max_buffered: int = Field(
        10_000, ge=1, description="Commands held by the per-conversation lanes; the stream waits when full."
    )
    command_auto_end_s: float = Field(
        0.0,
        ge=0,
        description="End a conversation this long after the agent left, with no transfer and no new customer "
        "message; 0 = off.",
    )
    command_transcript_on_end: bool = Field(
        True, description="Publish a ConversationTranscript when a conversation ends."
    )
    command_attachment_max_bytes: int = Field(
        10_485_760,
        ge=1,
        description="Chat Gateway: the largest file a SendMessage may carry, or have fetched from its url, bytes.",
    )
    command_attachment_allowed_networks: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        [],
        description="Networks, comma separated CIDRs (e.g. 10.20.0.0/16,fd00:20::/32), that a SendMessage's "
        "attachment url may resolve to besides public addresses, for files served from inside. Empty: public "
        "addresses only; loopback, private, link-local (cloud metadata), CGNAT, multicast and reserved ones are "
        "refused (ATTACHMENT_UNAVAILABLE). `connector dev` allows loopback, where its sandbox serves files.",
    )
    command_revoke_grace_s: float = Field(
        15.0,
        gt=0,
        description="On a rebalance, how long commands already running may finish before they are cancelled "
        "(their partition's next owner runs them again); keep it well under the rebalance timeout.",
    )

    # --- 8x8 platform --------------------------------------------------------------------------
    platform_generation: Generation = Field(
        Generation.CHAT_API_V2, description="8x8 API generation: chat-api-v2 or chat-gateway-v1."
    )
    platform_base_url: str = Field(
        "https://api.8x8.com", description="8x8 API base URL (https://; the sandbox's in development)."
    )
    platform_allow_insecure_http: bool = Field(
        False,
        description="Accept an http:// 8x8 base URL (keys fetched in clear text). The sandbox only: logged loudly.",
    )
    platform_region: str = Field("us", description="Chat API v2 region in the path: us, eu, ca or ap.")
    platform_tenant_id: str = Field("", description="8x8 tenant id.")
    platform_api_key: SecretStr = Field(
        SecretStr(""), description="8x8 API key (v2: OAuth client id). Or CONNECTOR_PLATFORM_API_KEY_FILE."
    )
    platform_api_secret: SecretStr = Field(
        SecretStr(""), description="8x8 API secret (v2: OAuth client secret). Or CONNECTOR_PLATFORM_API_SECRET_FILE."
    )
    platform_channel_id: str = Field("", description="Default 8x8 chat channel for new conversations.")
    platform_timeout_s: float = Field(10.0, gt=0, description="Timeout of one 8x8 API request, seconds.")
    platform_token_refresh_margin_s: float = Field(
        60.0, ge=0, description="Chat API v2: refresh the OAuth token this long before it expires."
    )
    platform_find_max_pages: int = Field(
        20, ge=1, description="Chat Gateway: pages scanned to find a conversation by connectorRef."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Fill each secret from `CONNECTOR_<NAME>_FILE` (or a `<name>_file` keyword) when it is unset."""
        import os

        if not isinstance(data, dict):
            return data
        for name in _SECRET_FIELDS:
            path = data.pop(f"{name}_file", None) or os.environ.get(f"{ENV_PREFIX}{name.upper()}_FILE")
            if path and not data.get(name):
                try:
                    data[name] = Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(
                        f"{ENV_PREFIX}{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
                    ) from None
        return data

    @field_validator("command_attachment_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        """A comma separated list in the environment (like the bootstrap servers); a list as it is."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "Settings":
        if self.platform_region not in _REGIONS:
            raise ValueError(
                f"{ENV_PREFIX}PLATFORM_REGION: {self.platform_region!r} is not one of {', '.join(_REGIONS)}"
            )
        if self.kafka_security_protocol.value.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_USERNAME and {ENV_PREFIX}KAFKA_SASL_PASSWORD are required "
                f"with {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol.value}"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{ENV_PREFIX}LOG_LEVEL: {self.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
        if not self.table_store.startswith(("memory://", "rocksdb://")):
            raise ValueError(f"{ENV_PREFIX}TABLE_STORE: {self.table_store!r} is not memory:// or rocksdb://")
        for name in ("platform_base_url", "schema_registry_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: {getattr(self, name)!r} is not an http(s) URL")
        if self.platform_base_url.startswith("http://") and not self.platform_allow_insecure_http:
            raise ValueError(
                f"{ENV_PREFIX}PLATFORM_BASE_URL: {self.platform_base_url!r} is not https:// (signing keys would be "
                f"fetched in clear text); set {ENV_PREFIX}PLATFORM_ALLOW_INSECURE_HTTP=true for the sandbox only"
            )
        if self.webhook_max_body_bytes > MAX_WEBHOOK_BODY_BYTES:
            raise ValueError(
                f"{ENV_PREFIX}WEBHOOK_MAX_BODY_BYTES: {self.webhook_max_body_bytes} is more than "
                f"{MAX_WEBHOOK_BODY_BYTES}: a body that large does not fit a Kafka record of "
                f"{KAFKA_MAX_REQUEST_BYTES} bytes with its headers, and 8x8 would retry it for ever"
            )
        if self.web_port == self.admin_port:
            raise ValueError(f"{ENV_PREFIX}ADMIN_PORT: {self.admin_port} is also {ENV_PREFIX}WEB_PORT (the public port)")
        return self

    # --- derived values --------------------------------------------------------------------------

    def topics(self) -> dict[str, str]:
        """The connector's own topics by role (changelogs are Faust's)."""
        return {
            "commands": self.topic_commands,
            "command_results": self.topic_command_results,
            "commands_dlq": self.topic_commands_dlq,
            "events": self.topic_events,
            "transcripts": self.topic_transcripts,
            "webhooks_raw": self.topic_webhooks_raw,
        }

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for Kafka, or None when the protocol uses no TLS."""
        if self.kafka_security_protocol not in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL):
            return None
        context = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)
        context.check_hostname = self.kafka_ssl_check_hostname
        if self.kafka_ssl_certfile:
            password = self.kafka_ssl_key_password.get_secret_value() if self.kafka_ssl_key_password else None
            context.load_cert_chain(
                str(self.kafka_ssl_certfile),
                str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                password,
            )
        return context

    def schema_registry_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the registry when a CA or a client certificate is set, else None (system CAs)."""
        if not (self.schema_registry_ssl_cafile or self.schema_registry_ssl_certfile):
            return None
        cafile = self.schema_registry_ssl_cafile
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if self.schema_registry_ssl_certfile:
            password = self.schema_registry_ssl_key_password
            context.load_cert_chain(
                str(self.schema_registry_ssl_certfile),
                str(self.schema_registry_ssl_keyfile) if self.schema_registry_ssl_keyfile else None,
                password.get_secret_value() if password else None,
            )
        return context

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients (admin, CLI producer and consumer)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol.value,
            "client_id": self.kafka_client_id,
        }
        context = self.ssl_context()
        if context is not None:
            config["ssl_context"] = context
        if self.kafka_security_protocol.value.startswith("SASL"):
            config["sasl_mechanism"] = self.kafka_sasl_mechanism.value
            config["sasl_plain_username"] = self.kafka_sasl_username
            config["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()  # type: ignore[union-attr]
        return config

    def faust_broker_credentials(self) -> Any:
        """Faust's credentials object for the configured security protocol, or None."""
        import faust

        context = self.ssl_context()
        if self.kafka_security_protocol.value.startswith("SASL"):
            assert self.kafka_sasl_password is not None
            if self.kafka_sasl_mechanism is SaslMechanism.PLAIN:
                return faust.SASLCredentials(
                    username=self.kafka_sasl_username,
                    password=self.kafka_sasl_password.get_secret_value(),
                    ssl_context=context,
                )
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=self.kafka_sasl_password.get_secret_value(),
                ssl_context=context,
                mechanism=self.kafka_sasl_mechanism.value,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def faust_broker_url(self) -> str:
        return ";".join(f"kafka://{server.strip()}" for server in self.kafka_bootstrap_servers.split(","))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, turning validation errors into one clear ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


_REGIONS = ("us", "eu", "ca", "ap")
_SECRET_FIELDS = (
    "kafka_sasl_password",
    "kafka_ssl_key_password",
    "schema_registry_password",
    "schema_registry_ssl_key_password",
    "platform_api_key",
    "platform_api_secret",
)


def _describe(exc: ValidationError) -> str:
    """One line per wrong variable: its name, what was wrong, what is allowed. Never the secret value."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        location = [str(part) for part in error.get("loc", ()) if part]
        message = error["msg"].removeprefix("Value error, ")
        if location:
            lines.append(f"{ENV_PREFIX}{location[0].upper()}: {message}")
        else:
            lines.append(message)
    return "invalid configuration:\n  " + "\n  ".join(lines)
