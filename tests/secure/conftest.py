"""Fixtures of the secured-Kafka tests: the devstack's SASL_SSL and mutual-TLS settings, and each test's
topics under the role prefixes that devstack/secure-acls.txt grants (`secure.<role>.<id>`).

The settings come from the `secure/*.env` files of the stack the suite runs against
(`${CONNECTOR_DEVSTACK_HOME:-~/.cache/kafka-8x8-connector}/secure`); the tests fail, never skip,
when they are missing. The fixtures of tests/commands (sandbox, worker environment) are reused:
`settings_env` is overridden here, so they build a connector on the secured listener.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.conftest import connector_env, sandbox, start_sandbox, worker_port  # noqa: F401 (fixtures)
from tests.support.env import drop_topics, isolated_env

DEVSTACK_HOME = Path(os.environ.get("CONNECTOR_DEVSTACK_HOME") or Path.home() / ".cache" / "kafka-8x8-connector")
SECURE = DEVSTACK_HOME / "secure"
LISTENERS = ("sasl", "mtls")  # SASL_SSL with SCRAM-SHA-512; SSL with client certificates
# Each topic's role prefix in devstack/secure-acls.txt.
ROLES = {
    "CONNECTOR_TOPIC_COMMANDS": "commands",
    "CONNECTOR_TOPIC_COMMAND_RESULTS": "results",
    "CONNECTOR_TOPIC_COMMANDS_DLQ": "dlq",
    "CONNECTOR_TOPIC_EVENTS": "events",
    "CONNECTOR_TOPIC_TRANSCRIPTS": "transcripts",
    "CONNECTOR_TOPIC_WEBHOOKS_RAW": "webhooks",
}


def listener_env(listener: str, user: str = "connector") -> dict[str, str]:
    """The CONNECTOR_KAFKA_* lines the devstack wrote for `user` on `listener` (secure/<listener>-<user>.env)."""
    path = SECURE / f"{listener}-{user}.env"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: the stack at {DEVSTACK_HOME} has no secured listeners; `devstack/stack up` "
            "writes it (`devstack/stack restart-kafka` when Kafka was started by an older devstack/stack)",
            pytrace=False,
        )
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def as_user(env: dict[str, str], user: str) -> dict[str, str]:
    """`env` on the same listener as another of the devstack's users."""
    listener = "sasl" if env["CONNECTOR_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" else "mtls"
    others = {name: value for name, value in env.items() if not name.startswith(("CONNECTOR_KAFKA_SASL", "CONNECTOR_KAFKA_SSL"))}
    return {**others, **listener_env(listener, user)}


def secure_env(unique: str, data_dir: Path, listener: str, user: str = "connector") -> dict[str, str]:
    """An isolated connector environment (tests.conftest.isolated_env) on a secured listener, its topics and
    app id under the role prefixes of devstack/secure-acls.txt."""
    env = isolated_env(f"secure.t{unique}", data_dir, partitions=2)
    env.update({name: f"secure.{role}.t{unique}" for name, role in ROLES.items()})
    env["CONNECTOR_APP_ID"] = f"secure.app.t{unique}"
    return {**env, **listener_env(listener, user)}


def connector(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `connector ARGS` with exactly `env` (and PATH), as a person would with `env $(cat ...) connector`."""
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(params=LISTENERS)
def listener(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings_env(kafka: str, registry: str, unique: str, tmp_path: Path, listener: str) -> Iterator[dict[str, str]]:
    """The connector's least-privileged user on `listener`, with this test's topics (deleted after it)."""
    env = secure_env(unique, tmp_path / "data", listener)
    yield env
    drop_topics([env])
