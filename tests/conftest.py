"""Shared fixtures: settings with per-test topic names, the real Kafka and registry, a worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from connector.config import Settings, load_settings

KAFKA = os.environ.get("CONNECTOR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REGISTRY = os.environ.get("CONNECTOR_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")


@pytest.fixture(scope="session")
def kafka() -> str:
    """The bootstrap address of the broker `make test` started; fails (never skips) when it is down."""
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"Kafka is not reachable at {KAFKA} ({exc}); start it with `make stack`")
    return KAFKA


@pytest.fixture(scope="session")
def registry() -> str:
    """The Schema Registry URL `make test` started; fails (never skips) when it is down."""
    try:
        httpx.get(f"{REGISTRY}/subjects", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"Schema Registry is not reachable at {REGISTRY} ({exc}); start it with `make stack`")
    return REGISTRY


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings_env(kafka: str, registry: str, unique: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """CONNECTOR_* variables of a connector with its own topics, group and state, for this test only;
    its topics are deleted after the test (its workers are stopped by then)."""
    env = isolated_env(f"t{unique}", tmp_path / "data")
    yield env
    drop_topics([env])


@pytest.fixture
def settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `connector worker` processes with the given env; they are killed at the end of the test."""
    processes: list[subprocess.Popen] = []

    def start(env: dict[str, str], *, wait_ready: bool = True, timeout: float = 60.0) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(processes)}.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "worker"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        if wait_ready:
            wait_until_ready(f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}", process, timeout, log.name)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_until_ready(base_url: str, process: subprocess.Popen, timeout: float, log_path: str) -> None:
    """Wait until GET /readyz answers 200, or fail with the tail of the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    tail = Path(log_path).read_text(errors="replace")[-4000:]
    pytest.fail(f"worker at {base_url} not ready in {timeout}s (exit {process.poll()}):\n{tail}")


def isolated_env(prefix: str, data_dir: Path | str, *, partitions: int = 4) -> dict[str, str]:
    """CONNECTOR_* variables of a connector on the local stack with its own app id (consumer group),
    topics (`<prefix>.chat.*`), state directory and public and admin ports: tests and benchmarks never
    share them. The 8x8 base URL may be the sandbox's plain http://. Workers serve webhooks themselves
    (the single-process set-up); tests of `connector edge` turn that off."""
    return {
        "CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "CONNECTOR_SCHEMA_REGISTRY_URL": REGISTRY,
        "CONNECTOR_KAFKA_PARTITIONS": str(partitions),
        "CONNECTOR_APP_ID": f"{prefix}-connector",
        "CONNECTOR_DATA_DIR": str(data_dir),
        "CONNECTOR_TOPIC_COMMANDS": f"{prefix}.chat.commands",
        "CONNECTOR_TOPIC_COMMAND_RESULTS": f"{prefix}.chat.command-results",
        "CONNECTOR_TOPIC_COMMANDS_DLQ": f"{prefix}.chat.commands.dlq",
        "CONNECTOR_TOPIC_EVENTS": f"{prefix}.chat.events",
        "CONNECTOR_TOPIC_TRANSCRIPTS": f"{prefix}.chat.transcripts",
        "CONNECTOR_TOPIC_WEBHOOKS_RAW": f"{prefix}.chat.webhooks.raw",
        "CONNECTOR_WEB_HOST": "127.0.0.1",
        "CONNECTOR_WEB_PORT": str(free_port()),
        "CONNECTOR_ADMIN_PORT": str(free_port()),
        "CONNECTOR_PLATFORM_ALLOW_INSECURE_HTTP": "true",
        "CONNECTOR_WORKER_SERVE_WEBHOOKS": "true",
    }


def drop_topics(envs: Iterable[dict[str, str]]) -> None:
    """Delete the topics of isolated environments: their `chat.*` topics and Faust's `<app id>-*` ones.

    A local broker that keeps them piles up thousands, and every client that asks for the metadata
    of all topics (aiokafka's bootstrap, Faust's topic declarations) gets slower with each.
    """
    envs = list(envs)
    if not envs:
        return
    named = {value for env in envs for name, value in env.items() if name.startswith("CONNECTOR_TOPIC_")}
    faust_owned = tuple(f"{env['CONNECTOR_APP_ID']}-" for env in envs)
    try:
        admin = KafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=60_000)
    except KafkaError as exc:  # clean-up only: a broker that is gone must not fail the run
        warnings.warn(f"the topics of {len(envs)} isolated environments were not deleted: {exc!r}", stacklevel=2)
        return
    try:
        doomed = [topic for topic in admin.list_topics() if topic in named or topic.startswith(faust_owned)]
        for at in range(0, len(doomed), 200):
            admin.delete_topics(doomed[at : at + 200], timeout_ms=60_000)
    except KafkaError as exc:
        warnings.warn(f"the topics of {len(envs)} isolated environments were not all deleted: {exc!r}", stacklevel=2)
    finally:
        admin.close()


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings that the CONNECTOR_* variables `env` give, without touching this process's environment."""
    return load_settings(**{k.removeprefix("CONNECTOR_").lower(): v for k, v in env.items() if k.startswith("CONNECTOR_")})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
