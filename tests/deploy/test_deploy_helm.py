"""The Helm chart: lint, render, validate every manifest (kubeconform -strict, offline schemas),
refuse wrong values with a clear message, and produce settings the connector accepts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, CI_VALUES, SKIPPED_KINDS, Render, Rendered, settings_env_names

DEFAULT = CI_VALUES / "default-values.yaml"
PRODUCTION = CI_VALUES / "production-values.yaml"

# The chart's own Secret (no existingSecret), mutual TLS with an encrypted key, registry auth,
# no persistence, no hook: every optional branch that the two ci/ files do not take.
CHART_SECRET: dict[str, Any] = {
    "config": {
        "kafka": {
            "bootstrapServers": "broker-1:9093,broker-2:9093",
            "securityProtocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-256",
            "saslUsername": "connector",
            "tls": {"secretName": "kafka-mtls", "caKey": "ca.pem", "certKey": "client.pem", "keyKey": "client.key",
                    "keyPasswordInSecret": True, "checkHostname": False},
        },
        "schemaRegistry": {"url": "https://registry:8443/apis/ccompat/v7", "username": "reg"},
        "platform": {"generation": "chat-gateway-v1", "tenantId": "t1"},
        "tableStore": "memory://",
        "extraEnv": {"CONNECTOR_PLATFORM_TIMEOUT_S": "5"},
    },
    "secrets": {
        "platformApiKey": "key", "platformApiSecret": "secret", "kafkaSaslPassword": "sasl",
        "kafkaSslKeyPassword": "keypass", "schemaRegistryPassword": "regpass",
    },
    "persistence": {"enabled": False},
    "podDisruptionBudget": {"minAvailable": 1},
    "preStopSleepSeconds": 0,
    "ingress": {"enabled": True, "host": "hooks.example.org", "tls": {"enabled": True, "secretName": "hooks-tls"}},
}

SCENARIOS = {"default": (DEFAULT,), "production": (PRODUCTION,), "chart-secret": (CHART_SECRET,)}


def rendered_ok(render: Render, name: str) -> Rendered:
    result = render(*SCENARIOS[name])
    assert result.returncode == 0, result.stderr
    return result


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- lint and schema validation -------------------------------------------------------------------


@pytest.mark.parametrize("values", [DEFAULT, PRODUCTION], ids=lambda p: p.stem)
def test_helm_lint_strict(helm: Path, values: Path) -> None:
    for extra in ([], ["--strict"]):
        proc = subprocess.run([str(helm), "lint", *extra, str(CHART), "-f", str(values)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout
        assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_manifest_is_valid_kubernetes(render: Render, validate_manifests, scenario: str) -> None:
    result = rendered_ok(render, scenario)
    proc = validate_manifests(result.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    summary = report["summary"]
    skipped = [doc for doc in result.docs if doc["kind"] in SKIPPED_KINDS]
    assert summary["invalid"] == 0 and summary["errors"] == 0, report
    assert summary["skipped"] == len(skipped)
    assert summary["valid"] == len(result.docs) - len(skipped) > 0


def test_kubeconform_is_really_strict(render: Render, validate_manifests) -> None:
    """The offline schemas are loaded and strict: an unknown field and a wrong type are caught."""
    result = rendered_ok(render, "default")
    broken = result.stdout.replace("podManagementPolicy: Parallel", "podManagementPolicy: Parallel\n  bogusField: 1")
    broken = broken.replace("replicas: 2", 'replicas: "two"')
    proc = validate_manifests(broken)
    assert proc.returncode != 0
    assert "bogusField" in proc.stdout and "replicas" in proc.stdout, proc.stdout


# --- wrong values fail, with a message that names the value ------------------------------------------

BAD_VALUES = {
    "generation-v3": ({"config": {"platform": {"generation": "v3"}}}, ["/config/platform/generation", "chat-api-v2", "chat-gateway-v1"]),
    "negative-replicas": ({"replicaCount": -1}, ["/replicaCount", "minimum"]),
    "region": ({"config": {"platform": {"region": "mars"}}}, ["/config/platform/region", "'us', 'eu', 'ca', 'ap'"]),
    "web-port": ({"webPort": 70000}, ["/webPort", "maximum"]),
    "admin-port-is-web-port": ({"adminPort": 6066}, ["adminPort (6066) must differ from webPort"]),
    "network-policy-without-peers": ({"networkPolicy": {"webhookFrom": []}}, ["/networkPolicy/webhookFrom", "minItems"]),
    "security-protocol": ({"config": {"kafka": {"securityProtocol": "SASL"}}}, ["/config/kafka/securityProtocol", "SASL_SSL"]),
    "table-store": ({"config": {"tableStore": "redis://"}}, ["/config/tableStore"]),
    "bootstrap-servers": ({"config": {"kafka": {"bootstrapServers": "kafka"}}}, ["/config/kafka/bootstrapServers"]),
    "partitions": ({"config": {"kafka": {"partitions": 0}}}, ["/config/kafka/partitions", "minimum"]),
    "typo": ({"replicas": 3}, ["additional properties", "replicas"]),
    "extra-env-name": ({"config": {"extraEnv": {"SOME_VAR": "x"}}}, ["SOME_VAR", "^CONNECTOR_[A-Z0-9_]+$"]),
    "sasl-without-user": ({"config": {"kafka": {"securityProtocol": "SASL_SSL"}}},
                          ["config.kafka.saslUsername is required with config.kafka.securityProtocol=SASL_SSL"]),
    "tls-secret-without-tls": ({"config": {"kafka": {"tls": {"secretName": "x"}}}},
                               ["config.kafka.tls.secretName is set but config.kafka.securityProtocol=PLAINTEXT"]),
    "ingress-tls-without-secret": ({"ingress": {"enabled": True}}, ["ingress.tls.secretName is required"]),
    "hpa-min-over-max": ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
                         ["autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (2)"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_wrong_values_fail_with_a_clear_message(render: Render, case: str) -> None:
    values, expected = BAD_VALUES[case]
    result = render(DEFAULT, values)
    assert result.returncode != 0, f"{case} rendered:\n{result.stdout[:500]}"
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("secrets", [{}, {"platformApiKey": "k"}], ids=["none", "key-only"])
def test_missing_credentials_fail_with_a_clear_message(render: Render, secrets: dict[str, str]) -> None:
    result = render({"secrets": secrets})  # the chart's bare defaults have no credentials
    assert result.returncode != 0
    assert ("8x8 credentials are missing: set secrets.existingSecret to a Secret holding them, "
            "or secrets.platformApiKey and secrets.platformApiSecret") in result.stderr, result.stderr


# --- what the production-like release contains -------------------------------------------------------


def test_production_statefulset(render: Render) -> None:
    result = rendered_ok(render, "production")
    sts = result.one("StatefulSet")
    config = result.one("ConfigMap")["data"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert "replicas" not in spec, "the HPA owns the replica count"
    headless = result.one("Service", "-headless")
    assert spec["serviceName"] == headless["metadata"]["name"] and headless["spec"]["clusterIP"] == "None"
    assert labels_match(spec["selector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])

    # RocksDB state on a PVC per pod, where CONNECTOR_DATA_DIR points
    assert config["CONNECTOR_TABLE_STORE"] == "rocksdb://"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]]["mountPath"] == config["CONNECTOR_DATA_DIR"]
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"] and "data" not in volumes

    # probes, port, command
    port, admin = int(config["CONNECTOR_WEB_PORT"]), int(config["CONNECTOR_ADMIN_PORT"])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"},
                                  {"name": "admin", "containerPort": admin, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CONNECTOR_WEB_CANONICAL_URL"] == f"http://$(POD_NAME).{headless['metadata']['name']}.$(POD_NAMESPACE).svc:{admin}", (
        "Faust routes /conversations to the owning worker's admin port")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"] == ["worker"]
    assert container["envFrom"] == [{"configMapRef": {"name": result.one("ConfigMap")["metadata"]["name"]}}]

    # hardening
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False

    # shutdown and spreading
    assert pod["terminationGracePeriodSeconds"] == 90
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for constraint in pod["topologySpreadConstraints"]:
        assert labels_match(constraint["labelSelector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])


def test_production_secrets_and_tls_are_files(render: Render) -> None:
    result = rendered_ok(render, "production")
    assert result.kind("Secret") == [], "existingSecret: the chart creates no Secret"
    config = result.one("ConfigMap")["data"]
    pod = result.one("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}

    assert volumes["credentials"]["secret"]["secretName"] == "kafka-8x8-connector-credentials"
    secret_dir = mounts["credentials"]["mountPath"]
    assert mounts["credentials"]["readOnly"] is True
    for name in ("PLATFORM_API_KEY", "PLATFORM_API_SECRET", "KAFKA_SASL_PASSWORD", "SCHEMA_REGISTRY_PASSWORD"):
        assert env[f"CONNECTOR_{name}_FILE"].startswith(secret_dir + "/")
        assert f"CONNECTOR_{name}" not in env and f"CONNECTOR_{name}" not in config, "secrets only as files"
    assert "CONNECTOR_KAFKA_SSL_KEY_PASSWORD_FILE" not in env

    assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-client-tls"
    assert config["CONNECTOR_KAFKA_SSL_CAFILE"] == mounts["kafka-tls"]["mountPath"] + "/ca.crt"
    assert config["CONNECTOR_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["CONNECTOR_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"


def scaling_of(result: Rendered, kind: str, target: str) -> dict[str, Any]:
    """The HorizontalPodAutoscaler or PodDisruptionBudget of the workers ("StatefulSet") or of the edge ("Deployment")."""
    pods = result.one(target)["spec"]["template"]["metadata"]["labels"]
    if kind == "HorizontalPodAutoscaler":
        (found,) = [doc for doc in result.kind(kind) if doc["spec"]["scaleTargetRef"]["kind"] == target]
    else:
        (found,) = [doc for doc in result.kind(kind) if labels_match(doc["spec"]["selector"]["matchLabels"], pods)]
    return found


def test_production_network_scaling_monitoring(render: Render) -> None:
    result = rendered_ok(render, "production")
    config = result.one("ConfigMap")["data"]
    sts = result.one("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    edge_labels = result.one("Deployment", "-edge")["spec"]["template"]["metadata"]["labels"]
    web = next(s for s in result.kind("Service") if s["spec"].get("clusterIP") != "None")
    headless = result.one("Service", "-headless")
    assert labels_match(web["spec"]["selector"], edge_labels) and not labels_match(web["spec"]["selector"], pod_labels), (
        "webhooks go to the edge, not to the workers")
    assert [(p["name"], p["targetPort"]) for p in web["spec"]["ports"]] == [("http", "http")], "only the webhook port is public"
    assert [(p["name"], p["port"]) for p in headless["spec"]["ports"]] == [("admin", int(config["CONNECTOR_ADMIN_PORT"]))]

    ingress = result.one("Ingress")
    (tls,) = ingress["spec"]["tls"]
    assert tls == {"hosts": ["chat-connector.example.com"], "secretName": "chat-connector-example-com-tls"}
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "chat-connector.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/webhooks/8x8", "only the webhook is public"
    assert path["backend"]["service"] == {"name": web["metadata"]["name"], "port": {"name": "http"}}

    hpa = scaling_of(result, "HorizontalPodAutoscaler", "StatefulSet")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
    assert hpa["spec"]["maxReplicas"] <= int(config["CONNECTOR_KAFKA_PARTITIONS"]), "replicas beyond partitions idle"

    pdb = scaling_of(result, "PodDisruptionBudget", "StatefulSet")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": sts["spec"]["selector"]["matchLabels"]}}

    monitor = result.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert labels_match(selector, headless["metadata"]["labels"])
    assert not labels_match(selector, web["metadata"]["labels"]), "each pod scraped once, on the admin port"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["chat"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_edge_is_a_deployment_of_its_own(render: Render, scenario: str) -> None:
    result = rendered_ok(render, scenario)
    deployment, sts = result.one("Deployment", "-edge"), result.one("StatefulSet")
    edge_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels_match(deployment["spec"]["selector"]["matchLabels"], edge_labels)
    for selector in (sts["spec"]["selector"]["matchLabels"], result.one("Service", "-headless")["spec"]["selector"],
                     scaling_of(result, "PodDisruptionBudget", "StatefulSet")["spec"]["selector"]["matchLabels"]):
        assert not labels_match(selector, edge_labels), "no selector of the workers may take in the edge's pods"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["edge"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert [p["name"] for p in container["ports"]] == ["http", "admin"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "a rollout never lowers the edges in rotation"
    env = {e["name"] for e in container.get("env", [])}
    assert not {"CONNECTOR_PLATFORM_API_KEY_FILE", "CONNECTOR_PLATFORM_API_SECRET_FILE"} & env
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False

    service = result.one("Service", "-edge")
    assert labels_match(service["spec"]["selector"], edge_labels)
    hpa = scaling_of(result, "HorizontalPodAutoscaler", "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"], "the HPA owns the edge's replica count"
    assert labels_match(scaling_of(result, "PodDisruptionBudget", "Deployment")["spec"]["selector"]["matchLabels"], edge_labels)
    if result.kind("Ingress"):
        (rule,) = result.one("Ingress")["spec"]["rules"]
        assert {path["backend"]["service"]["name"] for path in rule["http"]["paths"]} == {service["metadata"]["name"]}

    fixed = render(DEFAULT, {"edge": {"autoscaling": {"enabled": False}, "replicaCount": 3}})
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.one("Deployment", "-edge")["spec"]["replicas"] == 3
    assert [h["spec"]["scaleTargetRef"]["kind"] for h in fixed.kind("HorizontalPodAutoscaler")] in ([], ["StatefulSet"])


@pytest.mark.parametrize("scenario", ["default", "production"])
def test_network_policy_admits_the_ingress_to_the_webhook_port_and_only_insiders_to_the_admin_port(
    render: Render, scenario: str
) -> None:
    result = rendered_ok(render, scenario)
    pod_labels = result.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    edge_labels = result.one("Deployment", "-edge")["spec"]["template"]["metadata"]["labels"]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}

    workers = result.one("NetworkPolicy", "-connector")["spec"]
    assert labels_match(workers["podSelector"]["matchLabels"], pod_labels)
    assert not labels_match(workers["podSelector"]["matchLabels"], edge_labels)
    assert workers["policyTypes"] == ["Ingress"]
    (admin,) = workers["ingress"]  # the workers take no webhooks
    assert admin["ports"] == [{"port": "admin", "protocol": "TCP"}]
    own, from_monitoring = admin["from"]
    assert own == {"podSelector": {"matchLabels": result.one("StatefulSet")["spec"]["selector"]["matchLabels"]}}
    assert from_monitoring == monitoring

    edge = result.one("NetworkPolicy", "-edge")["spec"]
    assert labels_match(edge["podSelector"]["matchLabels"], edge_labels)
    assert not labels_match(edge["podSelector"]["matchLabels"], pod_labels)
    assert edge["policyTypes"] == ["Ingress"]
    webhook, metrics = edge["ingress"]
    assert webhook["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert webhook["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}]
    assert metrics == {"from": [monitoring], "ports": [{"port": "admin", "protocol": "TCP"}]}


def test_workers_join_their_group_as_static_members_by_pod_name(render: Render) -> None:
    env = {e["name"]: e.get("value") for e in rendered_ok(render, "production").one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CONNECTOR_KAFKA_GROUP_INSTANCE_ID"] == "$(POD_NAME)", "a restarted pod must rejoin under its own name"
    dynamic = render(DEFAULT, {"config": {"kafka": {"staticMembership": False, "sessionTimeoutSeconds": 12}}})
    assert dynamic.returncode == 0, dynamic.stderr
    (workload,) = container_env(dynamic, "StatefulSet")
    assert "CONNECTOR_KAFKA_GROUP_INSTANCE_ID" not in workload and workload["CONNECTOR_KAFKA_SESSION_TIMEOUT_S"] == "12"


def test_network_policy_can_be_turned_off(render: Render) -> None:
    result = render(DEFAULT, {"networkPolicy": {"enabled": False}})
    assert result.returncode == 0, result.stderr
    assert result.kind("NetworkPolicy") == []


def test_topics_hook_job(render: Render) -> None:
    result = rendered_ok(render, "production")
    job = result.one("Job", "-topics")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["args"] == ["topics", "create"] and main["args"] == ["schemas", "register"]
    config = result.one("ConfigMap")["data"]
    for container in (init, main):
        env = {e["name"]: e["value"] for e in container["env"]}
        # the ConfigMap does not exist yet at pre-install: the same settings are inlined
        assert {k: v for k, v in env.items() if not k.endswith("_FILE")} == config
        assert "CONNECTOR_KAFKA_SASL_PASSWORD_FILE" in env
        assert "CONNECTOR_PLATFORM_API_KEY_FILE" not in env, "the hook needs no 8x8 credentials"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == "kafka-8x8-connector-credentials"
    assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-client-tls"


def test_chart_managed_secret_and_hook_copy(render: Render) -> None:
    result = rendered_ok(render, "chart-secret")
    secrets = {s["metadata"]["name"]: s for s in result.kind("Secret")}
    main = secrets["t-kafka-8x8-connector-credentials"]
    hook = secrets["t-kafka-8x8-connector-hook-credentials"]
    assert "helm.sh/hook" not in main["metadata"].get("annotations", {})
    assert hook["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    assert hook["data"] == main["data"]
    assert sorted(main["data"]) == sorted(CHART := [
        "platform-api-key", "platform-api-secret", "kafka-sasl-password", "kafka-ssl-key-password",
        "schema-registry-password"]), CHART
    sts = result.one("StatefulSet")
    assert "checksum/secret" in sts["spec"]["template"]["metadata"]["annotations"]
    pod = sts["spec"]["template"]["spec"]
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    assert "volumeClaimTemplates" not in sts["spec"]
    assert "lifecycle" not in pod["containers"][0]
    assert scaling_of(result, "PodDisruptionBudget", "StatefulSet")["spec"]["minAvailable"] == 1
    job = result.one("Job", "-topics")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == hook["metadata"]["name"]


def test_config_change_rolls_the_pods(render: Render) -> None:
    def checksum(result: Rendered) -> str:
        return result.one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    before = rendered_ok(render, "default")
    after = render(DEFAULT, {"config": {"logLevel": "DEBUG"}})
    assert after.returncode == 0, after.stderr
    assert checksum(before) != checksum(after)


# --- the settings the chart produces are ones the connector accepts ----------------------------------


def container_env(result: Rendered, kind: str, suffix: str = "") -> list[dict[str, str]]:
    """The CONNECTOR_* variables each container of a workload gets (ConfigMap env plus its own env)."""
    workload = result.one(kind, suffix)
    pod = workload["spec"]["template"]["spec"]
    configmaps = {c["metadata"]["name"]: c["data"] for c in result.kind("ConfigMap")}
    envs = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(configmaps[source["configMapRef"]["name"]])
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        envs.append({k: v for k, v in env.items() if k.startswith("CONNECTOR_")})
    return envs


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_connector_accepts_the_rendered_settings(render: Render, scenario: str, clean_connector_env, tmp_path: Path) -> None:
    from connector.config import load_settings

    result = rendered_ok(render, scenario)
    known = settings_env_names()
    workloads = [("StatefulSet", ""), ("Deployment", "-edge")] + ([("Job", "-topics")] if result.kind("Job") else [])
    for kind, suffix in workloads:
        for env in container_env(result, kind, suffix):
            unknown = sorted(set(env) - known)
            assert not unknown, f"{kind}: variables the Settings class does not read: {unknown}"
            with pytest.MonkeyPatch.context() as patch:
                for name, value in env.items():
                    if name.endswith("_FILE"):  # the mounted secret files, faked
                        fake = tmp_path / Path(value).name
                        fake.write_text(f"dummy-{fake.name}\n")
                        value = str(fake)
                    patch.setenv(name, value)
                settings = load_settings()
            assert settings.web_port == 6066 and settings.admin_port == 6067
            if kind == "StatefulSet":
                assert settings.platform_api_key.get_secret_value().startswith("dummy-")
                assert not settings.worker_serve_webhooks, "the edge serves the webhooks"
            if kind == "Deployment":
                assert not settings.platform_api_secret.get_secret_value(), "the edge, facing the internet, holds no 8x8 secret"
            if settings.kafka_security_protocol.value.startswith("SASL"):
                assert settings.kafka_sasl_password.get_secret_value().startswith("dummy-")


# --- NOTES and README ---------------------------------------------------------------------------------


def test_notes_tell_the_webhook_url(helm: Path) -> None:
    proc = subprocess.run([str(helm), "install", "chat", str(CHART), "--dry-run=client", "-n", "chat", "-f", str(PRODUCTION)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout[proc.stdout.index("NOTES:"):]
    assert "https://chat-connector.example.com/webhooks/8x8" in notes
    assert "WARNING" not in notes


def test_notes_warn_about_replicas_beyond_partitions(helm: Path) -> None:
    proc = subprocess.run([str(helm), "install", "chat", str(CHART), "--dry-run=client", "-f", str(DEFAULT),
                           "--set", "replicaCount=10"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "up to 10 workers but the topics have 8 partitions" in proc.stdout
    assert "https://<your public host>/webhooks/8x8" in proc.stdout


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys as helm-docs lists them: maps are descended, except empty ones and commented leaves."""
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


