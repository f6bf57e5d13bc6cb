"""Shared fixtures: settings with per-test topic names, the real Kafka and registry, a worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from connector.config import Settings, load_settings
from tests.support.env import KAFKA, REGISTRY, drop_topics, isolated_env, wait_until_ready


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
