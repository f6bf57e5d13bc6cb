"""8x8's prerequisites for a deployment: the web-hook and channel `setup` makes, and the `checks` that prove them.

`setup` is idempotent: it finds the web-hook that points at the deployment and a channel bound to it
before creating either. `checks` runs one check per prerequisite (8x8's credentials, channel, web-hook
and signing keys; Kafka, the registry and the topics) and says for each OK or why not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from connector.config import Generation, Settings
from connector.eightbyeight import Platform, PlatformError, open_platform
from connector.eightbyeight.base import Channel, Webhook

__all__ = ["WEBHOOK_PATH", "Check", "Setup", "checks", "setup", "webhook_url"]

WEBHOOK_PATH = "/webhooks/8x8"
# A key id 8x8 has no key for: its JWK endpoint answers 404 (it answers, with no credentials).
_PROBE_KID = "kafka-8x8-connector-check"


@dataclass
class Setup:
    """What `setup` found or did: the web-hook and channel (None on a dry run that would create them)."""

    webhook_url: str
    webhook: Webhook | None
    channel: Channel | None
    steps: list[str]


@dataclass(frozen=True)
class Check:
    """One prerequisite: its name, whether it holds, and what was found or why it fails."""

    name: str
    ok: bool
    detail: str


def webhook_url(public_url: str) -> str:
    """Where 8x8 posts this deployment's events."""
    return public_url.rstrip("/") + WEBHOOK_PATH


async def setup(platform: Platform, public_url: str, *, queue_id: str | None, name: str, dry_run: bool = False) -> Setup:
    """Find or create the web-hook to `<public_url>/webhooks/8x8` and a channel bound to it (on `queue_id`).

    An existing channel bound to the web-hook is used when its queue is `queue_id` (or none was
    given); a new one needs `queue_id` (ValueError without). `dry_run` creates nothing.
    """
    url = webhook_url(public_url)
    steps: list[str] = []
    webhook = next((w for w in await platform.webhooks() if w.uri == url), None)
    if webhook is None and queue_id is None:  # said before anything is created
        raise ValueError(f"no web-hook points at {url} yet: give the queue of the channel to create (--queue)")
    if webhook is not None:
        steps.append(f"web-hook {webhook.id} already points at {url}")
    elif dry_run:
        steps.append(f"would create a web-hook {name!r} to {url}")
    else:
        webhook = await platform.create_webhook(name, url)
        steps.append(f"created web-hook {webhook.id} to {url}")
    channel = None
    if webhook is not None:
        bound = [c for c in await platform.channels() if c.webhook_id == webhook.id]
        channel = next((c for c in bound if queue_id is None or c.queue_id == queue_id), None)
    if channel is not None:
        steps.append(f"channel {channel.id} ({channel.name}) already bound to it, queue {channel.queue_id}")
        return Setup(url, webhook, channel, steps)
    if queue_id is None:
        raise ValueError(f"no channel is bound to the web-hook to {url} yet: give the queue to create one on (--queue)")
    if dry_run:
        steps.append(f"would create a channel {name!r} bound to that web-hook, queue {queue_id}")
        return Setup(url, webhook, None, steps)
    assert webhook is not None
    channel = await platform.create_channel(name, webhook.id, queue_id)
    steps.append(f"created channel {channel.id} ({channel.name}) bound to web-hook {webhook.id}, queue {queue_id}")
    return Setup(url, webhook, channel, steps)


def checks(settings: Settings, *, kid: str | None = None) -> list[Check]:
    """Every prerequisite of the deployment, in order; `kid` asks for that signing key rather than any answer."""
    results = asyncio.run(_platform_checks(settings, kid))
    kafka = _kafka(settings)
    results += [kafka, _registry(settings)]
    if kafka.ok:
        results.append(_topics(settings))
    return results


async def _platform_checks(settings: Settings, kid: str | None) -> list[Check]:
    platform = open_platform(settings)
    try:
        results = await _on_8x8(platform, settings)
    finally:
        await platform.aclose()
    results.append(await _jwk(settings, kid))
    return results


