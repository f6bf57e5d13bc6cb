"""The two ports of a worker or an edge: the public one (webhooks, `/healthz`, `/readyz`) and the internal admin one.

The public port is a plain aiohttp app, built from the routes given to `PublicServer` (a worker's
parts add theirs to `Connector.public_routes`) plus health; nothing else is on it, and it runs without Faust (`connector edge`). A worker's admin
port is Faust's own web server (table pages off): `/metrics` here, `/conversations/{ref}` (commands)
and Faust's routing between workers; an edge's is `admin_app`, `/metrics` only. It must never be
exposed outside the cluster.

A worker's readiness is the conjunction of named checks that the parts register in
`Connector.readiness` (name -> async callable answering a bool), plus the Faust consumer having
partitions assigned; a part may also say why a check of its failed (`Connector.readiness_reasons`:
name -> async callable answering a line or None), which `/readyz` then adds under `reasons`. `/metrics` serves Prometheus' default registry, which every part uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["PublicServer", "admin_app", "check_all", "explain_failed", "install", "public_app", "readiness", "reasons"]

if TYPE_CHECKING:  # the edge imports this module and must not import Faust
    from connector.app import Connector

CHECK_TIMEOUT_S = 3.0


async def readiness(connector: Connector) -> dict[str, bool]:
    """Each readiness check of a worker by name: partitions assigned, then those the parts registered."""
    return {"partitions": _assigned(connector.app), **await check_all(connector.readiness)}


async def reasons(connector: Connector, checks: dict[str, bool]) -> dict[str, str]:
    """Why the failed checks of a worker failed, for those whose part can say (e.g. Kafka refusing the login)."""
    return await explain_failed(connector.readiness_reasons, checks)


async def check_all(checks: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, bool]:
    """The answer of each check by name, run together; one that fails or takes too long is false."""
    names = list(checks)
    results = await asyncio.gather(*(_run(checks[name]) for name in names))
    return dict(zip(names, results))


async def explain_failed(
    explain: dict[str, Callable[[], Awaitable[str | None]]], checks: dict[str, bool]
) -> dict[str, str]:
    """Why the failed `checks` failed, for those that `explain` has a callable for."""
    names = [name for name, ok in checks.items() if not ok and name in explain]
    answers = await asyncio.gather(*(_run(explain[name], default=None) for name in names))
    return {name: answer for name, answer in zip(names, answers) if answer}


def public_app(
    routes: list[web.RouteDef],
    ready: Callable[[], Awaitable[dict[str, bool]]],
    explain: Callable[[dict[str, bool]], Awaitable[dict[str, str]]] | None = None,
) -> web.Application:
    """An aiohttp app of `routes` plus `/healthz` and `/readyz` (200 when every check of `ready` passes, else 503
    with the reasons `explain` gives for the failed ones)."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready_view(request: web.Request) -> web.Response:
        checks = await ready()
        ok = all(checks.values())
        answer: dict[str, Any] = {"ready": ok, "checks": checks}
        if not ok and explain is not None and (why := await explain(checks)):
            answer["reasons"] = why
        return web.json_response(answer, status=200 if ok else 503)

    app = web.Application()
    app.add_routes([*routes, web.get("/healthz", health), web.get("/readyz", ready_view)])
    return app


def admin_app() -> web.Application:
    """The admin port of a process without Faust: `/metrics` only."""

    async def metrics(request: web.Request) -> web.Response:
        return _metrics()

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics)])
    return app


class PublicServer(Service):
    """Serves the public app of `routes` on host:port (read when it starts); on stop, closes it and finishes
    the requests in hand (up to `grace_s`)."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: list[web.RouteDef],
        ready: Callable[[], Awaitable[dict[str, bool]]],
        *,
        grace_s: float,
        explain: Callable[[dict[str, bool]], Awaitable[dict[str, str]]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.routes = routes
        self._host = host
        self._port = port
        self._ready = ready
        self._explain = explain
        self._grace_s = grace_s
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        # lingering_time: after an early answer (408, 413) an unread body is drained for 1 s at most.
        runner = web.AppRunner(
            public_app(self.routes, self._ready, self._explain),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._grace_s,
            lingering_time=1.0,
        )
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._runner = runner

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def install(connector: Connector) -> None:
    """The public server (started with the app, before its consumer: health answers during recovery) and the
    admin port's `/metrics`."""
    from faust.web import Request, Response, View

    settings = connector.settings
    server = PublicServer(
        settings.web_host,
        settings.web_port,
        connector.public_routes,
        lambda: readiness(connector),
        grace_s=settings.webhook_append_timeout_s + 1.0,
        explain=lambda checks: reasons(connector, checks),
    )
    connector.app.add_dependency(server)

    @connector.app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            """Prometheus text exposition of the default registry."""
            return _metrics()


def _metrics() -> web.Response:
    """Prometheus text exposition of the default registry (every part's metrics)."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _run(check: Any, default: Any = False) -> Any:
    try:
        answer = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception:  # a failing check is a false one
        return default
    return answer if default is None else bool(answer)


def _assigned(app: Any) -> bool:
    """The consumer has joined its group and holds partitions (and no rebalance is under way)."""
    try:
        return bool(app.consumer.assignment()) and not app.rebalancing
    except Exception:  # the consumer does not exist yet
        return False
