"""What the handlers of both generations share: operation tagging, JSON bodies, paging, answers."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from connector.config import Generation
from connector.sandbox.problems import ApiError

__all__ = ["BODY", "INVALID_JSON", "json_body", "json_response", "operation", "page_of", "paging"]

INVALID_JSON = object()
# The parsed JSON body of a request (or INVALID_JSON), put there once by the server.
BODY = web.RequestKey("body", object)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[web.StreamResponse]])


def operation(generation: Generation, operation_id: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
    """Tag a handler method with its spec operation (for faults, logs, error shapes); check auth first."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(self: Any, request: web.Request) -> web.StreamResponse:
            if auth:
                self.authenticate(request)
            return await handler(self, request)

        checked.generation = generation  # type: ignore[attr-defined]
        checked.operation = operation_id  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


def json_body(request: web.Request, kind: type = dict) -> Any:
    """The request's JSON body (parsed once by the server), which must be a `kind`; else 400."""
    body = request.get(BODY)
    if body is INVALID_JSON:
        raise ApiError(400, "Malformed JSON request body.", code="invalid_json_object")
    if not isinstance(body, kind):
        raise ApiError(400, f"The request body must be a JSON {'object' if kind is dict else kind.__name__}.", code="invalid_json_object")
    return body


def json_response(data: Any, *, status: int = 200, content_type: str = "application/json") -> web.Response:
    """A JSON answer with the content type the spec declares (v2: JSON, gateway: HAL)."""
    return web.Response(status=status, body=json.dumps(data).encode(), content_type=content_type)


def paging(request: web.Request) -> tuple[int, int]:
    """The `page` (from 0) and `size` (default 20) query parameters; 400 when they are not numbers."""
    try:
        page = int(float(request.query.get("page", 0)))
        size = int(float(request.query.get("size", 20)))
    except ValueError:
        raise ApiError(400, "page and size must be numbers.", code="invalid_parameter") from None
    if page < 0 or size < 1:
        raise ApiError(400, "page must be >= 0 and size >= 1.", code="invalid_parameter")
    return page, min(size, 1000)


def page_of(items: list[Any], page: int, size: int) -> tuple[list[Any], int]:
    """The items of one page and the page count."""
    return items[page * size : (page + 1) * size], (len(items) + size - 1) // size
