"""The chart's observability pack: the PrometheusRule (promtool checks it and runs its alerts on made-up
series), the monitors, the Grafana dashboard, the KEDA ScaledObject, and every metric they name on the
/metrics of a running worker (the webhooks' on a running edge's)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import connector
from tests.commands.conftest import Results, connector_env, publisher_for, readers, sandbox, start_sandbox, worker_port  # noqa: F401
from tests.support.env import free_port

from .conftest import CHART, CI_VALUES, SKIPPED_KINDS, Render, Rendered, tool

DEFAULT = CI_VALUES / "default-values.yaml"
DASHBOARD = CHART / "dashboards" / "connector.json"
OBSERVED = {"metrics": {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}}
KEDA = {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8, "keda": {"enabled": True}}}
WORKERS = 'namespace="chat", job="t-kafka-8x8-connector-headless"'
EDGE = 'namespace="chat", job="chat/t-kafka-8x8-connector-edge", pod="t-kafka-8x8-connector-edge-7d9c-x2"'
# Series the rules read from kube-state-metrics, not from the connector.
KUBE_STATE_METRICS = {"kube_statefulset_status_replicas", "kube_statefulset_status_replicas_ready",
                      "kube_deployment_status_replicas_unavailable"}
# A metric name right before a label selector: every query of the rules and the dashboard selects labels.
SELECTED = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def rendered(render: Render, *values: Path | dict[str, Any]) -> Rendered:
    result = render(DEFAULT, *values)
    assert result.returncode == 0, result.stderr
    return result


def rule_queries(result: Rendered) -> list[str]:
    return [rule["expr"] for group in result.one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(queries: list[str]) -> set[str]:
    names = set()
    for query in queries:
        found = set(SELECTED.findall(query))
        assert found, f"no metric selector in {query}"
        names |= found
    return names


def exported_names(exposition: str) -> set[str]:
    """The series names a Prometheus text exposition offers, those of metrics without samples yet included."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in suffixes.get(family.type, ("",))
    }


# --- off by default ------------------------------------------------------------------------------


def test_the_pack_is_off_by_default(render: Render) -> None:
    result = rendered(render)
    for kind in ("PrometheusRule", "ScaledObject", "ServiceMonitor", "PodMonitor"):
        assert result.kind(kind) == [], kind
    assert [c["metadata"]["name"] for c in result.kind("ConfigMap")] == ["t-kafka-8x8-connector"]
    assert result.one("StatefulSet")["spec"]["replicas"] == 2


# --- the PrometheusRule --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> Path:
    return tool("promtool")


def test_rules_pass_promtool(render: Render, promtool: Path, tmp_path: Path) -> None:
    result = rendered(render, OBSERVED)
    rule = result.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    proc = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 10 rules found" in proc.stdout, proc.stdout


def test_promtool_catches_a_broken_rule(render: Render, promtool: Path, tmp_path: Path) -> None:
    """The check above can fail: a query with a syntax error does not pass."""
    spec = rendered(render, OBSERVED).one("PrometheusRule")["spec"]
    spec["groups"][0]["rules"][0]["expr"] = "sum by (code (rate(connector_commands_dlq_total[5m]))"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "parse error" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_rule_labels_and_thresholds_come_from_the_values(render: Render) -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                                             "commandsLagThreshold": 250, "webhooksLagThreshold": 40}},
              "config": {"topics": {"commands": "acme.commands", "webhooksRaw": "acme.raw"}}}
    result = rendered(render, values)
    rule = result.one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    queries = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert queries["ConnectorCommandsLagHigh"].endswith('topic="acme.commands"}) > 250')
    assert queries["ConnectorWebhooksLagHigh"].endswith('topic="acme.raw"}) > 40')
    headless = result.one("Service", "-headless")["metadata"]["name"]
    edge = result.one("Deployment", "-edge")["metadata"]["name"]
    for name, query in queries.items():
        if name.startswith("ConnectorWebhooks") and "lag" not in query:
            assert f'pod=~"{edge}-.+"' in query, f"{name} does not select the scraped edge pods: {query}"
        elif not name.endswith("NotReady"):
            assert f'job="{headless}"' in query, f"{name} does not select the scraped workers: {query}"


