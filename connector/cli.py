"""The `connector` command line: one entry point for operators, developers and scripts."""

from __future__ import annotations

from pathlib import Path

import typer

from connector.config import ConfigError, Generation, Settings, load_settings
from connector.platform_cli import platform_app
from connector.sandbox.cli import sandbox_command

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Kafka <-> 8x8 Contact Center chat connector.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics of the connector.")
schemas_app = typer.Typer(no_args_is_help=True, help="Avro schemas in the Schema Registry.")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.command("sandbox")(sandbox_command)
app.add_typer(platform_app, name="platform")

# `connector send --wait`: 1 when a result says FAILED (or nothing could be sent), 3 when a result did not come in time.
EXIT_FAILED = 1
EXIT_TIMEOUT = 3


def _print_version(value: bool) -> None:
    if value:
        from connector import __version__

        typer.echo(f"connector {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Kafka <-> 8x8 Contact Center chat connector."""


def load_or_exit() -> Settings:
    """The settings, or exit 2 with the message that names the wrong variable."""
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def kafka_or_exit(settings: Settings, doing: str) -> None:
    """Exit 1 with one line when the brokers refuse the connection, the TLS handshake or the login
    (said at once, where kafka-python would retry until its bootstrap timeout)."""
    from connector.kafka_errors import KafkaAccessError, check

    try:
        check(settings)
    except KafkaAccessError as exc:
        typer.echo(f"error: {doing}: {exc}", err=True)
        raise typer.Exit(1) from None


def kafka_failure(settings: Settings, doing: str, exc: Exception) -> typer.Exit:
    """Print what went wrong with Kafka, or with the Schema Registry, as one line (its own words for a connector
    error); the exit to raise."""
    import httpx
    from schema_registry.client.errors import ClientError

    from connector.client import PublishError
    from connector.kafka_errors import KafkaAccessError, describe
    from connector.schemas import RegistryUnavailable, SchemaMissing

    if isinstance(exc, PublishError):  # it names the topic itself
        typer.echo(f"error: {exc}", err=True)
    elif isinstance(exc, (SchemaMissing, RegistryUnavailable, ClientError, httpx.HTTPError)):
        typer.echo(f"error: {doing}: Schema Registry at {settings.schema_registry_url}: {type(exc).__name__}: {exc}", err=True)
    else:
        reason = str(exc) if isinstance(exc, KafkaAccessError) else describe(exc, settings)
        typer.echo(f"error: {doing}: {reason}", err=True)
    return typer.Exit(1)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the connector (idempotent), table changelogs included."""
    from connector.topics import create_topics

    settings = load_or_exit()
    kafka_or_exit(settings, "cannot create topics")
    try:
        outcome = create_topics(settings)
    except Exception as exc:  # kafka-python raises many kinds; say which and where
        raise kafka_failure(settings, "cannot create topics", exc) from None
    for name, state in outcome.items():
        typer.echo(f"{name}: {state}")


@schemas_app.command("register")
def schemas_register() -> None:
    """Register every Avro schema under its topic's subject, with the subject's compatibility level (idempotent)."""
    from connector.schemas import register_all

    settings = load_or_exit()
    try:
        ids = register_all(settings)
    except Exception as exc:  # the registry client raises several kinds
        typer.echo(f"error: cannot register schemas at {settings.schema_registry_url}: {exc}", err=True)
        raise typer.Exit(1) from None
    for subject, (schema_id, level) in ids.items():
        typer.echo(f"{subject}: id {schema_id}, compatibility {level}")


@app.command()
def dev(
    sandbox_port: int = typer.Option(8088, help="Port of the 8x8 sandbox."),
    generation: Generation = typer.Option(Generation.CHAT_API_V2, help="8x8 API generation the worker uses."),
) -> None:
    """Run the 8x8 sandbox and a worker wired to it on the local stack (what `make dev` runs)."""
    from connector.dev import run_dev

    raise typer.Exit(run_dev(load_or_exit(), sandbox_port=sandbox_port, generation=generation, echo=typer.echo))


@app.command()
def worker() -> None:
    """Run a connector worker (Faust): command, event and status agents (webhooks too if
    CONNECTOR_WORKER_SERVE_WEBHOOKS=true)."""
    from connector.runtime import run_worker

    run_worker(load_or_exit())


@app.command()
def edge() -> None:
    """Run the webhook edge, a stateless process: verify 8x8's webhooks, append them to Kafka, answer."""
    from connector.edge import run_edge

    run_edge(load_or_exit())


# --- events (webhook ingress): `connector events ...` -----------------------------------------
events_app = typer.Typer(no_args_is_help=True, help="Normalised 8x8 chat events on Kafka.")
app.add_typer(events_app, name="events")


@events_app.command("tail")
def events_tail(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record, not the newest."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after this many records."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.1, help="Stop after this many idle seconds."),
    ref: str | None = typer.Option(None, "--ref", help="Only the events of this conversation reference."),
) -> None:
    """Print the ChatEvent records of chat.events, decoded through the Schema Registry."""
    from connector.tail import tail

    settings = load_or_exit()
    kafka_or_exit(settings, f"cannot tail {settings.topic_events}")
    try:
        count = tail(
            settings, from_beginning=from_beginning, limit=limit, timeout_s=timeout, echo=typer.echo, as_json=as_json, ref=ref
        )
    except KeyboardInterrupt:
        return
    except Exception as exc:  # kafka-python and the registry client raise many kinds
        raise kafka_failure(settings, f"cannot tail {settings.topic_events}", exc) from None
    if count == 0 and timeout is not None:
        start = "the oldest record" if from_beginning else "the newest record (--from-beginning reads older ones)"
        typer.echo(f"no event{f' of {ref}' if ref else ''} in {timeout:g}s; stopped (tail started at {start})", err=True)



