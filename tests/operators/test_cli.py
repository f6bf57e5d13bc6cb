"""The `connector` command as operators and scripts meet it: its version, its exit codes, what tail says."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from connector.schemas import AvroCodec
from connector.topics import create_topics
from tests.support.env import settings_of

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _connector(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_version_comes_from_pyproject_alone() -> None:
    import connector

    assert connector.__version__ == importlib.metadata.version("kafka-8x8-connector") == VERSION
    printed = _connector({}, "--version", timeout=30)
    assert (printed.returncode, printed.stdout) == (0, f"connector {VERSION}\n")


def test_the_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((ROOT / "helm/kafka-8x8-connector/Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION


def test_the_image_is_built_with_the_package_version_and_labelled_with_it() -> None:
    made = subprocess.run(["make", "-n", "image"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0 and f"--build-arg VERSION={VERSION} " in made.stdout, made.stdout + made.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    check = re.search(r'^RUN test -z "\$VERSION" \|\| (python -c .*)$', dockerfile, re.M).group(1)
    for given, refused in ((VERSION, False), ("9.9.9", True)):
        command = check.replace('"$VERSION"', given).replace("python ", f"{sys.executable} ", 1)
        ran = subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True)
        assert (ran.returncode != 0) is refused, ran.stderr


@pytest.mark.kafka
def test_wait_timeout_exits_3_not_1(settings_env: dict[str, str]) -> None:
    create_topics(settings_of(settings_env))  # no worker: no result will come
    sent = _connector(settings_env, "send", "message", "--ref", "nobody", "--text", "hello", "--wait", "--timeout", "1")
    assert sent.returncode == 3, sent.stderr
    assert "no result for command" in sent.stderr and "within 1.0s" in sent.stderr


@pytest.mark.kafka
def test_tail_says_on_stderr_that_it_stopped_idle_with_nothing(settings_env: dict[str, str]) -> None:
    create_topics(settings_of(settings_env))
    tailed = _connector(settings_env, "events", "tail", "--json", "--timeout", "1")
    assert (tailed.returncode, tailed.stdout) == (0, "")
    assert "no event in 1s; stopped (tail started at the newest record (--from-beginning reads older ones))" in tailed.stderr


@pytest.mark.kafka
def test_tail_ref_prints_only_that_conversation(settings_env: dict[str, str]) -> None:
    settings = settings_of(settings_env)
    create_topics(settings)
    codec = AvroCodec(settings)
    codec.start_sync("ChatEvent")
    producer = KafkaProducer(**settings.kafka_python_config())
    for n, ref in enumerate(["order-1", "order-2", "order-1"]):
        producer.send(settings.topic_events, key=ref.encode(), value=codec.encode("ChatEvent", _event(f"e-{n}", ref)))
    producer.flush()
    producer.close()

    tailed = _connector(settings_env, "events", "tail", "--json", "--from-beginning", "--ref", "order-1", "--timeout", "2")
    assert tailed.returncode == 0, tailed.stderr
    lines = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert sorted(line["event_id"] for line in lines) == ["e-0", "e-2"] and tailed.stderr == ""

    none = _connector(settings_env, "events", "tail", "--from-beginning", "--ref", "order-3", "--timeout", "1")
    assert none.stdout == "" and "no event of order-3 in 1s" in none.stderr


def _event(event_id: str, ref: str) -> dict[str, object]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "event_id": event_id,
        "event_type": "MESSAGE",
        "raw_event_type": "MESSAGE",
        "generation": "chat-api-v2",
        "conversation_ref": ref,
        "timestamp": now,
        "received_at": now,
        "text": "hello",
        "raw_json": "{}",
    }
