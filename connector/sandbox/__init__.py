"""A faithful local stand-in for 8x8's chat APIs (Chat API v2 and Chat Gateway v1), for development,
demos and CI: both REST APIs, a simulated contact center, signed webhooks, faults on demand."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FaultConfig", "FaultRule", "RunningSandbox", "Sandbox", "SandboxConfig", "run_in_thread", "start_sandbox"]

_MODULE_OF = {
    "FaultConfig": "connector.sandbox.config",
    "FaultRule": "connector.sandbox.config",
    "SandboxConfig": "connector.sandbox.config",
    "RunningSandbox": "connector.sandbox.server",
    "Sandbox": "connector.sandbox.server",
    "run_in_thread": "connector.sandbox.server",
    "start_sandbox": "connector.sandbox.server",
}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: every `connector` command imports the sandbox's CLI, and only
    `connector sandbox` needs its server (the others, `connector edge` among them, start faster without it)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
