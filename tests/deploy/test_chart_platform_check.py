"""The chart's `helm test` hook: a pod running `connector platform check` with the workers' settings and credentials."""

from __future__ import annotations

from .conftest import Render
from .test_deploy_helm import CHART_SECRET, DEFAULT


def test_the_test_hook_checks_the_platform_with_the_workers_settings(render: Render) -> None:
    for values in ((DEFAULT,), (CHART_SECRET,)):
        rendered = render(*values)
        assert rendered.returncode == 0, rendered.stderr
        pod = rendered.one("Pod", "-platform-check")
        worker = rendered.one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (container,) = pod["spec"]["containers"]
        assert container["args"] == ["platform", "check"] and container["image"] == worker["image"]
        assert container["envFrom"] == worker["envFrom"]
        files = {e["name"]: e["value"] for e in container["env"]}
        assert files == {e["name"]: e["value"] for e in worker["env"] if e["name"].endswith("_FILE")}
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert {k: v for k, v in mounted.items() if k != "tmp"} == {
            m["name"]: m["mountPath"] for m in worker["volumeMounts"] if m["name"] in ("credentials", "kafka-tls")
        }