def test_the_monitors_scrape_the_admin_port_of_workers_and_edge_pods(render: Render) -> None:
    result = rendered(render, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    pod = result.one("Deployment", "-edge")["spec"]["template"]
    monitor = result.one("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= result.one("StatefulSet")["spec"]["template"]["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    (container,) = pod["spec"]["containers"]
    assert "admin" in [port["name"] for port in container["ports"]]
    assert result.one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "admin"


# Made-up series, one sample a minute, and the alerts they must (and must not) fire.
ALERT_TESTS = f"""
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'connector_consumer_lag_records{{{WORKERS}, pod="w-0", topic="chat.commands"}}'
        values: '0+400x15'
      - series: 'connector_consumer_lag_records{{{WORKERS}, pod="w-1", topic="chat.commands"}}'
        values: '0+400x15'
      - series: 'connector_consumer_lag_records{{{WORKERS}, pod="w-0", topic="chat.webhooks.raw"}}'
        values: '5x15'
      - series: 'connector_commands_dlq_total{{{WORKERS}, pod="w-0", code="AUTH_FAILED"}}'
        values: '0 0 0 1 2 3 4 5 6 7 8 9 10 11 12 13'
      - series: 'connector_8x8_request_seconds_count{{{WORKERS}, pod="w-0", operation="token", status="200"}}'
        values: '0+10x15'
      - series: 'connector_webhook_requests_total{{{EDGE}, outcome="accepted"}}'
        values: '0+60x15'
      - series: 'connector_webhook_requests_total{{{EDGE}, outcome="unavailable"}}'
        values: '0+6x15'
      - series: 'connector_webhook_requests_total{{{WORKERS}, pod="w-0", outcome="unauthorized"}}'
        values: '0+60x15'
      - series: 'kube_deployment_status_replicas_unavailable{{namespace="chat", deployment="t-kafka-8x8-connector-edge"}}'
        values: '0x15'
      - series: 'kube_statefulset_status_replicas{{namespace="chat", statefulset="t-kafka-8x8-connector"}}'
        values: '2x15'
      - series: 'kube_statefulset_status_replicas_ready{{namespace="chat", statefulset="t-kafka-8x8-connector"}}'
        values: '2 2 2 1 1 1 1 1 1 1 2 2 2 2 2 2'
    alert_rule_test:
      - {{eval_time: 4m, alertname: ConnectorCommandsLagHigh, exp_alerts: []}}
      - eval_time: 9m
        alertname: ConnectorCommandsLagHigh
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: chat, topic: chat.commands}}
            exp_annotations:
              summary: Commands are waiting
              description: >-
                3.6k records of chat.commands are not processed yet (more than 1000 for 5 minutes): workers too
                few, stalled, or 8x8 slow.
      - {{eval_time: 15m, alertname: ConnectorWebhooksLagHigh, exp_alerts: []}}
      - eval_time: 6m
        alertname: ConnectorCommandsDeadLettered
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: chat, code: AUTH_FAILED}}
            exp_annotations:
              summary: Commands are going to the dead-letter topic
              description: >-
                4 commands with error code AUTH_FAILED got a FAILED result and went to chat.commands.dlq in the
                last 5 minutes; its headers say why.
      - eval_time: 6m
        alertname: Connector8x8AuthFailed
        exp_alerts:
          - exp_labels: {{severity: critical, namespace: chat}}
            exp_annotations:
              summary: 8x8 refuses the connector's credentials
              description: >-
                8x8 answers 401 or 403, or refused the API key (AUTH_FAILED): check the API key and secret (or
                OAuth client) in the credentials Secret and the tenant id.
      - {{eval_time: 15m, alertname: Connector8x8ClientErrors, exp_alerts: []}}
      - {{eval_time: 15m, alertname: ConnectorWebhooksUnauthorized, exp_alerts: []}}
      - eval_time: 10m
        alertname: ConnectorWebhooksUnavailable
        exp_alerts:
          - exp_labels: {{severity: critical, namespace: chat, outcome: unavailable}}
            exp_annotations:
              summary: Webhook POSTs are answered 503
              description: >-
                30 webhook POSTs answered 503 (unavailable) in the last 5 minutes: Kafka does not take
                chat.webhooks.raw, or the signing key cannot be had. 8x8 sends them again.
      - {{eval_time: 7m, alertname: ConnectorWorkersNotReady, exp_alerts: []}}
      - eval_time: 9m
        alertname: ConnectorWorkersNotReady
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: chat, statefulset: t-kafka-8x8-connector}}
            exp_annotations:
              summary: Workers are not ready
              description: 1 worker(s) of t-kafka-8x8-connector not ready for 5 minutes; their /readyz says why.
      - {{eval_time: 15m, alertname: ConnectorWorkersNotReady, exp_alerts: []}}
      - {{eval_time: 15m, alertname: ConnectorEdgeNotReady, exp_alerts: []}}
"""


def test_alerts_fire_on_their_conditions_only(render: Render, promtool: Path, tmp_path: Path) -> None:
    """promtool's rule unit tests: lag above the threshold for 5 minutes, dead letters, refused credentials,
    503s and an unready worker fire their alerts (labels checked); lag below it and healthy rates fire none."""
    spec = rendered(render, OBSERVED).one("PrometheusRule")["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "tests.yaml").write_text(ALERT_TESTS)
    proc = subprocess.run([str(promtool), "test", "rules", "tests.yaml"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


# --- the dashboard -------------------------------------------------------------------------------


def test_dashboard_configmap_carries_the_dashboard_for_the_sidecar(render: Render) -> None:
    result = rendered(render, OBSERVED, {"metrics": {"dashboard": {"annotations": {"grafana_folder": "Chat"}}}})
    configmap = result.one("ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Chat"}
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text())


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], f"{panel['title']}: {target['expr']}"
    titles = " | ".join(panel["title"] for panel in dashboard["panels"])
    for subject in ("Commands/s by type and status", "8x8 latency p50", "8x8 latency p99", "Webhooks/s by outcome",
                    "Consumer lag", "Dead-lettered", "Conversations by status"):
        assert subject in titles


def test_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    """Each query, Grafana's variables given values, passes promtool as the expression of a recording rule."""
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    rules = [{"record": f"dashboard:query{n}", "expr": q.replace("$__rate_interval", "5m").replace("$namespace", "chat")}
             for n, q in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(queries)} rules found" in proc.stdout, proc.stdout


# --- KEDA --------------------------------------------------------------------------------------------


def test_keda_scales_the_workers_on_the_commands_lag_instead_of_the_hpa(render: Render, validate_manifests) -> None:
    result = rendered(render, KEDA)
    assert [h for h in result.kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"] == [], (
        "KEDA makes its own HPA")
    sts = result.one("StatefulSet")
    assert "replicas" not in sts["spec"], "the autoscaler owns the replica count"
    scaled = result.one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (2, 8, 30)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["threshold"] == "500"
    assert trigger["metadata"]["query"] == f'max(connector_consumer_lag_records{{{WORKERS}, topic="chat.commands"}})'
    assert "advanced" not in spec
    behaved = rendered(render, KEDA, {"autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}})
    assert behaved.one("ScaledObject")["spec"]["advanced"] == {
        "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}}
    # every other manifest is valid Kubernetes (the ScaledObject is a CRD without a schema here: checked above)
    proc = validate_manifests(result.stdout)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["summary"]["invalid"] == 0, report
    assert report["summary"]["skipped"] == len([d for d in result.docs if d["kind"] in SKIPPED_KINDS]) == 1


def test_keda_without_autoscaling_fails_with_a_clear_message(render: Render) -> None:
    result = render(DEFAULT, {"autoscaling": {"keda": {"enabled": True}}})
    assert result.returncode != 0
    assert "autoscaling.keda.enabled needs autoscaling.enabled" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"metrics": {"prometheusRule": {"platformErrorRatio": 5}}}, "/metrics/prometheusRule/platformErrorRatio"),
        ({"metrics": {"prometheusRule": {"commandsLagThreshold": -1}}}, "/metrics/prometheusRule/commandsLagThreshold"),
        ({"autoscaling": {"keda": {"lagPerReplica": 0}}}, "/autoscaling/keda/lagPerReplica"),
        ({"autoscaling": {"keda": {"prometheusServerAddress": "prometheus:9090"}}}, "/autoscaling/keda/prometheusServerAddress"),
        ({"metrics": {"dashboard": {"folder": "x"}}}, "additional properties"),
    ],
    ids=["ratio", "threshold", "lag-per-replica", "server-address", "typo"],
)
def test_wrong_observability_values_fail(render: Render, values: dict[str, Any], path: str) -> None:
    result = render(DEFAULT, values)
    assert result.returncode != 0 and path in result.stderr, result.stderr


# --- every metric named is exported by a running worker (and the webhooks' by an edge) -----------------


@pytest.mark.kafka
def test_a_running_worker_exports_every_metric_the_rules_and_the_dashboard_name(
    render: Render, sandbox, connector_env, start_worker, start_edge, publisher_for, readers
) -> None:
    """The edge's /metrics has every webhook metric named (the alerts select the edge pods for them), the
    worker's every other one."""
    generation = "chat-api-v2"
    env = connector_env(sandbox, generation, kafka_lag_interval_s=0.5)
    start_worker(env)
    edge_env = {**env, "CONNECTOR_WEB_PORT": str(free_port()), "CONNECTOR_ADMIN_PORT": str(free_port())}
    start_edge(edge_env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"metrics-{uuid.uuid4().hex[:8]}"
    started = publisher.start(ref, name="Ann Example")
    publisher.flush()
    assert results.wait_for([started], 30)[started][0]["status"] == "SUCCEEDED"

    wanted = metric_names(rule_queries(rendered(render, OBSERVED)) + dashboard_queries(json.loads(DASHBOARD.read_text())))
    metrics_url = f"http://127.0.0.1:{env['CONNECTOR_ADMIN_PORT']}/metrics"
    deadline = time.monotonic() + 30
    while True:  # the lag of both topics is measured, that of the command read already committed
        exposition = httpx.get(metrics_url, timeout=5).raise_for_status().text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(exposition) for s in family.samples}
        lag = {dict(labels).get("topic"): value for (name, labels), value in samples.items() if name == "connector_consumer_lag_records"}
        if lag.get(env["CONNECTOR_TOPIC_COMMANDS"]) == 0 and env["CONNECTOR_TOPIC_WEBHOOKS_RAW"] in lag:
            break
        assert time.monotonic() < deadline, f"lag never measured as 0 for the commands topic: {lag}"
        time.sleep(0.5)

    webhooks = {name for name in wanted if name.startswith("connector_webhook_")}
    assert webhooks, "the webhook panels and alerts name their metrics"
    edge_exposition = httpx.get(f"http://127.0.0.1:{edge_env['CONNECTOR_ADMIN_PORT']}/metrics", timeout=5).raise_for_status().text
    missing = sorted(webhooks - exported_names(edge_exposition))
    assert not missing, f"named by the rules or the dashboard, not exported by the edge: {missing}"
    missing = sorted(wanted - webhooks - KUBE_STATE_METRICS - exported_names(exposition))
    assert not missing, f"named by the rules or the dashboard, not exported by the worker: {missing}"
    labels = (("generation", generation), ("version", connector.__version__))
    assert samples[("connector_build_info", labels)] == 1
    timed = ("connector_command_end_to_end_seconds_count", (("command_type", "START_CONVERSATION"), ("status", "SUCCEEDED")))
    assert samples[timed] == 1
