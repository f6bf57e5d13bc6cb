"""`connector sandbox`: run the 8x8 stand-in in the foreground until interrupted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from connector.sandbox.config import FaultConfig, FaultRule, SandboxConfig

if TYPE_CHECKING:
    from connector.sandbox.server import RunningSandbox

__all__ = ["sandbox_command"]


def sandbox_command(
    port: int = typer.Option(8088, help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 to serve other machines/containers)."),
    tenant: str = typer.Option("sandbox-tenant", help="The tenant id the sandbox accepts and signs webhooks with."),
    customer_id: str = typer.Option("sandbox-customer", help="The customer id in webhook headers and signatures."),
    api_key: str = typer.Option("sandbox-api-key", help="Sandbox API key: v2 client id and gateway x-api-key."),
    api_secret: str = typer.Option("sandbox-api-secret", help="Sandbox API secret (v2 client credentials)."),
    token_ttl: float = typer.Option(3600.0, help="Seconds a v2 access token stays valid."),
    webhook_url: str | None = typer.Option(
        None, help="Start with one webhook to this URL and one channel on it for each API generation."
    ),
    queue_id: str = typer.Option("101", help="Queue of the channels created by --webhook-url."),
    seed: int = typer.Option(0, help="Seed of every random choice (ids, agents, faults): same seed, same run."),
    agents: int = typer.Option(2, help="Agents shared by all queues; more conversations than agents wait."),
    accept_delay: float = typer.Option(1.0, help="Seconds before a free agent accepts a queued interaction."),
    reply_delay: float = typer.Option(0.5, help="Seconds an agent takes to answer a customer message."),
    exchanges: int = typer.Option(3, help="Customer messages an agent answers before leaving (0: never leaves)."),
    transfer_probability: float = typer.Option(0.0, help="Chance an agent transfers instead of leaving (once per interaction)."),
    agent_extras: float = typer.Option(
        0.3, help="Chat Gateway: agents send read receipts, and this share of their answers carries a file and a card (0: neither)."
    ),
    latency_ms: float = typer.Option(0.0, help="Latency added to every 8x8 API call, in ms."),
    latency_jitter_ms: float = typer.Option(0.0, help="Uniform jitter around --latency-ms, in ms."),
    rate_429: float = typer.Option(0.0, help="Share of API calls answered 429 without Retry-After."),
    rate_429_retry_after: float = typer.Option(0.0, help="Share of API calls answered 429 with Retry-After."),
    rate_500: float = typer.Option(0.0, help="Share of API calls answered 500."),
    rate_503: float = typer.Option(0.0, help="Share of API calls answered 503."),
    rate_timeout: float = typer.Option(0.0, help="Share of API calls never answered (held past client timeouts)."),
    rate_drop: float = typer.Option(0.0, help="Share of API calls whose connection is closed unanswered."),
    rate_drop_after: float = typer.Option(0.0, help="Share of API calls that take effect, then are closed unanswered."),
    faults_file: Path | None = typer.Option(
        None, help="JSON fault configuration by operation id (as PUT /_sandbox/faults takes); overrides the rates."
    ),
    delivery_timeout: float = typer.Option(10.0, help="Seconds one webhook delivery attempt may take."),
    retry_initial: float = typer.Option(0.2, help="First pause before a webhook retry, in seconds (then doubling)."),
    retry_max: float = typer.Option(5.0, help="Longest pause between webhook retries, in seconds."),
    retry_attempts: int = typer.Option(1000, help="Delivery attempts per event before it is abandoned."),
    max_conversations: int = typer.Option(100_000, help="Conversations remembered; the oldest ended are evicted first."),
    log_size: int = typer.Option(100_000, help="Entries kept in the request and delivery logs."),
) -> None:
    """Run a local stand-in for 8x8's chat APIs (v2 and Chat Gateway) with a simulated contact center."""
    if faults_file is not None:
        faults = FaultConfig.from_json(json.loads(faults_file.read_text()))
    else:
        faults = FaultConfig(
            default=FaultRule.from_json(
                {
                    "latency_ms": latency_ms,
                    "latency_jitter_ms": latency_jitter_ms,
                    "rate_429": rate_429,
                    "rate_429_retry_after": rate_429_retry_after,
                    "rate_500": rate_500,
                    "rate_503": rate_503,
                    "rate_timeout": rate_timeout,
                    "rate_drop": rate_drop,
                    "rate_drop_after": rate_drop_after,
                }
            )
        )
    config = SandboxConfig(
        host=host,
        port=port,
        tenant=tenant,
        customer_id=customer_id,
        api_key=api_key,
        api_secret=api_secret,
        token_ttl_s=token_ttl,
        webhook_url=webhook_url,
        queue_id=queue_id,
        seed=seed,
        agents=agents,
        agent_accept_delay_s=accept_delay,
        agent_reply_delay_s=reply_delay,
        exchanges=exchanges,
        transfer_probability=transfer_probability,
        agent_extras=agent_extras,
        delivery_timeout_s=delivery_timeout,
        retry_initial_s=retry_initial,
        retry_max_s=retry_max,
        retry_max_attempts=retry_attempts,
        max_conversations=max_conversations,
        log_size=log_size,
        faults=faults,
    )
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass


async def _serve(config: SandboxConfig) -> None:
    from connector.sandbox.server import start_sandbox  # here: the other commands need not import the server

    running = await start_sandbox(config)
    try:
        typer.echo(_banner(running, config))
        await asyncio.Event().wait()
    finally:
        await running.stop()


def _banner(running: RunningSandbox, config: SandboxConfig) -> str:
    """What to point a connector at; the credentials are the sandbox's own, not real 8x8 ones."""
    info = running.info
    urls = info["urls"]
    lines = [
        f"8x8 sandbox listening on {running.url}",
        "",
        "Sandbox credentials (development only, not real 8x8 credentials):",
        f"  tenant        {config.tenant}",
        f"  api key       {config.api_key}",
        f"  api secret    {config.api_secret}",
        f"  customer id   {config.customer_id}",
        f"  signing kid   {info['kid']}",
        "",
        f"  Chat API v2       {urls['chat-api-v2']}   (token: {urls['token']})",
        f"  Chat Gateway v1   {urls['chat-gateway-v1']}",
        f"  admin             {urls['admin']}/info, /requests, /deliveries, /conversations, /faults, /reset",
        f"  console           {urls['console']}  (watch conversations, play the agent, set faults)",
    ]
    if config.webhook_url:
        lines += ["", f"Webhooks to {config.webhook_url}:"]
        for generation in ("chat-api-v2", "chat-gateway-v1"):
            ids = info[generation]
            lines.append(f"  {generation:16}  channel id {', '.join(ids['channels'])}   webhook id {', '.join(ids['webhooks'])}")
    lines += ["", f"{config.agents} agents, seed {config.seed}. Ctrl-C to stop."]
    return "\n".join(lines)
