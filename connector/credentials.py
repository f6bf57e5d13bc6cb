"""Whether 8x8 takes the connector's credentials, as the results of its commands say.

Wrong credentials fail every command with AUTH_FAILED: each result says so, but an operator needs
one line and a signal. While the latest 8x8 answer refused the credentials, `/readyz` says
`"platform": false` with the reason, and an ERROR line is logged at most once a minute (with how
many refusals it stands for); the first command 8x8 carries out again clears it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from connector.logs import Throttle

__all__ = ["AUTH_FAILED", "Credentials"]

logger = logging.getLogger(__name__)

AUTH_FAILED = "AUTH_FAILED"
_LOG_INTERVAL_S = 60.0


class Credentials:
    """Follows the results of commands; `ready` is False while 8x8 refuses the connector's credentials."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._refusal: str | None = None
        self._throttle = Throttle(_LOG_INTERVAL_S, clock)

    def saw(self, answer: dict[str, Any]) -> None:
        """Take note of one command's result."""
        if answer.get("error_code") == AUTH_FAILED:
            self._refusal = f"8x8 refuses the credentials: {answer.get('error_message') or 'no reason given'}"
            held = self._throttle.due()
            if held is not None:
                more = f" ({held} more refusals since the last line)" if held else ""
                logger.error(
                    "%s; every command fails until CONNECTOR_PLATFORM_API_KEY and CONNECTOR_PLATFORM_API_SECRET "
                    "(and CONNECTOR_PLATFORM_TENANT_ID) are right%s",
                    self._refusal,
                    more,
                    extra={"error_code": AUTH_FAILED},
                )
        elif answer.get("status") == "SUCCEEDED":
            self._refusal = None

    async def ready(self) -> bool:
        return self._refusal is None

    async def reason(self) -> str | None:
        return self._refusal
