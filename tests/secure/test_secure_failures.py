"""What a wrong secured-Kafka setting or a missing ACL looks like: the CLI, the publisher and the worker stop
at once with one line naming the setting or the ACL (never a password, never a traceback, never a hang)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import certifi
import pytest

from connector.client import CommandPublisher, PublishError
from connector.kafka_errors import KafkaTrouble
from tests.support.env import settings_of
from tests.secure.conftest import as_user, connector

pytestmark = pytest.mark.kafka

WRONG_PASSWORD = "not-the-password-42"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed (exit 1, nothing on stdout)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def worker_stops(start_worker, env: dict[str, str], log: Path) -> str:
    """Start a worker that must stop at once (exit 2); its log."""
    process = start_worker(env, wait_ready=False)
    assert process.wait(60) == 2
    text = log.read_text()
    assert "Traceback" not in text, text
    return text


@pytest.mark.parametrize("listener", ["sasl"])
def test_a_missing_acl_is_named(settings_env: dict[str, str], start_worker, tmp_path: Path) -> None:
    commands = settings_env["CONNECTOR_TOPIC_COMMANDS"]
    publisher = as_user(settings_env, "publisher")
    line = one_line(connector(publisher, "topics", "create"))
    assert f"refuses User:publisher: it needs Create on Topic {commands} (README, ACLs)" in line

    assert connector(settings_env, "topics", "create").returncode == 0
    line = one_line(connector(settings_env, "send", "message", "--ref", "r1", "--text", "hi"))
    assert f"refuses User:connector: it needs Write on Topic {commands}" in line

    log = worker_stops(start_worker, as_user(settings_env, "incomplete"), tmp_path / "worker-0.log")
    assert f"refuses User:incomplete: it needs Read on Group {settings_env['CONNECTOR_APP_ID']} (README, ACLs)" in log


def test_wrong_credentials_and_an_untrusted_ca_fail_fast(
    listener: str, settings_env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    if listener == "sasl":
        wrong = {k: v for k, v in settings_env.items() if k != "CONNECTOR_KAFKA_SASL_PASSWORD_FILE"}
        wrong["CONNECTOR_KAFKA_SASL_PASSWORD"] = WRONG_PASSWORD
        expected = "refused the SCRAM-SHA-512 login of user 'connector': wrong password or unknown user"
    else:  # no client certificate
        wrong = {k: v for k, v in settings_env.items() if k not in ("CONNECTOR_KAFKA_SSL_CERTFILE", "CONNECTOR_KAFKA_SSL_KEYFILE")}
        expected = "closed the connection while it was set up"
    started = time.monotonic()
    for args in (("topics", "create"), ("send", "message", "--ref", "r1", "--text", "hi", "--wait")):
        result = connector(wrong, *args)
        line = one_line(result)
        assert expected in line and WRONG_PASSWORD not in result.stdout + result.stderr, line
    with pytest.raises(PublishError, match=expected):
        CommandPublisher(settings_of(wrong))
    assert asyncio.run(KafkaTrouble(settings_of(wrong))()) is not None  # /readyz's reason for kafka: false
    log = worker_stops(start_worker, wrong, tmp_path / "worker-0.log")
    assert expected in log and WRONG_PASSWORD not in log
    assert time.monotonic() - started < 45, "a refused login must not wait for the clients' timeouts"

    untrusted = connector({**settings_env, "CONNECTOR_KAFKA_SSL_CAFILE": certifi.where()}, "topics", "create")
    assert "is not trusted (self-signed certificate in certificate chain)" in one_line(untrusted)
    assert "set CONNECTOR_KAFKA_SSL_CAFILE" in one_line(untrusted)
    port = settings_env["CONNECTOR_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]
    mismatch = connector({**settings_env, "CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": f"localhost:{port}"}, "topics", "create")
    assert "is not valid for that host" in one_line(mismatch)
