"""README's quick start, run as written against `connector dev`: each command prints what README shows."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from connector.topics import create_topics
from tests.support.env import free_port, settings_of, wait_until_ready

pytestmark = pytest.mark.kafka

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def quick_start() -> list[tuple[str, list[dict[str, str]]]]:
    """README's quick start: each command with the lines it shows below it (as key -> expected text)."""
    block = next(b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "connector send start" in b)
    steps: list[tuple[str, list[dict[str, str]]]] = []
    for line in block.splitlines():
        if line.startswith(".venv/bin/connector "):
            steps.append((line, []))
        elif line.startswith("# {"):
            shown = dict(re.findall(r'"(\w+)": "([^"]*)"', line))
            steps[-1][1].append({key: value for key, value in shown.items() if value != "..."})
    return steps


def test_the_quick_start_shows_output_for_every_command() -> None:
    steps = quick_start()
    assert [command.split()[1] for command, _ in steps] == ["send", "events", "send", "conversations", "send"]
    assert all(shown for _, shown in steps)
    assert "--from-beginning" in steps[1][0]


def test_the_quick_start_works_as_written(settings_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **settings_env}
    create_topics(settings_of(settings_env))  # `make dev` does this before `connector dev`
    sandbox_port = free_port()
    log = open(tmp_path / "dev.log", "wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "connector", "dev", "--sandbox-port", str(sandbox_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{settings_env['CONNECTOR_WEB_PORT']}", dev, 120.0, log.name)
        ref = f"order-{uuid.uuid4().hex[:8]}"
        for command, shown in quick_start():
            args = shlex.split(command.replace("order-42", ref))
            done = subprocess.run([sys.executable, "-m", "connector", *args[1:]], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stderr}"
            printed = [json.loads(line) for line in done.stdout.splitlines()]
            _assert_shown_in_order(command, shown, printed, ref)
    finally:
        dev.terminate()
        dev.wait(60)


def _assert_shown_in_order(command: str, shown: list[dict[str, str]], printed: list[dict], ref: str) -> None:
    """Each line README shows matches a printed line, in README's order (tail may print more events)."""
    at = 0
    for expected in shown:
        expected = {key: value.replace("order-42", ref) for key, value in expected.items()}
        while at < len(printed) and any(str(printed[at].get(key)) != value for key, value in expected.items()):
            at += 1
        assert at < len(printed), f"{command}: no line like {expected} in order in {printed}"
        at += 1


def test_readme_links_stay_in_the_repository_and_name_the_license() -> None:
    root = Path(__file__).resolve().parents[2]
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert not [link for link in local if link.startswith("..") or not (root / link).exists()], local
    assert "docs/ARCHITECTURE.md" in local and "LICENSE" in local
    assert "Apache License" in (root / "LICENSE").read_text() and "-s key=s -s value=avro" in README
