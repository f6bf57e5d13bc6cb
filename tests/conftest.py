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
    """Start `connector worker` processes with the given env (by default waiting until ready); killed at the end."""
    processes = _Processes(tmp_path, "worker", timeout=60.0)
    yield processes.start
    processes.kill()


@pytest.fixture
def start_edge(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `connector edge` processes with the given env (by default waiting until ready); killed at the end."""
    processes = _Processes(tmp_path, "edge", timeout=30.0)
    yield processes.start
    processes.kill()


class _Processes:
    """The `connector <command>` processes of one test, each logging to a file of its own."""

    def __init__(self, tmp_path: Path, command: str, *, timeout: float) -> None:
        self._tmp_path = tmp_path
        self._command = command
        self._timeout = timeout
        self._started: list[subprocess.Popen] = []

    def start(self, env: dict[str, str], *, wait_ready: bool = True, timeout: float | None = None) -> subprocess.Popen:
        log = open(self._tmp_path / f"{self._command}-{len(self._started)}.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", self._command],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._started.append(process)
        if wait_ready:
            url = f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}"
            wait_until_ready(url, process, timeout if timeout is not None else self._timeout, log.name)
        return process

    def kill(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.kill()
                process.wait(10)
