"""The chart with each credential in a Secret of its own: Strimzi's generated Secrets and Confluent Cloud's
API keys used as they are (examples/), the registry's TLS, JSON logs by default, Chart.yaml's metadata."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, SKIPPED_KINDS, Render, Rendered
from .test_deploy_helm import container_env

EXAMPLES = CHART / "examples"
ROOT = CHART.parents[1]


def _ok(render: Render, *values) -> Rendered:
    result = render(*values)
    assert result.returncode == 0, result.stderr
    return result


def _pod(result: Rendered, kind: str = "StatefulSet", suffix: str = "") -> tuple[dict, dict, dict]:
    """Volumes by name, and each container's mounts by name (the last container's), of a workload."""
    pod = result.one(kind, suffix)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for c in pod.get("initContainers", []) + pod["containers"] for m in c["volumeMounts"]}
    return pod, volumes, mounts


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_renders_valid_kubernetes(render: Render, validate_manifests, example: str) -> None:
    result = _ok(render, EXAMPLES / example)
    proc = validate_manifests(result.stdout)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["summary"]["invalid"] == report["summary"]["errors"] == 0, report
    assert report["summary"]["valid"] == len([d for d in result.docs if d["kind"] not in SKIPPED_KINDS])
    assert result.kind("Secret") == [], "every credential has a Secret of its own: the chart makes none"


def test_strimzi_scram_uses_the_kafkauser_and_cluster_ca_secrets(render: Render) -> None:
    result = _ok(render, EXAMPLES / "strimzi-scram-values.yaml")
    _, volumes, mounts = _pod(result)
    (env,) = container_env(result, "StatefulSet")
    assert volumes["kafka-sasl"]["secret"]["secretName"] == "kafka-8x8-connector"
    assert env["CONNECTOR_KAFKA_SASL_PASSWORD_FILE"] == mounts["kafka-sasl"]["mountPath"] + "/password"
    assert volumes["kafka-tls"]["secret"]["secretName"] == "my-cluster-cluster-ca-cert"
    assert env["CONNECTOR_KAFKA_SSL_CAFILE"] == mounts["kafka-tls"]["mountPath"] + "/ca.crt"
    assert volumes["platform"]["secret"]["secretName"] == "eightbyeight-credentials"
    assert env["CONNECTOR_PLATFORM_API_KEY_FILE"] == mounts["platform"]["mountPath"] + "/platform-api-key"
    assert "credentials" not in volumes and env["CONNECTOR_LOG_FORMAT"] == "json"

    _, hook_volumes, hook_mounts = _pod(result, "Job", "-topics")
    assert hook_volumes["kafka-sasl"]["secret"]["secretName"] == "kafka-8x8-connector" and "kafka-sasl" in hook_mounts
    assert "platform" not in hook_volumes and "credentials" not in hook_volumes, "the hook needs no 8x8 credentials"


def test_strimzi_mtls_takes_the_client_certificate_from_the_kafkauser_secret(render: Render) -> None:
    result = _ok(render, EXAMPLES / "strimzi-mtls-values.yaml")
    _, volumes, mounts = _pod(result)
    (env,) = container_env(result, "StatefulSet")
    assert volumes["kafka-client-tls"]["secret"]["secretName"] == "kafka-8x8-connector"
    assert env["CONNECTOR_KAFKA_SSL_CERTFILE"] == mounts["kafka-client-tls"]["mountPath"] + "/user.crt"
    assert env["CONNECTOR_KAFKA_SSL_KEYFILE"] == mounts["kafka-client-tls"]["mountPath"] + "/user.key"
    assert env["CONNECTOR_KAFKA_SSL_CAFILE"] == "/etc/connector/kafka-tls/ca.crt"
    assert "CONNECTOR_KAFKA_SASL_PASSWORD_FILE" not in env
    tested = result.one("Pod", "-platform-check")["spec"]
    assert {v["name"] for v in tested["volumes"]} >= {"kafka-tls", "kafka-client-tls", "platform"}


def test_confluent_cloud_reads_each_api_secret_from_its_own_secret(render: Render) -> None:
    result = _ok(render, EXAMPLES / "confluent-cloud-values.yaml")
    _, volumes, mounts = _pod(result)
    (env,) = container_env(result, "StatefulSet")
    assert env["CONNECTOR_KAFKA_SASL_MECHANISM"] == "PLAIN" and "CONNECTOR_KAFKA_SSL_CAFILE" not in env
    assert volumes["kafka-sasl"]["secret"]["secretName"] == "confluent-kafka"
    assert env["CONNECTOR_KAFKA_SASL_PASSWORD_FILE"].endswith("/kafka-sasl/api-secret")
    assert volumes["registry-credentials"]["secret"]["secretName"] == "confluent-registry"
    assert env["CONNECTOR_SCHEMA_REGISTRY_PASSWORD_FILE"] == mounts["registry-credentials"]["mountPath"] + "/api-secret"
    assert "kafka-tls" not in volumes


def test_examples_give_settings_the_connector_accepts(render: Render, clean_connector_env, tmp_path: Path) -> None:
    from connector.config import load_settings

    for example in sorted(EXAMPLES.glob("*.yaml")):
        result = _ok(render, example)
        for kind, suffix in (("StatefulSet", ""), ("Job", "-topics")):
            for env in container_env(result, kind, suffix):
                with pytest.MonkeyPatch.context() as patch:
                    for name, value in env.items():
                        if name.endswith("_FILE") or name.endswith(("_CAFILE", "_CERTFILE", "_KEYFILE")):
                            fake = tmp_path / f"{example.stem}-{Path(value).name}"
                            fake.write_text("dummy\n")
                            value = str(fake)
                        patch.setenv(name, value)
                    settings = load_settings()
                if settings.kafka_security_protocol.value.startswith("SASL"):
                    assert settings.kafka_sasl_password.get_secret_value() == "dummy", example.name


def test_registry_tls_and_a_shared_secret_still_work_together(render: Render) -> None:
    values = {
        "config": {"schemaRegistry": {"url": "https://registry:8443/apis/ccompat/v7", "username": "reg",
                                      "tls": {"secretName": "registry-ca", "caKey": "ca.pem", "certKey": "c.pem", "keyKey": "k.pem"}},
                   "logFormat": "text"},
        "secrets": {"existingSecret": "all-in-one"},
    }
    result = _ok(render, values)
    _, volumes, mounts = _pod(result)
    (env,) = container_env(result, "StatefulSet")
    assert volumes["registry-tls"]["secret"]["secretName"] == "registry-ca"
    assert env["CONNECTOR_SCHEMA_REGISTRY_SSL_CAFILE"] == mounts["registry-tls"]["mountPath"] + "/ca.pem"
    assert env["CONNECTOR_SCHEMA_REGISTRY_SSL_CERTFILE"].endswith("/registry-tls/c.pem")
    assert volumes["credentials"]["secret"]["secretName"] == "all-in-one"
    assert env["CONNECTOR_SCHEMA_REGISTRY_PASSWORD_FILE"] == "/etc/connector/secrets/schema-registry-password"
    assert env["CONNECTOR_LOG_FORMAT"] == "text"
    half = render({**values, "config": {**values["config"], "schemaRegistry": {
        "url": "https://registry:8443", "tls": {"secretName": "registry-ca", "certKey": "c.pem"}}}})
    assert half.returncode != 0 and "config.schemaRegistry.tls.certKey and keyKey go together" in half.stderr


def test_chart_metadata_names_its_maintainers_and_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["maintainers"][0]["name"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
