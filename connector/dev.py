"""`connector dev`: the 8x8 sandbox and one worker wired to it, on the local stack.

Both run as child processes in this process group, so Ctrl-C (or the end of either) stops both.
The worker serves the webhooks itself (CONNECTOR_WORKER_SERVE_WEBHOOKS=true): one process to start
and watch, where a deployment runs `connector edge` beside its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from connector.config import Generation, Settings

__all__ = ["run_dev"]

SANDBOX_API_KEY = "sandbox-api-key"
SANDBOX_API_SECRET = "sandbox-api-secret"
SANDBOX_TENANT = "sandbox-tenant"
SANDBOX_QUEUE = "101"  # the sandbox's default queue


def run_dev(settings: Settings, *, sandbox_port: int, generation: Generation, echo: Callable[[str], None]) -> int:
    """Start the sandbox, set it up for the worker (`connector platform setup`), then start the worker;
    wait until Ctrl-C or one of them exits."""
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    webhook_url = f"http://127.0.0.1:{settings.web_port}/webhooks/8x8"
    children: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, _interrupt)  # a TERM (e.g. from `timeout`) stops the children too
    platform = {
        "CONNECTOR_PLATFORM_GENERATION": generation.value,
        "CONNECTOR_PLATFORM_BASE_URL": sandbox_url,
        "CONNECTOR_PLATFORM_ALLOW_INSECURE_HTTP": "true",  # the sandbox speaks plain HTTP
        "CONNECTOR_PLATFORM_TENANT_ID": SANDBOX_TENANT,
        "CONNECTOR_PLATFORM_API_KEY": SANDBOX_API_KEY,
        "CONNECTOR_PLATFORM_API_SECRET": SANDBOX_API_SECRET,
    }
    try:
        children.append(
            _spawn(
                ["sandbox", "--port", str(sandbox_port), "--tenant", SANDBOX_TENANT,
                 "--api-key", SANDBOX_API_KEY, "--api-secret", SANDBOX_API_SECRET],
                {},
            )
        )
        _wait_for_json(f"{sandbox_url}/_sandbox/info", children[0])
        channel_id = _set_up(platform, webhook_url.removesuffix("/webhooks/8x8"))
        children.append(
            _spawn(
                ["worker"],
                {
                    **platform,
                    "CONNECTOR_PLATFORM_CHANNEL_ID": channel_id,
                    "CONNECTOR_WORKER_SERVE_WEBHOOKS": "true",
                    # The sandbox serves the files its messages carry (pre-signed URLs) on loopback.
                    "CONNECTOR_COMMAND_ATTACHMENT_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
                },
            )
        )
        _wait_for_json(f"http://127.0.0.1:{settings.web_port}/healthz", children[1], timeout=120)
        echo(_banner(settings, sandbox_url, webhook_url, generation, channel_id))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return next(child.returncode for child in children if child.poll() is not None) or 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(children)


def _set_up(platform: dict[str, str], public_url: str) -> str:
    """`connector platform setup` against the sandbox, as for 8x8 itself: the web-hook to the worker and
    a channel on the sandbox's queue; the channel id."""
    done = subprocess.run(
        [sys.executable, "-m", "connector", "platform", "setup", "--public-url", public_url, "--queue", SANDBOX_QUEUE],
        env={**os.environ, **platform},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise SystemExit(f"error: connector platform setup failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1].removeprefix("CONNECTOR_PLATFORM_CHANNEL_ID=")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector", *args], env={**os.environ, **env})


def _wait_for_json(url: str, child: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"error: {' '.join(child.args[3:4])} exited with {child.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"error: {url} did not answer within {timeout:.0f}s")


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _banner(settings: Settings, sandbox_url: str, webhook_url: str, generation: Generation, channel_id: str) -> str:
    worker = f"http://127.0.0.1:{settings.web_port}"
    admin = f"http://127.0.0.1:{settings.admin_port}"
    return "\n".join(
        [
            "",
            "connector dev is running (Ctrl-C stops the sandbox and the worker):",
            f"  Kafka            {settings.kafka_bootstrap_servers}",
            f"  Schema Registry  {settings.schema_registry_url}",
            f"  8x8 sandbox      {sandbox_url}  (admin: {sandbox_url}/_sandbox/info)",
            f"  console          {sandbox_url}/  (watch conversations, play the agent, set faults)",
            f"  generation       {generation.value}, channel {channel_id}, tenant {SANDBOX_TENANT}",
            f"  worker           {worker}  (webhooks {webhook_url}, {worker}/healthz, /readyz)",
            f"  worker admin     {admin}  (internal: /metrics, /conversations/<ref>)",
            f"  topics           {', '.join(settings.topics().values())}",
            "",
            "Try: .venv/bin/connector send start --ref demo-1 --name Ada --text hello --wait",
            "     .venv/bin/connector events tail --json --from-beginning --ref demo-1 --timeout 10",
            "",
        ]
    )
