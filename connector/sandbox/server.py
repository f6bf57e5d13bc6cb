"""The sandbox process: one aiohttp app serving both 8x8 API generations, the admin endpoints and the console.

`start_sandbox(config)` runs it in the current event loop (tests, `connector dev`);
`run_in_thread(config)` runs it on its own loop in a background thread (synchronous callers).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from connector.config import Generation
from connector.sandbox.admin import Admin
from connector.sandbox.api_gateway import ChatGateway
from connector.sandbox.api_v2 import ChatApiV2
from connector.sandbox.center import AgentBehaviour, ContactCenter
from connector.sandbox.config import SandboxConfig
from connector.sandbox.delivery import Deliverer, DeliveryPolicy, Signer
from connector.sandbox.events import Notifier, verify_event
from connector.sandbox.faults import Decision, FaultInjector
from connector.sandbox.feed import Feed
from connector.sandbox.journal import Journal
from connector.sandbox.problems import ApiError, problem_response
from connector.sandbox.routing import BODY, INVALID_JSON
from connector.sandbox.signing import generate_key, new_kid, public_jwk
from connector.sandbox.state import Channel, Conversation, File, Store, Webhook, now_ms
from connector.sandbox.web_console import Console

__all__ = ["RunningSandbox", "Sandbox", "run_in_thread", "start_sandbox"]

_FAULT_STATUS = {"429": 429, "429_retry_after": 429, "500": 500, "503": 503}


class Sandbox:
    """The state and the parts of one sandbox; `app` is what serves it."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.key = generate_key()
        self.kid = new_kid()
        self.jwk = public_jwk(self.key, self.kid)
        self.url = f"http://{config.host}:{config.port}"
        self.store = Store(seed=config.seed, max_conversations=config.max_conversations)
        self.feed = Feed()
        self.requests = Journal(config.log_size)
        self.deliveries = Journal(config.log_size, lambda record: self.feed.touch(record["conversationId"]))
        self.tokens: dict[str, float] = {}
        self.faults = FaultInjector(config.faults, config.seed)
        self.deliverer = Deliverer(
            Signer(self.key, self.kid, config.tenant, config.customer_id),
            DeliveryPolicy(
                timeout_s=config.delivery_timeout_s,
                initial_backoff_s=config.retry_initial_s,
                max_backoff_s=config.retry_max_s,
                max_attempts=config.retry_max_attempts,
                concurrency=config.delivery_concurrency,
            ),
            self.deliveries,
            self.faults,
        )
        self.notifier = Notifier(self.store, self.deliverer, self.feed)
        self.center = ContactCenter(
            self.store,
            self.notifier,
            agents=config.agents,
            behaviour=AgentBehaviour(
                accept_delay_s=config.agent_accept_delay_s,
                reply_delay_s=config.agent_reply_delay_s,
                exchanges=config.exchanges,
                transfer_probability=config.transfer_probability,
                extras=config.agent_extras,
            ),
            seed=config.seed,
            attach=lambda conversation, name, content_type, data: self.attachment_of(
                conversation, self.keep_file(conversation, name, content_type, data)
            ),
        )
        self._initial: tuple[dict[str, Webhook], dict[str, Channel]] = ({}, {})

    def app(self) -> web.Application:
        """The aiohttp application: both generations, the admin endpoints, the console, and the middleware."""
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        app.add_routes(ChatApiV2(self).routes())
        app.add_routes(ChatGateway(self).routes())
        app.add_routes(Admin(self).routes())
        app.add_routes(Console(self).routes())
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    def info(self) -> dict[str, Any]:
        """What a developer needs to point a client at the sandbox (never the secret)."""
        config, url = self.config, self.url
        info: dict[str, Any] = {
            "tenant": config.tenant,
            "customerId": config.customer_id,
            "apiKey": config.api_key,
            "kid": self.kid,
            "urls": {
                "base": url,
                "token": f"{url}/oauth/v2/token",
                Generation.CHAT_API_V2.value: f"{url}/vcc/us/chat/v2/tenant/{config.tenant}",
                Generation.CHAT_GATEWAY_V1.value: f"{url}/chat-gateway/v1",
                "admin": f"{url}/_sandbox",
                "console": f"{url}/",
            },
            "agents": [{"id": a.id, "name": a.name, "busy": a.busy, "scripted": a.scripted} for a in self.center.agents],
            "waiting": self.center.waiting(),
            "conversations": len(self.store.conversations),
            "pendingDeliveries": self.deliverer.pending(),
        }
        for generation in Generation:
            info[generation.value] = {
                "webhooks": [w.id for w in self.store.webhooks.values() if w.generation is generation],
                "channels": [c.id for c in self.store.channels.values() if c.generation is generation],
            }
        return info

    def issue_token(self, token: str) -> None:
        """Remember an access token until its TTL passes (expired ones are swept as new ones come)."""
        now = time.monotonic()
        if len(self.tokens) >= 10_000:
            self.tokens = {t: expiry for t, expiry in self.tokens.items() if expiry > now}
        self.tokens[token] = now + self.config.token_ttl_s

    def add_webhook(self, generation: Generation, name: str, uri: str, version: str) -> Webhook:
        """A new webhook; 8x8 sends it `WEB_HOOK_VERIFY` at once."""
        webhook = Webhook(self.store.new_number(), generation, name, uri, version)
        self.store.webhooks[webhook.id] = webhook
        self.notifier.verify(webhook)
        return webhook

    def add_channel(
        self, generation: Generation, name: str, webhook_id: str, queue_id: str, channel_type: str = "ChatAPI"
    ) -> Channel:
        channel = Channel(self.store.new_number(), generation, name, webhook_id, queue_id, channel_type)
        self.store.channels[channel.id] = channel
        return channel

    async def verify_url(self, generation: Generation, uri: str) -> None:
        """Send `WEB_HOOK_VERIFY` to `uri` once; 400 unless it answers 2xx."""
        status, error = await self.deliverer.post_once(uri, verify_event(generation))
        if status is None or not 200 <= status < 300:
            raise ApiError(400, "Webhook verification failed.", [f"uri: {uri} answered {error or status}."], code="invalid_webhook")

    def open_conversation(
        self,
        generation: Generation,
        channel: Channel,
        customer: dict[str, Any],
        customer_id: str | None,
        history: list[tuple[str, str]],
        *,
        queue_id: str | None = None,
    ) -> Conversation:
        """A new conversation on `channel`, queued; the oldest are evicted past the bound."""
        conversation = Conversation(
            id=self.store.new_id("conversation"),
            generation=generation,
            channel_id=channel.id,
            queue_id=queue_id or channel.queue_id,
            customer=customer,
            customer_id=customer_id or self.store.new_id("customer"),
            created_ms=now_ms(),
        )
        for evicted in self.store.add_conversation(conversation):
            self.center.forget(evicted)
        self.center.conversation_created(conversation, history)
        return conversation

    def customer_message(
        self,
        conversation: Conversation,
        author_type: str,
        text: str,
        *,
        attachments: list[Any] | None = None,
        cards: list[Any] | None = None,
    ) -> None:
        """A message from the integration's side; 400 once the customer has left."""
        if conversation.ended:
            raise ApiError(400, f"Conversation {conversation.id} has ended.", code="conversation_ended")
        self.center.customer_message(conversation, author_type, text, attachments=attachments or [], cards=cards or [])

    def keep_file(self, conversation: Conversation, name: str, content_type: str, data: bytes) -> File:
        """Keep a file of the conversation, for a message to carry."""
        file = File(self.store.new_id("attachment"), name, content_type, data)
        conversation.files[file.id] = file
        return file

    def attachment_of(self, conversation: Conversation, file: File) -> dict[str, Any]:
        """A kept file as a message carries it: id, type, pre-signed URL (the sandbox's own), file name."""
        url = f"{self.url}/_sandbox/conversations/{conversation.id}/attachments/{file.id}"
        return {"id": file.id, "type": file.content_type, "preSignedUrl": url, "fileName": file.name}

    def customer_activity(self, conversation: Conversation, name: str, author_type: str, *, read_at: int | None = None) -> None:
        """The integration shows it is typing or has read (what the agent's desktop would show); 400 once ended."""
        if conversation.ended:
            raise ApiError(400, f"Conversation {conversation.id} has ended.", code="conversation_ended")
        entry: dict[str, Any] = {"name": name, "authorType": author_type, "at": now_ms()}
        if read_at is not None:
            entry["readAt"] = read_at
        conversation.activity.append(entry)
        self.notifier.changed(conversation)

    def provision(self, webhook_url: str) -> None:
        """One webhook to `webhook_url` and one channel on it, for each generation."""
        for generation, version in ((Generation.CHAT_API_V2, "v2.0"), (Generation.CHAT_GATEWAY_V1, "Chat Gateway v1.0")):
            webhook = self.add_webhook(generation, f"sandbox {generation.value}", webhook_url, version)
            self.add_channel(generation, f"sandbox {generation.value}", webhook.id, self.config.queue_id)
        self._initial = (copy.deepcopy(self.store.webhooks), copy.deepcopy(self.store.channels))

    def reset(self) -> None:
        """Back to the state at start (the webhooks and channels provisioned then, with their ids)."""
        self.center.reset()
        self.deliverer.clear()
        self.store.clear()
        self.store.webhooks.update(copy.deepcopy(self._initial[0]))
        self.store.channels.update(copy.deepcopy(self._initial[1]))
        self.tokens.clear()
        self.requests.clear()
        self.deliveries.clear()
        self.faults.configure(self.faults.config)
        self.feed.touch()

    async def _on_startup(self, app: web.Application) -> None:
        await self.deliverer.start()
        if self.config.webhook_url:
            self.provision(self.config.webhook_url)

    async def _on_shutdown(self, app: web.Application) -> None:
        self.feed.close()  # the console's live streams end, so the server need not wait for them

    async def _on_cleanup(self, app: web.Application) -> None:
        self.center.reset()
        await self.deliverer.stop()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Parse the body once, log the request, apply latency and faults, render API errors."""
        operation = getattr(request.match_info.handler, "operation", None)
        if operation is None:
            return await handler(request)
        generation = request.match_info.handler.generation
        body = await request.read()
        logged: Any = None
        if body:
            try:
                logged = request[BODY] = json.loads(body)
            except ValueError:
                request[BODY] = INVALID_JSON
                logged = body.decode(errors="replace")
        decision = self.faults.decide(operation)
        fault = decision.fault if decision is not None else None
        record = {
            "time": time.time(),
            "generation": generation.value,
            "operation": operation,
            "method": request.method,
            "path": request.path,
            "query": _query(request),
            "body": logged,
            "status": None,
            "fault": fault,
        }
        try:
            if decision is not None and await self._inject(decision, record):
                return _hang_up(request)
            response = await handler(request)
        except ApiError as error:
            response = problem_response(generation, operation, error)
        if fault == "drop_after":
            record["appliedStatus"] = response.status
            self.requests.append(record)
            return _hang_up(request)
        record["status"] = response.status
        self.requests.append(record)
        return response

    async def _inject(self, decision: Decision, record: dict[str, Any]) -> bool:
        """Delay, then raise the faulted answer; True when the connection is to be dropped instead."""
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        fault = decision.fault
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            message = {429: "Too Many Requests", 500: "Internal server error.", 503: "Service unavailable, try again."}[status]
            error = ApiError(status, message, code="sandbox_fault")
            if fault == "429_retry_after":
                error.headers["Retry-After"] = str(decision.rule.retry_after_s)
            raise error
        if fault not in ("timeout", "drop"):
            return False
        self.requests.append(record)
        if fault == "timeout":
            await asyncio.sleep(decision.rule.timeout_s)
        return True


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection of `request` without an answer (the response returned is never written)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


def _query(request: web.Request) -> dict[str, str | list[str]]:
    """The query parameters: one value as a string, repeated ones as a list."""
    query: dict[str, str | list[str]] = {}
    for key in request.query:
        values = request.query.getall(key)
        query[key] = values[0] if len(values) == 1 else values
    return query


class RunningSandbox:
    """A sandbox serving on a port: its `url`, `info`, and `stop()`."""

    def __init__(self, sandbox: Sandbox, runner: web.AppRunner) -> None:
        self.sandbox = sandbox
        self._runner = runner

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def info(self) -> dict[str, Any]:
        return self.sandbox.info()

    async def stop(self) -> None:
        """Stop serving and abandon pending deliveries."""
        await self._runner.cleanup()


async def start_sandbox(config: SandboxConfig) -> RunningSandbox:
    """Start a sandbox in the running event loop (port 0: a free one, see `.url`)."""
    sandbox = Sandbox(config)
    runner = web.AppRunner(sandbox.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    sandbox.url = f"http://{config.host}:{port}"
    # The app's startup hooks ran before the port was known; provisioning does not need it.
    return RunningSandbox(sandbox, runner)


@contextlib.contextmanager
def run_in_thread(config: SandboxConfig) -> Iterator[RunningSandbox]:
    """Run a sandbox on its own event loop in a background thread for the `with` block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="connector-sandbox", daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(start_sandbox(config), loop).result()
        try:
            yield running
        finally:
            asyncio.run_coroutine_threadsafe(running.stop(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
