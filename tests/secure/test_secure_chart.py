"""The chart gives the worker pod, and the hook Job that runs `connector topics create`, every variable and
file that the secured tests use (the devstack's secure/sasl.env and secure/mtls.env): SCRAM and mutual TLS."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy.conftest import Render, helm, render  # noqa: F401 (fixtures)
from tests.secure.conftest import LISTENERS, listener_env

TLS = {"secretName": "kafka-client-tls", "caKey": "ca.crt"}
VALUES: dict[str, dict[str, Any]] = {
    "sasl": {
        "bootstrapServers": "kafka-0.example.com:9094",
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "saslUsername": "connector",
        "tls": TLS,
    },
    "mtls": {
        "bootstrapServers": "kafka-0.example.com:9095",
        "securityProtocol": "SSL",
        "tls": {**TLS, "certKey": "tls.crt", "keyKey": "tls.key"},
    },
}
SECRETS = {"platformApiKey": "key", "platformApiSecret": "secret", "kafkaSaslPassword": "sasl"}
# The variables whose value is a file the pod must have, and the Secret key it must come from.
FILE_KEYS = {
    "CONNECTOR_KAFKA_SASL_PASSWORD_FILE": ("credentials", "kafka-sasl-password"),
    "CONNECTOR_KAFKA_SSL_CAFILE": ("kafka-tls", "ca.crt"),
    "CONNECTOR_KAFKA_SSL_CERTFILE": ("kafka-tls", "tls.crt"),
    "CONNECTOR_KAFKA_SSL_KEYFILE": ("kafka-tls", "tls.key"),
}


@pytest.mark.parametrize("listener", LISTENERS)
def test_pods_get_every_secured_setting_and_file(render: Render, listener: str) -> None:
    needed = set(listener_env(listener))
    result = render({"config": {"kafka": VALUES[listener]}, "secrets": SECRETS})
    assert result.returncode == 0, result.stderr
    config = result.one("ConfigMap")["data"]
    assert config["CONNECTOR_KAFKA_SECURITY_PROTOCOL"] == VALUES[listener]["securityProtocol"]
    pods = [result.one("StatefulSet")["spec"]["template"]["spec"], result.one("Job")["spec"]["template"]["spec"]]
    for pod in pods:
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        if container.get("envFrom"):  # the workers read the ConfigMap; the hook Job has the values inline
            env = {**config, **env}
        assert needed <= env.keys(), f"missing in the pod: {sorted(needed - env.keys())}"
        mounts = {m["name"]: PurePosixPath(m["mountPath"]) for m in container["volumeMounts"]}
        volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for name in needed & FILE_KEYS.keys():
            volume, key = FILE_KEYS[name]
            assert PurePosixPath(env[name]) == mounts[volume] / key, (name, env[name])
            assert volume in volumes, f"{volume} is not a Secret volume of the pod"
        if "kafka-tls" in mounts:
            assert volumes["kafka-tls"] == "kafka-client-tls"