# --- the command DLQ: `connector dlq ...` ----------------------------------------------------
dlq_app = typer.Typer(no_args_is_help=True, help="The command DLQ: failed and unreadable commands.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("tail")
def dlq_tail(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record, not the newest."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after this many records."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.1, help="Stop after this many idle seconds."),
    ref: str | None = typer.Option(None, "--ref", help="Only the records of this conversation reference."),
) -> None:
    """Print the DLQ's records: ref, command id, error code and message, where the command was read."""
    from connector.dlq import tail

    settings = load_or_exit()
    kafka_or_exit(settings, f"cannot tail {settings.topic_commands_dlq}")
    try:
        count = tail(settings, from_beginning=from_beginning, limit=limit, timeout_s=timeout, echo=typer.echo, as_json=as_json, ref=ref)
    except KeyboardInterrupt:
        return
    except Exception as exc:  # kafka-python and the registry client raise many kinds
        raise kafka_failure(settings, f"cannot tail {settings.topic_commands_dlq}", exc) from None
    if count == 0 and timeout is not None:
        start = "the oldest record" if from_beginning else "the newest record (--from-beginning reads older ones)"
        typer.echo(f"no DLQ record{f' of {ref}' if ref else ''} in {timeout:g}s; stopped (tail started at {start})", err=True)


