"""`connector platform`: 8x8's web-hooks and channels, the deployment's set-up and its checks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from connector.eightbyeight import Platform

__all__ = ["platform_app"]

T = TypeVar("T")

platform_app = typer.Typer(no_args_is_help=True, help="8x8 set-up: web-hooks, channels, `setup` and `check`.")
webhooks_app = typer.Typer(no_args_is_help=True, help="8x8 web-hooks (where 8x8 posts events).")
channels_app = typer.Typer(no_args_is_help=True, help="8x8 chat channels (bound to a web-hook and a queue).")
platform_app.add_typer(webhooks_app, name="webhooks")
platform_app.add_typer(channels_app, name="channels")

_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
_NAME = "kafka-8x8-connector"


@webhooks_app.command("list")
def webhooks_list(as_json: bool = _JSON) -> None:
    """Every web-hook of the tenant."""
    webhooks = _call(lambda platform: platform.webhooks())
    _print(webhooks, ("id", "name", "version", "uri"), as_json)


@webhooks_app.command("create")
def webhooks_create(
    url: str = typer.Option(..., "--url", help="Where 8x8 posts the events (https://<host>/webhooks/8x8)."),
    name: str = typer.Option(_NAME, "--name"),
    as_json: bool = _JSON,
) -> None:
    """Register a web-hook; 8x8 sends it WEB_HOOK_VERIFY at once."""
    _print([_call(lambda platform: platform.create_webhook(name, url))], ("id", "name", "version", "uri"), as_json)


@webhooks_app.command("verify")
def webhooks_verify(webhook_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Have 8x8 send WEB_HOOK_VERIFY to a web-hook's URL now; exit 1 unless it answered 2xx."""

    async def verify(platform: Platform) -> str:
        webhook = next((w for w in await platform.webhooks() if w.id == webhook_id), None)
        if webhook is None:
            _fail(f"8x8 has no web-hook {webhook_id}")
        await platform.verify_webhook(webhook)
        return webhook.uri

    typer.echo(f"web-hook {webhook_id}: {_call(verify)} answered WEB_HOOK_VERIFY")


@webhooks_app.command("delete")
def webhooks_delete(webhook_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Remove a web-hook."""
    _call(lambda platform: platform.delete_webhook(webhook_id))
    typer.echo(f"deleted web-hook {webhook_id}")


@channels_app.command("list")
def channels_list(as_json: bool = _JSON) -> None:
    """Every chat channel of the tenant."""
    _print(_call(lambda platform: platform.channels()), ("id", "name", "webhook_id", "queue_id"), as_json)


@channels_app.command("create")
def channels_create(
    name: str = typer.Option(..., "--name"),
    webhook: str = typer.Option(..., "--webhook", help="Id of the web-hook the channel's events go to."),
    queue: str = typer.Option(..., "--queue", help="Id of the chat queue its conversations wait in."),
    as_json: bool = _JSON,
) -> None:
    """Create a channel bound to a web-hook and a queue."""
    channel = _call(lambda platform: platform.create_channel(name, webhook, queue))
    _print([channel], ("id", "name", "webhook_id", "queue_id"), as_json)


@channels_app.command("delete")
def channels_delete(channel_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Remove a channel."""
    _call(lambda platform: platform.delete_channel(channel_id))
    typer.echo(f"deleted channel {channel_id}")


@platform_app.command("setup")
def platform_setup(
    public_url: str | None = typer.Option(
        None, "--public-url", help="This deployment's public URL (default: CONNECTOR_WEB_PUBLIC_URL)."
    ),
    queue: str | None = typer.Option(None, "--queue", help="Chat queue of the channel, when one is created."),
    name: str = typer.Option(_NAME, "--name", help="Name of the web-hook and channel created."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be done; change nothing."),
) -> None:
    """Find or create the web-hook to <public-url>/webhooks/8x8 and a channel bound to it (idempotent)."""
    from connector.cli import load_or_exit
    from connector.platform_setup import setup

    url = public_url or load_or_exit().web_public_url
    if not url:
        _fail("give --public-url or set CONNECTOR_WEB_PUBLIC_URL")
    try:
        done = _call(lambda platform: setup(platform, url, queue_id=queue, name=name, dry_run=dry_run))
    except ValueError as exc:
        _fail(str(exc))
    for step in done.steps:
        typer.echo(step)
    if done.channel is not None:
        typer.echo(f"CONNECTOR_PLATFORM_CHANNEL_ID={done.channel.id}")


@platform_app.command("check")
def platform_check(
    kid: str | None = typer.Option(None, "--kid", help="Ask 8x8 for this signing key (default: any answer will do)."),
) -> None:
    """Check every prerequisite (8x8 credentials, channel, web-hook, signing keys, Kafka, registry, topics);
    one line each, exit 1 if any fails."""
    from connector.cli import load_or_exit
    from connector.platform_setup import checks

    results = checks(load_or_exit(), kid=kid)
    width = max(len(result.name) for result in results)
    for result in results:
        typer.echo(f"{'OK    ' if result.ok else 'FAILED'} {result.name:<{width}}  {result.detail}")
    if not all(result.ok for result in results):
        raise typer.Exit(1)


def _call(work: Callable[[Platform], Awaitable[T]]) -> T:
    """Run `work` with the configured generation's adapter; exit 1 with 8x8's reason when a call fails."""
    from connector.cli import load_or_exit
    from connector.eightbyeight import PlatformError, open_platform

    settings = load_or_exit()

    async def run() -> T:
        platform = open_platform(settings)
        try:
            return await work(platform)
        finally:
            await platform.aclose()

    try:
        return asyncio.run(run())
    except PlatformError as exc:
        _fail(str(exc))


def _print(items: Sequence[Any], columns: Sequence[str], as_json: bool) -> None:
    rows = [dataclasses.asdict(item) for item in items]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    cells = [[c.upper().replace("_", " ") for c in columns]] + [[str(row[c] or "") for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
