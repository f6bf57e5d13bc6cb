"""The 8x8 chat APIs behind one interface: `open_platform(settings)` gives the configured generation."""

from __future__ import annotations

import httpx

from connector.config import Generation, Settings
from connector.eightbyeight.auth import OAuthToken, api_key_headers
from connector.eightbyeight.base import Card, File, InvalidCommand, NewConversation, Platform, PlatformError, ReadBack
from connector.eightbyeight.chat_api_v2 import ChatApiV2
from connector.eightbyeight.chat_gateway_v1 import ChatGatewayV1
from connector.eightbyeight.http import ApiClient
from connector.eightbyeight.retry import Attempted, RetryPolicy, retrying
from connector.eightbyeight.transport import AiohttpSender, HttpxSender

__all__ = [
    "Attempted",
    "Card",
    "File",
    "InvalidCommand",
    "NewConversation",
    "Platform",
    "PlatformError",
    "ReadBack",
    "RetryPolicy",
    "open_platform",
    "retrying",
]


def open_platform(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> Platform:
    """The adapter of the configured generation, with one connection pool (and one token) for the worker.

    It sends through aiohttp, or through `transport` when given (tests pass an httpx MockTransport).
    """
    max_in_flight = settings.command_max_in_flight
    sender = HttpxSender(transport) if transport is not None else AiohttpSender(max_in_flight)
    api = ApiClient(sender, max_in_flight, timeout_s=settings.platform_timeout_s)
    key = settings.platform_api_key.get_secret_value()
    base_url = settings.platform_base_url
    if settings.platform_generation is Generation.CHAT_API_V2:
        token = OAuthToken(
            api,
            f"{base_url.rstrip('/')}/oauth/v2/token",
            key,
            settings.platform_api_secret.get_secret_value(),
            refresh_margin_s=settings.platform_token_refresh_margin_s,
        )
        return ChatApiV2(api, token, base_url, settings.platform_region, settings.platform_tenant_id)
    return ChatGatewayV1(
        api, api_key_headers(key, settings.platform_tenant_id), base_url, find_max_pages=settings.platform_find_max_pages
    )