@dlq_app.command("replay")
def dlq_replay(
    ref: str | None = typer.Option(None, "--ref", help="Replay the records of this conversation reference."),
    replay_all: bool = typer.Option(False, "--all", help="Replay every record of the DLQ."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be replayed; send nothing."),
    new_ids: bool = typer.Option(
        False, "--new-ids", help="Give each command a new id, so that one the connector answered runs again."
    ),
) -> None:
    """Send DLQ records back to chat.commands: original key, value and headers (same command ids unless --new-ids)."""
    from connector.dlq import replay

    if (ref is None) == (not replay_all):
        typer.echo("error: say which records: --ref REF or --all", err=True)
        raise typer.Exit(2)
    settings = load_or_exit()
    kafka_or_exit(settings, f"cannot replay {settings.topic_commands_dlq}")
    try:
        outcome = replay(settings, ref=ref, dry_run=dry_run, new_ids=new_ids, echo=typer.echo)
    except Exception as exc:  # kafka-python and the registry client raise many kinds
        raise kafka_failure(settings, f"cannot replay {settings.topic_commands_dlq}", exc) from None
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {outcome.sent} record(s), skipped {outcome.skipped}", err=True)


# --- send / conversations (command processor): `connector send ...`, `connector conversations ...`
send_app = typer.Typer(no_args_is_help=True, help="Publish conversation commands to chat.commands.")
conversations_app = typer.Typer(no_args_is_help=True, help="Conversations as the workers know them.")
app.add_typer(send_app, name="send")
app.add_typer(conversations_app, name="conversations")

_WAIT = typer.Option(
    False, "--wait", help="Wait for the CommandResult, print it as JSON; exit 1 if it FAILED, 3 if it did not come in time."
)
_TIMEOUT = typer.Option(60.0, "--timeout", min=0.1, help="Seconds --wait waits for the result.")


@send_app.callback()
def send_options(
    traceparent: str | None = typer.Option(
        None, "--traceparent", help="W3C trace context the commands carry (so do their results, transcripts, 8x8 requests)."
    ),
) -> None:
    """Publish conversation commands to chat.commands."""
    from connector import tracing

    if traceparent is not None:
        try:
            tracing.current.set(tracing.checked(traceparent))  # the publisher sends it with each command
        except ValueError as exc:
            typer.echo(f"error: --traceparent: {exc}", err=True)
            raise typer.Exit(2) from None


@send_app.command("start")
def send_start(
    ref: str = typer.Option(..., "--ref", help="Your conversation reference (the record key)."),
    name: str = typer.Option(..., "--name", help="Customer name the agent sees."),
    email: str | None = typer.Option(None, "--email"),
    phone: str | None = typer.Option(None, "--phone"),
    company: str | None = typer.Option(None, "--company"),
    case_id: str | None = typer.Option(None, "--case-id"),
    customer_id: str | None = typer.Option(None, "--customer-id"),
    language: str | None = typer.Option(None, "--language"),
    prop: list[str] = typer.Option([], "--property", help="KEY=VALUE customer property; repeatable."),
    channel: str | None = typer.Option(None, "--channel", help="8x8 channel (default: CONNECTOR_PLATFORM_CHANNEL_ID)."),
    text: str | None = typer.Option(None, "--text", help="The customer's first message, sent after the start."),
    wait: bool = _WAIT,
    timeout: float = _TIMEOUT,
) -> None:
    """Start a conversation with a contact-center agent."""
    properties = {}
    for item in prop:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.echo(f"error: --property {item!r} is not KEY=VALUE", err=True)
            raise typer.Exit(2)
        properties[key] = value
    fields = dict(
        name=name, email=email, phone=phone, company=company, case_id=case_id,
        customer_id=customer_id, language=language, properties=properties, channel_id=channel,
    )
    _send(lambda publisher: publisher.start(ref, text=text or None, **fields).command_ids, wait, timeout)


@send_app.command("message")
def send_message(
    ref: str = typer.Option(..., "--ref"),
    text: str = typer.Option("", "--text", help="The message text (may be empty with --attach)."),
    attach: list[Path] = typer.Option(
        [], "--attach", exists=True, dir_okay=False, readable=True, help="A file to send with it (Chat Gateway); repeatable."
    ),
    bot: bool = typer.Option(False, "--bot", help="Send as a bot message instead of the customer."),
    wait: bool = _WAIT,
    timeout: float = _TIMEOUT,
) -> None:
    """Send a customer (or bot) message into the conversation."""
    from connector.client import Attachment

    if not text and not attach:
        typer.echo("error: give --text, --attach, or both", err=True)
        raise typer.Exit(2)
    files = [Attachment.from_path(path) for path in attach]
    author_type = "BOT" if bot else "USER"
    _send(lambda publisher: [publisher.message(ref, text, author_type=author_type, attachments=files)], wait, timeout)


@send_app.command("typing")
def send_typing(
    ref: str = typer.Option(..., "--ref"),
    on: bool = typer.Option(True, "--on/--off", help="The customer is typing (--on) or stopped (--off)."),
    wait: bool = _WAIT,
    timeout: float = _TIMEOUT,
) -> None:
    """Show the agent that the customer is typing (Chat Gateway)."""
    _send(lambda publisher: [publisher.typing(ref, active=on)], wait, timeout)


@send_app.command("read")
def send_read(
    ref: str = typer.Option(..., "--ref"),
    message_id: str = typer.Option(..., "--message-id", help="The last message read (a ChatEvent's message_id)."),
    wait: bool = _WAIT,
    timeout: float = _TIMEOUT,
) -> None:
    """Send a read receipt for every message up to this one (Chat Gateway)."""
    _send(lambda publisher: [publisher.mark_read(ref, message_id)], wait, timeout)


@send_app.command("end")
def send_end(
    ref: str = typer.Option(..., "--ref"),
    reason: str | None = typer.Option(None, "--reason"),
    wait: bool = _WAIT,
    timeout: float = _TIMEOUT,
) -> None:
    """End the conversation (the customer leaves; frees the agent)."""
    _send(lambda publisher: [publisher.end(ref, reason=reason)], wait, timeout)


@send_app.command("transcript")
def send_transcript(ref: str = typer.Option(..., "--ref"), wait: bool = _WAIT, timeout: float = _TIMEOUT) -> None:
    """Have the conversation read back from 8x8 and published to chat.transcripts."""
    _send(lambda publisher: [publisher.fetch_transcript(ref)], wait, timeout)


@conversations_app.command("show")
def conversations_show(
    ref: str = typer.Argument(..., help="The conversation reference."),
    url: str | None = typer.Option(
        None, "--url", help="A worker's internal admin URL (default: this host's CONNECTOR_ADMIN_PORT)."
    ),
) -> None:
    """Print what the workers know of one conversation, as JSON (any worker answers for any ref)."""
    import json
    from urllib.parse import quote

    import httpx

    settings = load_or_exit()
    base = url or f"http://127.0.0.1:{settings.admin_port}"
    try:
        response = httpx.get(f"{base.rstrip('/')}/conversations/{quote(ref, safe='')}", timeout=10)
    except httpx.HTTPError as exc:
        typer.echo(f"error: no worker answers at {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code == 404:
        typer.echo(f"error: no conversation with ref {ref}", err=True)
        raise typer.Exit(1)
    if not response.is_success:
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200]
        typer.echo(f"error: {base} answered {response.status_code}: {reason}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(response.json(), ensure_ascii=False, sort_keys=True))


def _send(publish, wait: bool, timeout: float) -> None:
    """Publish with a CommandPublisher; with --wait, print each result as one JSON line, exit 1 on FAILED, 3 on a timeout."""
    import json

    from connector.client import CommandPublisher, ResultWatcher

    settings = load_or_exit()
    kafka_or_exit(settings, f"cannot publish to {settings.topic_commands}")
    try:
        watcher = ResultWatcher(settings) if wait else None
    except Exception as exc:  # kafka-python raises many kinds
        raise kafka_failure(settings, f"cannot read {settings.topic_command_results}", exc) from None
    try:
        with CommandPublisher(settings) as publisher:
            command_ids = publish(publisher)
    except Exception as exc:  # kafka-python and the registry client raise many kinds
        if watcher is not None:
            watcher.close()
        raise kafka_failure(settings, "cannot send", exc) from None
    if watcher is None:
        for command_id in command_ids:
            typer.echo(command_id)
        return
    try:
        with watcher:
            results = watcher.wait(command_ids, timeout)
    except Exception as exc:  # kafka-python raises many kinds
        raise kafka_failure(settings, f"cannot read {settings.topic_command_results}", exc) from None
    failed = False
    for command_id in command_ids:
        result = results.get(command_id)
        if result is None:
            typer.echo(f"error: no result for command {command_id} within {timeout}s", err=True)
            raise typer.Exit(EXIT_TIMEOUT)
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False, sort_keys=True))
        failed = failed or result.failed
    if failed:
        raise typer.Exit(EXIT_FAILED)
