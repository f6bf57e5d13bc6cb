"""Fixtures of the operator-facing tests: those of the command tests (sandbox, worker environment, readers)."""

from tests.commands.conftest import (  # noqa: F401 (fixtures)
    connector_env,
    readers,
    sandbox,
    start_sandbox,
    worker_port,
)
