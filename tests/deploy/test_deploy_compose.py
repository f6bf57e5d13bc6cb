"""docker-compose.yml against the Compose Specification's JSON schema (vendored, offline) plus the
wiring the schema cannot see: images, dependencies, and connector settings that exist and agree.

tests/deploy/compose-spec.json is the compose-spec schema as bundled by the PyPI package
check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json; Apache-2.0,
license in tests/deploy/LICENSE.compose-spec). It is vendored because check-jsonschema's own
dependency pins (click>=8.5) conflict with faust-streaming's (click<8.4).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from .conftest import REPO, settings_env_names

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
CONNECTOR_IMAGE = "kafka-8x8-connector:dev"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the anchors and `<<` merges


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def connector_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == CONNECTOR_IMAGE}


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_validation_catches_mistakes(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["kafka"]["environment"] = 42
    broken["services"]["connector"]["depends_on"]["init"]["condition"] = "service_done"
    broken["services"]["sandbox"]["portz"] = ["8088:8088"]
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert "42" in messages and "service_done" in messages and "portz" in messages, messages


def test_every_service_has_a_pinned_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "registry", "init", "sandbox", "edge", "connector"}
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        if "build" not in service:
            repository, _, tag = service["image"].rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: image {service['image']} is not pinned"
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["registry"]["image"].startswith("apicurio/apicurio-registry:3.")
    for name, service in connector_services(services).items():
        assert service["build"]["context"] == "." and service["build"]["dockerfile"] == "Dockerfile", name


def test_dependencies_exist_and_wait_for_the_right_state(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
    init = services["init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["depends_on"]["registry"]["condition"] == "service_healthy"
    for process in ("edge", "connector"):
        assert services[process]["depends_on"]["init"]["condition"] == "service_completed_successfully", process
        assert "sandbox" in services[process]["depends_on"], process


def test_kafka_is_single_node_kraft(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocol_map)
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert value == "1", f"{key} must be 1 on a single broker"
    assert "ZOOKEEPER" not in " ".join(env)


def test_init_creates_topics_and_registers_schemas(services: dict[str, dict[str, Any]]) -> None:
    init = services["init"]
    script = " ".join(init.get("entrypoint", [])) + " " + " ".join(command_of(init))
    assert "connector topics create" in script and "connector schemas register" in script
    assert script.index("topics create") < script.index("schemas register")
    assert "&&" in script, "schemas are registered only if the topics exist"


def test_connector_settings_exist_and_are_accepted(services: dict[str, dict[str, Any]], clean_connector_env) -> None:
    from connector.config import load_settings

    known = settings_env_names()
    for name, service in connector_services(services).items():
        env = env_of(service)
        unknown = sorted(key for key in env if key.startswith("CONNECTOR_") and key not in known)
        assert not unknown, f"{name}: variables the Settings class does not read: {unknown}"
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = load_settings()
        assert settings.platform_generation.value == "chat-api-v2", name


def test_the_services_point_at_each_other(services: dict[str, dict[str, Any]], clean_connector_env) -> None:
    from connector.config import load_settings

    worker = services["connector"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env_of(worker).items():
            patch.setenv(key, value)
        settings = load_settings()

    # Kafka: the worker's bootstrap address is the broker's advertised in-network listener
    kafka_env = env_of(services["kafka"])
    for server in settings.kafka_bootstrap_servers.split(","):
        assert f"://{server}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"], server

    # Schema Registry: Apicurio's Confluent-compatible API on its port
    registry = urlsplit(settings.schema_registry_url)
    assert (registry.hostname, registry.port, registry.path) == ("registry", 8080, "/apis/ccompat/v7")

    # 8x8 platform: the sandbox, on the port it listens to
    sandbox = command_of(services["sandbox"])
    assert sandbox[0] == "sandbox"
    base = urlsplit(settings.platform_base_url)
    assert base.hostname == "sandbox" and base.port == int(sandbox[sandbox.index("--port") + 1])

    assert sandbox[sandbox.index("--host") + 1] == "0.0.0.0", "reachable from the other containers"

    # 8x8 credentials: the ones the sandbox accepts (its defaults unless the command sets them)
    from connector.sandbox.config import SandboxConfig

    defaults = SandboxConfig()
    accepted = {
        "tenant": sandbox[sandbox.index("--tenant") + 1] if "--tenant" in sandbox else defaults.tenant,
        "api_key": sandbox[sandbox.index("--api-key") + 1] if "--api-key" in sandbox else defaults.api_key,
        "api_secret": sandbox[sandbox.index("--api-secret") + 1] if "--api-secret" in sandbox else defaults.api_secret,
    }
    assert settings.platform_tenant_id == accepted["tenant"]
    assert settings.platform_api_key.get_secret_value() == accepted["api_key"]
    assert settings.platform_api_secret.get_secret_value() == accepted["api_secret"]

    # Webhooks: the sandbox posts to the edge's web port, on the webhook path; the worker takes none
    edge = services["edge"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env_of(edge).items():
            patch.setenv(key, value)
        edge_settings = load_settings()
    webhook = urlsplit(sandbox[sandbox.index("--webhook-url") + 1])
    assert (webhook.hostname, webhook.port, webhook.path) == ("edge", edge_settings.web_port, "/webhooks/8x8")
    assert command_of(edge) == ["edge"] and not settings.worker_serve_webhooks
    assert f"{edge_settings.web_port}:{edge_settings.web_port}" in edge["ports"]
    assert all(not port.endswith(f":{edge_settings.admin_port}") or port.startswith("127.0.0.1:") for port in edge["ports"]), (
        "internal port: this host only")
    assert f"127.0.0.1:{edge_settings.web_port}/readyz" in " ".join(edge["healthcheck"]["test"])

    # The worker: rocksdb state on a volume, only its admin port published (this host), health on /healthz
    assert command_of(worker) == ["worker"]
    assert settings.table_store == "rocksdb://"
    assert any(volume.endswith(f":{settings.data_dir}") for volume in worker["volumes"])
    assert worker["ports"] == [f"127.0.0.1:{settings.admin_port}:{settings.admin_port}"], "internal port: this host only"
    health = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.web_port}/healthz" in health and "urllib" in health


def test_the_commands_the_deployments_run_exist() -> None:
    """Every `connector ...` the Dockerfile, the compose file and the chart run is a real CLI command."""
    import typer.main

    from connector.cli import app

    cli = typer.main.get_command(app)

    def find(*path: str) -> object:
        command = cli
        for name in path:
            sub = getattr(command, "commands", {}).get(name)
            assert sub is not None, f"`connector {' '.join(path)}` is not a command of the CLI"
            command = sub
        return command

    find("worker")
    find("edge")
    find("topics", "create")
    find("schemas", "register")
    sandbox = find("sandbox")
    options = {opt for param in sandbox.params for opt in param.opts}  # type: ignore[attr-defined]
    assert {"--host", "--port", "--webhook-url"} <= options, options
