"""The local stack the tests and benchmarks run on, and a connector's own corner of it: settings, topics, ports."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from connector.config import Settings, load_settings

__all__ = ["KAFKA", "REGISTRY", "drop_topics", "free_port", "isolated_env", "settings_of", "wait_until_ready"]

KAFKA = os.environ.get("CONNECTOR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REGISTRY = os.environ.get("CONNECTOR_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")


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
