"""Fixtures of the deployment tests: the tools devstack/tools/install.sh puts in its cache, offline
Kubernetes schemas for kubeconform, and helpers that render the chart.

The tools are never looked up on PATH and never skipped: a missing tool fails the test with the
command that installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kafka-8x8-connector"
CI_VALUES = CHART / "ci"
TOOLS_HOME = Path(os.environ.get("CONNECTOR_DEVSTACK_HOME") or Path.home() / ".cache" / "kafka-8x8-connector")
TOOLS_BIN = TOOLS_HOME / "bin"
# The Kubernetes version the manifests are validated against (schemas from kubernetes-validate).
KUBERNETES_VERSION = "1.33.0"
# No schema ships for these CRD kinds; they are checked structurally in test_deploy_helm.py and
# test_chart_observability.py instead (the PrometheusRule also by promtool).
SKIPPED_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject")


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} is not installed at {path}: run `bash devstack/tools/install.sh` "
            f"(CONNECTOR_DEVSTACK_HOME={TOOLS_HOME})",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


@pytest.fixture(scope="session")
def kubeconform() -> Path:
    return tool("kubeconform")


@pytest.fixture(scope="session")
def helm_docs() -> Path:
    return tool("helm-docs")


@pytest.fixture(scope="session")
def k8s_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The strict Kubernetes JSON schemas of the kubernetes-validate package, made loadable by kubeconform.

    kubernetes-validate ships them per version (`v1.33.0-local-strict/statefulset-apps-v1.json`,
    the layout kubeconform's `-schema-location` templates expect), but each kind's schema carries an
    `$id` under https://kubernetes.io/ and refers to `/api/_definitions.json`, which would make
    kubeconform fetch from the network. The copy drops the `$id`s and makes the references relative
    to the file, so everything resolves from disk.
    """
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is missing: .venv/bin/pip install -e '.[dev]'", pytrace=False)
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    if not source.is_dir():
        pytest.fail(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas at {source}", pytrace=False)
    root = tmp_path_factory.mktemp("k8s-schemas")
    target = root / source.name
    target.mkdir()
    for path in source.glob("*.json"):
        schema = json.loads(path.read_text())
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        (target / path.name).write_text(text)
    return root


@dataclass
class Rendered:
    returncode: int
    stdout: str
    stderr: str

    @property
    def docs(self) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(self.stdout) if doc]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [doc for doc in self.kind(kind) if doc["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
        return found[0]


Render = Callable[..., Rendered]


@pytest.fixture(scope="session")
def render(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """`helm template` of the chart with values files (paths or dicts) and `--set` strings."""
    tmp = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def _render(*values: Path | dict[str, Any], sets: tuple[str, ...] = (), release: str = "t") -> Rendered:
        args = [str(helm), "template", release, str(CHART), "--namespace", "chat"]
        for item in values:
            if isinstance(item, dict):
                path = tmp / f"values-{next(counter)}.yaml"
                path.write_text(yaml.safe_dump(item))
                item = path
            args += ["-f", str(item)]
        for value in sets:
            args += ["--set", value]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        return Rendered(proc.returncode, proc.stdout, proc.stderr)

    return _render


@pytest.fixture(scope="session")
def validate_manifests(kubeconform: Path, k8s_schemas: Path) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """kubeconform -strict over a stream of manifests, against the offline schemas."""

    def _validate(manifests: str) -> subprocess.CompletedProcess[str]:
        location = str(k8s_schemas) + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
        args = [
            str(kubeconform),
            "-strict",
            "-summary",
            "-output", "json",
            "-kubernetes-version", KUBERNETES_VERSION,
            "-schema-location", location,
            "-skip", ",".join(SKIPPED_KINDS),
            "-",
        ]
        return subprocess.run(args, input=manifests, capture_output=True, text=True, timeout=120)

    return _validate


@pytest.fixture
def clean_connector_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No CONNECTOR_* variable of the surrounding shell leaks into a Settings built by the test."""
    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def settings_env_names() -> set[str]:
    """Every variable the Settings class reads: CONNECTOR_<FIELD>, plus CONNECTOR_<FIELD>_FILE for secrets."""
    from connector.config import ENV_PREFIX, Settings

    names = set()
    for field, info in Settings.model_fields.items():
        names.add(f"{ENV_PREFIX}{field.upper()}")
        if "SecretStr" in str(info.annotation):
            names.add(f"{ENV_PREFIX}{field.upper()}_FILE")
    return names
