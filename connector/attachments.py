"""Fetching a SendMessage's attachment from the URL the command gives, bounded in size and time.

The worker fetches from its own network: only http(s) URLs, and never more than the configured
number of bytes (the answer is read in chunks and dropped past the bound).
"""

from __future__ import annotations

import httpx

from connector.eightbyeight import File

__all__ = ["AttachmentUnavailable", "fetch"]


class AttachmentUnavailable(Exception):
    """The file could not be fetched (network, non-2xx, too large); the message says which and why."""


async def fetch(name: str, content_type: str, url: str, *, max_bytes: int, timeout_s: float) -> File:
    """The file at `url`, named and typed as the command says."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
            async with client.stream("GET", url) as answer:
                if not answer.is_success:
                    raise AttachmentUnavailable(f"{name}: {_shown(url)} answered HTTP {answer.status_code}")
                async for chunk in answer.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise AttachmentUnavailable(
                            f"{name}: {_shown(url)} has more than CONNECTOR_COMMAND_ATTACHMENT_MAX_BYTES={max_bytes} bytes"
                        )
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise AttachmentUnavailable(f"{name}: {_shown(url)}: {type(exc).__name__}") from None
    return File(name, content_type, b"".join(chunks))


def _shown(url: str) -> str:
    """The URL without its query (pre-signed URLs carry their credentials there)."""
    return url.split("?", 1)[0]