async def _on_8x8(platform: Platform, settings: Settings) -> list[Check]:
    """Credentials, then the channel, then the channel's web-hook (each only if the one before holds)."""
    credential = (
        "the OAuth client (CONNECTOR_PLATFORM_API_KEY/_SECRET)"
        if settings.platform_generation is Generation.CHAT_API_V2
        else "the API key (CONNECTOR_PLATFORM_API_KEY)"
    )
    try:
        webhooks = await platform.webhooks()
    except PlatformError as exc:
        return [Check("8x8 credentials", False, f"{credential} at {settings.platform_base_url}: {exc}")]
    results = [Check("8x8 credentials", True, f"{credential} accepted ({platform.generation})")]
    channel_id = settings.platform_channel_id
    if not channel_id:
        results.append(Check("channel", False, "CONNECTOR_PLATFORM_CHANNEL_ID is empty (`connector platform setup` prints it)"))
        return results
    try:
        channel = await platform.channel(channel_id)
    except PlatformError as exc:
        results.append(Check("channel", False, f"channel {channel_id}: {exc}"))
        return results
    if channel is None:
        results.append(Check("channel", False, f"8x8 has no channel {channel_id} (CONNECTOR_PLATFORM_CHANNEL_ID)"))
        return results
    results.append(Check("channel", True, f"channel {channel.id} ({channel.name}), queue {channel.queue_id}"))
    webhook = next((w for w in webhooks if w.id == channel.webhook_id), None)
    if webhook is None:
        results.append(Check("web-hook", False, f"channel {channel.id} is bound to web-hook {channel.webhook_id}, which 8x8 does not have"))
    elif not settings.web_public_url:
        results.append(Check("web-hook", False, f"CONNECTOR_WEB_PUBLIC_URL is not set; the channel's web-hook points at {webhook.uri}"))
    elif webhook.uri != webhook_url(settings.web_public_url):
        results.append(
            Check("web-hook", False, f"web-hook {webhook.id} points at {webhook.uri}, not at {webhook_url(settings.web_public_url)}")
        )
    else:
        results.append(Check("web-hook", True, f"web-hook {webhook.id} points at {webhook.uri}"))
    return results


async def _jwk(settings: Settings, kid: str | None) -> Check:
    """8x8's signing-key endpoint answers: a JWK object for `kid`, or for the probe id a JSON 404."""
    from connector.signature import jwk_url

    url = jwk_url(settings, kid or _PROBE_KID)
    try:
        async with httpx.AsyncClient(timeout=settings.platform_timeout_s) as client:
            answer = await client.get(url)
    except httpx.HTTPError as exc:
        return Check("signing keys", False, f"{url}: {type(exc).__name__} {exc}".strip())
    wanted = (200,) if kid else (200, 404)
    if answer.status_code not in wanted or not answer.headers.get("content-type", "").split(";")[0].endswith("json"):
        return Check("signing keys", False, f"{url} answered HTTP {answer.status_code} {answer.headers.get('content-type', '')}".strip())
    return Check("signing keys", True, f"{url.rsplit('/jwk/', 1)[0]}/jwk/ answers")


def _kafka(settings: Settings) -> Check:
    from connector.kafka_errors import KafkaAccessError, check

    try:
        check(settings)
    except KafkaAccessError as exc:
        return Check("Kafka", False, str(exc))
    return Check("Kafka", True, f"brokers at {settings.kafka_bootstrap_servers} answer")


def _registry(settings: Settings) -> Check:
    from connector.schemas import sync_registry

    try:
        sync_registry(settings).get_subjects()
    except Exception as exc:  # the registry client raises several kinds
        return Check("Schema Registry", False, f"{settings.schema_registry_url}: {type(exc).__name__} {exc}".strip())
    return Check("Schema Registry", True, f"{settings.schema_registry_url} answers")


def _topics(settings: Settings) -> Check:
    from connector.topics import partition_counts, topic_specs

    specs = topic_specs(settings)
    try:
        counts = partition_counts(settings, [spec.name for spec in specs])
    except Exception as exc:  # kafka-python raises many kinds
        from connector.kafka_errors import describe

        return Check("topics", False, describe(exc, settings))
    missing = [spec.name for spec in specs if spec.name not in counts]
    wrong = [f"{spec.name} has {counts[spec.name]}" for spec in specs if spec.name in counts and counts[spec.name] != spec.partitions]
    if missing:
        return Check("topics", False, f"missing: {', '.join(missing)} (`connector topics create`)")
    if wrong:
        return Check("topics", False, f"expected {settings.kafka_partitions} partitions (CONNECTOR_KAFKA_PARTITIONS): {'; '.join(wrong)}")
    return Check("topics", True, f"{len(specs)} topics, {settings.kafka_partitions} partitions each")
