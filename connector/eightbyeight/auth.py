"""Credentials on 8x8 requests: the OAuth client-credentials token of Chat API v2, the API key of the Gateway.

One `OAuthToken` per worker: it fetches a token on first use, refreshes it a margin before it
expires, lets one refresh run at a time (every other caller waits for that one), and after a 401
replaces the token that was refused, once, however many requests saw the 401 together.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

from connector.eightbyeight.base import PlatformError
from connector.eightbyeight.http import ApiClient

__all__ = ["OAuthToken", "api_key_headers"]

TOKEN_OPERATION = "token"


class OAuthToken:
    """The bearer token of one API key pair (`POST /oauth/v2/token`, grant_type=client_credentials)."""

    def __init__(
        self,
        api: ApiClient,
        url: str,
        key: str,
        secret: str,
        *,
        refresh_margin_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._url = url
        self._basic = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self._margin = refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A token valid for at least the margin (fetched or refreshed if needed)."""
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:
            if not self._fresh():
                await self._fetch()
            return self._token  # type: ignore[return-value]

    def refused(self, token: str) -> None:
        """8x8 answered 401 to `token`: forget it, unless a newer one already replaced it."""
        if self._token == token:
            self._token = None
            self._refresh_at = 0.0

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._refresh_at

    async def _fetch(self) -> None:
        # The token request bypasses the in-flight bound: requests waiting for a token hold no slot.
        try:
            response = await self._api.request(
                TOKEN_OPERATION,
                "POST",
                self._url,
                headers={"Authorization": self._basic},
                form={"grant_type": "client_credentials"},
                bounded=False,
            )
        except PlatformError as exc:
            if exc.retryable:
                exc.outcome_unknown = False  # no conversation is created by a token request
                raise
            raise PlatformError(
                TOKEN_OPERATION, f"8x8 refused the API key: {exc.message}", http_status=exc.http_status, code="AUTH_FAILED"
            ) from None
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or 3600)  # a string of seconds, per the spec
        except (ValueError, KeyError, TypeError):
            raise PlatformError(
                TOKEN_OPERATION, "the token answer has no access_token", http_status=response.status_code, retryable=True
            ) from None
        self._token = str(token)
        # Refresh a margin before expiry, but never use less than half a (short) lifetime.
        self._refresh_at = self._clock() + max(lifetime - self._margin, lifetime / 2)


def api_key_headers(key: str, tenant: str) -> dict[str, str]:
    """The Chat Gateway's headers: `x-api-key`, and `X-8x8-Tenant` when a tenant is configured."""
    headers = {"x-api-key": key}
    if tenant:
        headers["X-8x8-Tenant"] = tenant
    return headers
