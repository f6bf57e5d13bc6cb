"""Why Kafka refuses the connector, in one line naming the setting or the ACL to fix.

The Kafka clients hide most of these: kafka-python retries a failed TLS handshake or SASL login
until its bootstrap times out ("Unable to bootstrap"), and a Faust worker whose principal may not
use its consumer group waits for ever. `check` asks the brokers directly and fast (one connection
with aiokafka, which raises the TLS and SASL errors as they are; then the topics and the group
through kafka-python), and `describe` turns the clients' exceptions into the same kind of line.
Lines name users, hosts and files, never a password.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from functools import lru_cache

from connector.config import KafkaSecurityProtocol, Settings

__all__ = ["KafkaAccessError", "KafkaTrouble", "check", "describe", "principal", "probe"]

logger = logging.getLogger(__name__)

ACLS = "README, ACLs"
_TIMEOUT_S = 10.0
# Error codes of Kafka's Metadata answers for one topic.
_UNKNOWN_TOPIC = 3
_TOPIC_AUTHORIZATION_FAILED = 29


class KafkaAccessError(Exception):
    """The brokers cannot be used with these settings; the message is one line saying why."""


def principal(settings: Settings) -> str:
    """Who the brokers see: the SASL user, the subject of the client certificate, or the listener's anonymous user."""
    if settings.kafka_security_protocol.value.startswith("SASL"):
        return f"User:{settings.kafka_sasl_username}"
    if settings.kafka_security_protocol is KafkaSecurityProtocol.SSL and settings.kafka_ssl_certfile:
        return f"the principal of the client certificate {_subject(str(settings.kafka_ssl_certfile))}"
    return "User:ANONYMOUS"


def describe(exc: BaseException, settings: Settings, *, need: str | None = None) -> str:
    """One line for an exception of aiokafka, kafka-python or ssl; `need` is the ACL the failed call needed."""
    where = settings.kafka_bootstrap_servers
    name = type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "mismatch" in reason.lower():
            return (
                f"the certificate of the broker at {where} is not valid for that host ({reason}): use a name the "
                "certificate holds in CONNECTOR_KAFKA_BOOTSTRAP_SERVERS (or CONNECTOR_KAFKA_SSL_CHECK_HOSTNAME=false)"
            )
        trusted = f"CONNECTOR_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile}" if settings.kafka_ssl_cafile else "the system CAs"
        return (
            f"the certificate of the broker at {where} is not trusted ({reason}) by {trusted}: set "
            "CONNECTOR_KAFKA_SSL_CAFILE to the PEM file of the CA that signed the brokers"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS with the broker at {where} failed ({exc.reason or exc}): check CONNECTOR_KAFKA_SECURITY_PROTOCOL "
            "against the listener, and CONNECTOR_KAFKA_SSL_CERTFILE/KEYFILE for mutual TLS"
        )
    if name.startswith("SaslAuthenticationFailed") or name == "AuthenticationFailedError":
        return (
            f"Kafka at {where} refused the {settings.kafka_sasl_mechanism.value} login of user "
            f"{settings.kafka_sasl_username!r}: wrong password or unknown user "
            "(CONNECTOR_KAFKA_SASL_USERNAME, CONNECTOR_KAFKA_SASL_PASSWORD, CONNECTOR_KAFKA_SASL_MECHANISM)"
        )
    if name.startswith("IllegalSaslState"):
        return (
            f"the listener at {where} takes no SASL login: check CONNECTOR_KAFKA_SECURITY_PROTOCOL "
            f"({settings.kafka_security_protocol.value}) against the listener"
        )
    if name.startswith("UnsupportedSaslMechanism"):
        return (
            f"Kafka at {where} does not offer SASL {settings.kafka_sasl_mechanism.value} on this listener: "
            f"{_detail(exc)} (CONNECTOR_KAFKA_SASL_MECHANISM)"
        )
    if name == "TopicAuthorizationFailedError":
        return _refused(settings, need or f"Describe, Read or Write on Topic {_detail(exc)}")
    if name == "GroupAuthorizationFailedError":
        return _refused(settings, need or f"Read on Group {_detail(exc)}")
    if name == "ClusterAuthorizationFailedError":
        return _refused(settings, need or f"an operation on the Cluster ({_detail(exc)})")
    if name == "TransactionalIdAuthorizationFailedError":
        return _refused(settings, need or f"Write on TransactionalId ({_detail(exc)})")
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens at {where}: check CONNECTOR_KAFKA_BOOTSTRAP_SERVERS"
    if isinstance(exc, OSError):
        return f"cannot reach Kafka at {where}: {exc.strerror or exc} (CONNECTOR_KAFKA_BOOTSTRAP_SERVERS)"
    if name == "KafkaConnectionError" and settings.kafka_security_protocol is not KafkaSecurityProtocol.PLAINTEXT:
        return (
            f"the broker at {where} closed the connection while it was set up: it wants another "
            f"CONNECTOR_KAFKA_SECURITY_PROTOCOL than {settings.kafka_security_protocol.value}, or a client "
            "certificate it trusts (CONNECTOR_KAFKA_SSL_CERTFILE, CONNECTOR_KAFKA_SSL_KEYFILE)"
        )
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or name in ("KafkaTimeoutError", "NoBrokersAvailable"):
        return f"no Kafka broker answered at {where} in time (CONNECTOR_KAFKA_BOOTSTRAP_SERVERS): {_detail(exc)}"
    return f"Kafka at {where}: {name}: {_detail(exc)}"


