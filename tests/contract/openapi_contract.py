"""Checks request/response pairs against 8x8's own OpenAPI specs (copied into `openapi/`).

The rule for each exchange: the response must match what the spec declares for its operation and
status, and a request the spec rejects must get a 4xx. The specs' known flaws are patched on load,
each one below with the reason; everything else is taken as published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPECS = Path(__file__).parent / "openapi"
V2_SPEC = SPECS / "chat-api-v2.json"
GATEWAY_SPEC = SPECS / "chat-gateway-v1.yaml"
SPEC_HOST = "https://api.8x8.com"


def load_v2_spec() -> dict[str, Any]:
    """The v2 spec with its flaws patched."""
    spec = json.loads(V2_SPEC.read_text())
    schemas = spec["components"]["schemas"]
    _jwk_is_an_object(spec, "/vcc/{region}/chat/v2/jwk/{jwk-id}/public")
    # Flaw (API.md): create requires `user`, but the property it defines (and 8x8 reads) is `customer`.
    schemas["CreateTransactionRequest"]["allOf"][2]["required"] = ["channelId", "customer"]
    # Flaw: `participants` is described as one participant object; the answer is the list of all
    # participants ("retrieves all the participants"). MessageListResult requires it without defining it.
    participant_list = {"type": "array", "items": {"$ref": "#/components/schemas/ConversationParticipants"}}
    participants = spec["paths"]["/vcc/{region}/chat/v2/tenant/{tenant-id}/conversations/{conversation-id}/participants"]
    participants["get"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["participants"] = participant_list
    schemas["MessageListResult"]["allOf"][0]["properties"]["participants"] = participant_list
    _interaction_times_are_date_times(schemas)
    # Flaw (API.md): the `Idempotency-Key` header parameter is defined but no operation uses it;
    # there is nothing to patch, and the sandbox, like 8x8, ignores the header.
    return spec


def load_gateway_spec() -> dict[str, Any]:
    """The gateway spec with its flaws patched."""
    spec = yaml.safe_load(GATEWAY_SPEC.read_text())
    schemas = spec["components"]["schemas"]
    _jwk_is_an_object(spec, "/chat-gateway/v1/jwk/{jwkId}/public")
    # Flaw: these HAL lists require a top-level `messages` / `data` while defining the items under
    # `_embedded` (as every other list of this spec does); the requirement cannot be met by a HAL page.
    schemas["MessageListResult"]["allOf"][0].pop("required")
    schemas["ConversationParticipants"]["allOf"][0].pop("required")
    schemas["AttachmentsResult"]["allOf"][0].pop("required")
    _interaction_times_are_date_times(schemas)
    return spec


def _jwk_is_an_object(spec: dict[str, Any], path: str) -> None:
    # Flaw (API.md): the JWK endpoints declare a `string`; the example and the real answer are a JWK object.
    schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    schema["type"] = "object"
    schema["required"] = ["kty", "e", "kid", "n"]


def _interaction_times_are_date_times(schemas: dict[str, Any]) -> None:
    # Flaw: InteractionInfo times are declared `format: date` with date-time examples
    # ("2020-08-05T11:55:00.592Z"); the conversation's own startTime is a date-time.
    for name in ("startTime", "endTime"):
        schemas["InteractionInfo"]["properties"][name]["format"] = "date-time"


@dataclass
class Exchange:
    """One request/response pair as the contract sees it."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes | None
    status: int
    response_headers: dict[str, str]
    response_body: bytes


class _Request:
    def __init__(self, exchange: Exchange) -> None:
        parts = urlsplit(exchange.url)
        self.host_url = SPEC_HOST
        self.path = parts.path
        self.method = exchange.method.lower()
        self.body = exchange.request_body or None
        self.content_type = exchange.request_headers.get("content-type", "application/json").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict([(k, v) for k, vs in parse_qs(parts.query, keep_blank_values=True).items() for v in vs]),
            header=Headers(exchange.request_headers),
        )


class _Response:
    def __init__(self, exchange: Exchange) -> None:
        self.status_code = exchange.status
        self.headers = Headers(exchange.response_headers)
        self.content_type = exchange.response_headers.get("content-type", "").lower()
        self.data = exchange.response_body


@dataclass
class Contract:
    """Both specs, ready to check exchanges; `checked` counts what was checked, by operation path."""

    v2: OpenAPI = field(default_factory=lambda: _openapi(load_v2_spec()))
    gateway: OpenAPI = field(default_factory=lambda: _openapi(load_gateway_spec()))
    checked: list[str] = field(default_factory=list)

    def spec_for(self, path: str) -> OpenAPI | None:
        if path.startswith(("/vcc/", "/oauth/")):
            return self.v2
        if path.startswith("/chat-gateway/"):
            return self.gateway
        return None  # the sandbox's own endpoints

    def check(self, exchange: Exchange) -> None:
        """Raise AssertionError when the exchange breaks the contract of its generation."""
        request, response = _Request(exchange), _Response(exchange)
        spec = self.spec_for(request.path)
        if spec is None:
            return
        where = f"{exchange.method} {exchange.url} -> {exchange.status}"
        request_errors = list(spec.iter_request_errors(request))
        if request_errors and not 400 <= exchange.status < 500:
            raise AssertionError(f"{where}: the spec rejects this request ({_why(request_errors[0])}) but it got {exchange.status}")
        response_errors = list(spec.iter_response_errors(request, response))
        if response_errors:
            raise AssertionError(f"{where}: response breaks the spec: {_why(response_errors[0])}\n{exchange.response_body[:500]!r}")
        self.checked.append(f"{exchange.method} {request.path}")

    def check_httpx(self, response: httpx.Response) -> None:
        """Check an httpx exchange (the body must have been read)."""
        request = response.request
        self.check(
            Exchange(
                method=request.method,
                url=str(request.url),
                request_headers={k.lower(): v for k, v in request.headers.items()},
                request_body=request.content,
                status=response.status_code,
                response_headers={k.lower(): v for k, v in response.headers.items()},
                response_body=response.content,
            )
        )


class CheckedTransport(httpx.AsyncBaseTransport):
    """Sends to a real server (the sandbox) and checks each exchange against the specs; `statuses` in order."""

    def __init__(self, contract: Contract) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._contract = contract
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        response.request = request
        self._contract.check_httpx(response)
        self.statuses.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _openapi(spec: dict[str, Any]) -> OpenAPI:
    # openapi-core only knows application/json; the specs also answer problem+json and hal+json.
    json_types = {"application/problem+json": json.loads, "application/hal+json": json.loads}
    return OpenAPI.from_dict(spec, config=Config(extra_media_type_deserializers=json_types))


def _why(error: BaseException) -> str:
    causes = [str(error)]
    while error.__cause__ is not None:
        error = error.__cause__
        causes.append(str(error))
    for attr in ("schema_errors",):
        for sub in getattr(error, attr, []) or []:
            causes.append(f"{list(sub.absolute_path)}: {sub.message}")
    return "; ".join(causes)[:1500]


__all__ = ["CheckedTransport", "Contract", "Exchange"]
