"""The sandbox's own endpoints under `/_sandbox`: inspection, faults at run time, reset."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connector.sandbox.config import FaultConfig
from connector.sandbox.state import Conversation, iso_time

if TYPE_CHECKING:
    from connector.sandbox.server import Sandbox

__all__ = ["Admin"]

PREFIX = "/_sandbox"


class Admin:
    """Handlers of the admin endpoints; never faulted, never in the request log."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/info", self.info),
            web.get(f"{PREFIX}/requests", self.requests),
            web.delete(f"{PREFIX}/requests", self.clear_requests),
            web.get(f"{PREFIX}/deliveries", self.deliveries),
            web.delete(f"{PREFIX}/deliveries", self.clear_deliveries),
            web.get(f"{PREFIX}/conversations", self.conversations),
            web.get(f"{PREFIX}/conversations/{{id}}", self.conversation),
            web.get(f"{PREFIX}/faults", self.get_faults),
            web.put(f"{PREFIX}/faults", self.put_faults),
            web.post(f"{PREFIX}/reset", self.reset),
        ]

    async def info(self, request: web.Request) -> web.Response:
        """Tenant, key id, credentials' key, ids of the configured channels and webhooks, URLs."""
        return web.json_response(self._sandbox.info())

    async def requests(self, request: web.Request) -> web.Response:
        """Every 8x8 API request received, oldest first (`?since=<seq>` for the newer ones)."""
        return web.json_response(self._sandbox.requests.records(_since(request)))

    async def clear_requests(self, request: web.Request) -> web.Response:
        self._sandbox.requests.clear()
        return web.Response(status=204)

    async def deliveries(self, request: web.Request) -> web.Response:
        """Every webhook delivery attempt and its outcome, oldest first (`?since=<seq>`)."""
        return web.json_response(self._sandbox.deliveries.records(_since(request)))

    async def clear_deliveries(self, request: web.Request) -> web.Response:
        self._sandbox.deliveries.clear()
        return web.Response(status=204)

    async def conversations(self, request: web.Request) -> web.Response:
        """A summary of every conversation remembered, of both generations."""
        return web.json_response([_summary(c) for c in self._sandbox.store.conversations.values()])

    async def conversation(self, request: web.Request) -> web.Response:
        """One conversation in full: interactions, participants and messages."""
        conversation = self._sandbox.store.conversations.get(request.match_info["id"])
        if conversation is None:
            raise web.HTTPNotFound()
        return web.json_response(_detail(conversation))

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._sandbox.faults.config.to_json())

    async def put_faults(self, request: web.Request) -> web.Response:
        """Replace the fault configuration; the random streams restart from the seed."""
        try:
            config = FaultConfig.from_json(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"message": f"invalid fault configuration: {exc}"}, status=400)
        self._sandbox.faults.configure(config)
        return web.json_response(config.to_json())

    async def reset(self, request: web.Request) -> web.Response:
        """Back to the state at start: conversations, tokens, logs and pending deliveries forgotten."""
        self._sandbox.reset()
        return web.Response(status=204)


def _since(request: web.Request) -> int:
    try:
        return int(request.query.get("since", 0))
    except ValueError:
        raise web.HTTPBadRequest(text="since must be an integer") from None


def _summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "generation": conversation.generation.value,
        "channelId": conversation.channel_id,
        "queueId": conversation.queue_id,
        "state": conversation.state,
        "agentId": conversation.agent_id,
        "customer": conversation.customer,
        "createdAt": iso_time(conversation.created_ms),
        "interactions": len(conversation.interactions),
        "messages": len(conversation.messages),
    }


def _detail(conversation: Conversation) -> dict[str, Any]:
    detail = _summary(conversation)
    detail["interactions"] = [json.loads(json.dumps(vars(i))) for i in conversation.interactions]
    detail["participants"] = [vars(p) for p in conversation.participants.values()]
    detail["messages"] = [vars(m) for m in conversation.messages]
    detail["activity"] = conversation.activity
    return detail