def test_readme_values_table_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    table = readme[readme.index("## Values"):]
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values:
        assert any(row == key or row.startswith(key + ".") for row in rows), f"top-level value {key} not in the README table"
    documented = {row.split("[")[0] for row in rows}
    missing = [key for key in leaf_keys(values) if not any(key == d or key.startswith(d + ".") for d in documented)]
    assert not missing, f"values missing from the README table: {missing}"
    undocumented = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and line.rstrip().endswith("|  |")]
    assert not undocumented, f"values without a `# --` description in values.yaml: {undocumented}"


def test_readme_is_what_helm_docs_generates(helm_docs: Path) -> None:
    proc = subprocess.run([str(helm_docs), "--dry-run", "--chart-search-root", str(CHART.parent),
                           "--template-files", "README.md.gotmpl", "--log-level", "warning"],
                          capture_output=True, text=True, timeout=120, cwd=CHART.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (CHART / "README.md").read_text().strip(), (
        "helm/kafka-8x8-connector/README.md is stale: run "
        "`helm-docs --chart-search-root helm --template-files README.md.gotmpl` from the repository root"
    )


def test_values_schema_is_valid_and_accepts_the_ci_values() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in sorted(CI_VALUES.glob("*.yaml")):
        merged = deep_merge(defaults, yaml.safe_load(path.read_text()))
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(merged)]
        assert not errors, f"{path.name}: {errors}"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
