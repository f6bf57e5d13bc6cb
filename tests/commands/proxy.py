"""A reverse proxy in front of a real service (the sandbox, the registry) that can answer some requests itself.

Tests put it between the worker and a real server to play what the real one will not do on
demand: a registry that fails for a while, an 8x8 that answers 200 with a body nobody foresaw.
Everything it does not override is forwarded as it is, so the rest of the flow stays real.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.support.env import free_port

__all__ = ["Answer", "Proxy", "running_proxy"]


@dataclass(frozen=True)
class Answer:
    """What the proxy answers instead of forwarding."""

    status: int
    body: bytes
    content_type: str = "application/json"


# (method, path with query) -> an Answer to give instead, or None to forward
Rule = Callable[[str, str], "Answer | None"]


class Proxy:
    """Forwards to `upstream`; `rule` picks the requests it answers itself. `seen` counts what it overrode."""

    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = f"http://127.0.0.1:{port}"
        self.rule: Rule = lambda method, path: None
        self.overridden: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        answer = self.rule(request.method, path)
        if answer is not None:
            self.overridden.append((request.method, path))
            return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.upstream + path, data=body, headers=headers) as reply:
                content = await reply.read()
                passed = {k: v for k, v in reply.headers.items() if k.lower() in ("content-type", "retry-after", "location")}
                return web.Response(status=reply.status, body=content, headers=passed)


@contextmanager
def running_proxy(upstream: str) -> Iterator[Proxy]:
    """A Proxy to `upstream` served on its own loop in a thread, for the duration of the block."""
    proxy = Proxy(upstream, free_port())
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def serve() -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(proxy.url.rsplit(":", 1)[1])).start()
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10), "the proxy did not start"
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
