"""The `connector` command line: one entry point for operators, developers and scripts."""

from __future__ import annotations

import typer

from connector.config import ConfigError, Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Kafka <-> 8x8 Contact Center chat connector.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics of the connector.")
schemas_app = typer.Typer(no_args_is_help=True, help="Avro schemas in the Schema Registry.")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")


def load_or_exit() -> Settings:
    """The settings, or exit 2 with the message that names the wrong variable."""
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the connector (idempotent), table changelogs included."""
    from connector.topics import create_topics

    settings = load_or_exit()
    try:
        outcome = create_topics(settings)
    except Exception as exc:  # kafka-python raises many kinds; say which and where
        typer.echo(f"error: cannot create topics on {settings.kafka_bootstrap_servers}: {exc}", err=True)
        raise typer.Exit(1) from None
    for name, state in outcome.items():
        typer.echo(f"{name}: {state}")


@schemas_app.command("register")
def schemas_register() -> None:
    """Register every Avro schema under its topic's subject (idempotent)."""
    from connector.schemas import register_all

    settings = load_or_exit()
    try:
        ids = register_all(settings)
    except Exception as exc:  # the registry client raises several kinds
        typer.echo(f"error: cannot register schemas at {settings.schema_registry_url}: {exc}", err=True)
        raise typer.Exit(1) from None
    for subject, schema_id in ids.items():
        typer.echo(f"{subject}: id {schema_id}")


@app.command()
def worker() -> None:
    """Run the connector worker (Faust): webhook edge, event agent, command agent."""
    from connector.runtime import run_worker

    run_worker(load_or_exit())


# --- events (webhook ingress): `connector events ...` -----------------------------------------


# --- send / conversations (command processor): `connector send ...`, `connector conversations ...`
