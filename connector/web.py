"""The worker's operational endpoints: `GET /healthz`, `GET /readyz` and `GET /metrics`.

Readiness is the conjunction of named checks that the parts register in
`connector.extras["readiness"]` (name -> async callable answering a bool), plus the Faust consumer
having partitions assigned. `/metrics` serves Prometheus' default registry, which every part uses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["install", "readiness"]

CHECK_TIMEOUT_S = 3.0


async def readiness(connector: Any) -> dict[str, bool]:
    """Each readiness check by name: partitions assigned, then those the parts registered."""
    checks = dict(connector.extras.get("readiness", {}))
    names = list(checks)
    results = await asyncio.gather(*(_run(checks[name]) for name in names))
    return {"partitions": _assigned(connector.app), **dict(zip(names, results))}


def install(connector: Any) -> None:
    """Add the three views to the app."""
    app = connector.app
    connector.extras.setdefault("readiness", {})

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            """The process is alive and its event loop answers."""
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            """200 when every check passes, else 503 naming the ones that do not."""
            checks = await readiness(connector)
            ready = all(checks.values())
            return self.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            """Prometheus text exposition of the default registry."""
            from aiohttp import web

            return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _run(check: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), CHECK_TIMEOUT_S))
    except Exception:  # a failing check is a false one
        return False


def _assigned(app: Any) -> bool:
    """The consumer has joined its group and holds partitions (and no rebalance is under way)."""
    try:
        return bool(app.consumer.assignment()) and not app.rebalancing
    except Exception:  # the consumer does not exist yet
        return False