async def probe(settings: Settings) -> str | None:
    """Why no connection to the brokers can be set up (TLS, SASL, network), or None when one can."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        context = settings.ssl_context()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return (
            "cannot load the TLS files (CONNECTOR_KAFKA_SSL_CAFILE, CONNECTOR_KAFKA_SSL_CERTFILE, "
            f"CONNECTOR_KAFKA_SSL_KEYFILE, CONNECTOR_KAFKA_SSL_KEY_PASSWORD): {getattr(exc, 'strerror', None) or exc}"
        )
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    # aiokafka < 0.13 lists its request classes by version; later ones pick the version themselves.
    metadata = MetadataRequest[0]([]) if isinstance(MetadataRequest, list) else MetadataRequest([])
    reason = None
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        connection = None
        try:
            connection = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    client_id=f"{settings.kafka_client_id}-check",
                    request_timeout_ms=int(_TIMEOUT_S * 1000),
                    ssl_context=context,
                    security_protocol=settings.kafka_security_protocol.value,
                    sasl_mechanism=settings.kafka_sasl_mechanism.value,
                    sasl_plain_username=settings.kafka_sasl_username,
                    sasl_plain_password=password,
                ),
                _TIMEOUT_S,
            )
            # A listener of another protocol may answer ApiVersions but closes the connection here.
            await asyncio.wait_for(connection.send(metadata), _TIMEOUT_S)
        except Exception as exc:  # the reason is in the kind: ssl, SASL, network
            reason = describe(exc, settings)
            if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
                continue  # this server is down: another may answer
            return reason
        finally:
            if connection is not None:
                connection.close()
        return None
    return reason


class KafkaTrouble:
    """Why a worker cannot use Kafka now, for `/readyz` while its Kafka check fails; logged at most once a minute."""

    def __init__(self, settings: Settings, log_every_s: float = 60.0) -> None:
        self._settings = settings
        self._log_every_s = log_every_s
        self._logged_at = -log_every_s

    async def __call__(self) -> str | None:
        reason = await probe(self._settings)
        if reason is not None and time.monotonic() - self._logged_at >= self._log_every_s:
            self._logged_at = time.monotonic()
            logger.error("kafka: %s", reason)
        return reason


def check(settings: Settings, *, topics: Iterable[str] = (), group: str | None = None) -> None:
    """Raise KafkaAccessError unless the brokers take a connection, and `topics` exist and may be
    described and `group` used by this principal."""
    reason = asyncio.run(probe(settings))
    if reason is not None:
        raise KafkaAccessError(reason)
    topics = list(topics)
    kafka_python = logging.getLogger("kafka")
    level = kafka_python.level
    kafka_python.setLevel(logging.CRITICAL)  # it logs each refusal too; KafkaAccessError says it once
    try:
        if topics:
            _check_topics(settings, topics)
        if group is not None:
            _check_group(settings, group, topics[0] if topics else settings.topic_commands)
    finally:
        kafka_python.setLevel(level)


def _check_topics(settings: Settings, topics: list[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**settings.kafka_python_config(), request_timeout_ms=int(_TIMEOUT_S * 1000))
    try:
        described = admin.describe_topics(topics)
    except Exception as exc:  # kafka-python raises many kinds
        raise KafkaAccessError(describe(exc, settings)) from None
    finally:
        admin.close()
    errors = {topic.get("name") or topic.get("topic"): topic.get("error_code") for topic in described}
    refused = [topic for topic in topics if errors.get(topic) == _TOPIC_AUTHORIZATION_FAILED]
    if refused:
        raise KafkaAccessError(_refused(settings, " and ".join(f"Describe on Topic {topic}" for topic in refused)))
    missing = [topic for topic in topics if errors.get(topic) == _UNKNOWN_TOPIC]
    if missing:  # a worker declares them itself, where its principal may create topics
        logger.warning("topics %s do not exist yet: `connector topics create` creates them", ", ".join(missing))


def _check_group(settings: Settings, group: str, topic: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        consumer.committed(TopicPartition(topic, 0))
    except Exception as exc:  # kafka-python raises many kinds
        raise KafkaAccessError(describe(exc, settings, need=f"Read on Group {group}")) from None
    finally:
        consumer.close()


def _refused(settings: Settings, need: str) -> str:
    return f"Kafka at {settings.kafka_bootstrap_servers} refuses {principal(settings)}: it needs {need} ({ACLS})"


def _detail(exc: BaseException) -> str:
    """The exception's own words without kafka-python's "[Error N] Name: " prefix."""
    text = str(exc)
    if text.startswith("[Error"):
        text = text.split("Error: ", 1)[-1].strip("{}").replace("'", "")
    return text or type(exc).__name__


@lru_cache(maxsize=8)
def _subject(certfile: str) -> str:
    """The subject of the first certificate in `certfile` (e.g. CN=connector), or the file name."""
    from cryptography import x509

    try:
        with open(certfile, "rb") as pem:
            return x509.load_pem_x509_certificate(pem.read()).subject.rfc4514_string()
    except (OSError, ValueError):
        return certfile
