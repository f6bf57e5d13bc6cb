"""Wrong 8x8 credentials: every command says AUTH_FAILED, one ERROR line a minute, and `/readyz` says platform: false."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest

from connector.client import CommandPublisher, ResultWatcher
from connector.credentials import Credentials
from tests.support.env import settings_of

REFUSED = {"status": "FAILED", "error_code": "AUTH_FAILED", "error_message": "8x8 refused the API key: invalid_client"}


async def test_refusals_log_one_error_a_minute_and_a_success_clears_them(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    credentials = Credentials(clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="connector.credentials"):
        for _ in range(3):
            credentials.saw(REFUSED)
        assert not await credentials.ready() and "invalid_client" in await credentials.reason()
        now[0] = 61
        credentials.saw(REFUSED)
        credentials.saw({"status": "FAILED", "error_code": "NOT_STARTED"})  # another failure says nothing of the key
        assert not await credentials.ready()
        credentials.saw({"status": "SUCCEEDED"})
        assert await credentials.ready() and await credentials.reason() is None
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2 and "(2 more refusals since the last line)" in errors[1].getMessage()
    assert "CONNECTOR_PLATFORM_API_KEY" in errors[0].getMessage()


@pytest.mark.kafka
@pytest.mark.parametrize("generation", ["chat-api-v2", "chat-gateway-v1"])
def test_a_worker_with_wrong_credentials_says_so(generation, sandbox, connector_env, start_worker, tmp_path: Path) -> None:
    wrong = "wrong-key" if generation == "chat-gateway-v1" else "sandbox-api-key"
    env = connector_env(sandbox, generation, platform_api_key=wrong, platform_api_secret="wrong-secret", log_level="INFO")
    start_worker(env)
    settings = settings_of(env)
    refs = [f"auth-{uuid.uuid4().hex[:6]}-{n}" for n in range(3)]
    with ResultWatcher(settings) as watcher:
        with CommandPublisher(settings) as publisher:
            ids = [publisher.start(ref, name="Ann") for ref in refs]
        found = watcher.wait(ids, 60)
    assert [found[command_id].error_code for command_id in ids] == ["AUTH_FAILED"] * 3

    ready = httpx.get(f"http://127.0.0.1:{env['CONNECTOR_WEB_PORT']}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["checks"]["platform"] is False
    assert "8x8 refuses the credentials" in ready.json()["reasons"]["platform"]
    log = (tmp_path / "worker-0.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line and "8x8 refuses the credentials" in line]
    assert len(errors) == 1, errors
    assert "wrong-secret" not in log and "wrong-key" not in log
