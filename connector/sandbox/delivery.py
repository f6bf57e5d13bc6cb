"""Webhook delivery as 8x8 does it: signed POSTs, retried with backoff, in order per conversation.

Each conversation has its own queue of events; the next event waits until the previous one got a
2xx (or its attempts ran out). Different conversations are delivered in parallel, over one shared
keep-alive session. Delivery faults (attempts not made, events sent twice) come from the injector.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.sandbox.faults import FaultInjector
from connector.sandbox.journal import Journal
from connector.sandbox.signing import sign

__all__ = ["Deliverer", "DeliveryPolicy", "Outgoing", "Signer"]

# Answers remembered per event for the console (the journal has every attempt).
_ANSWERS_KEPT = 10


@dataclass(frozen=True)
class Signer:
    """Who signs: the key and the tenant and customer the signatures name."""

    key: rsa.RSAPrivateKey
    kid: str
    tenant_id: str
    customer_id: str


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long one attempt may take and how retries back off (doubling from initial up to max)."""

    timeout_s: float = 10.0
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_attempts: int = 1000
    concurrency: int = 256

    def backoff(self, retry: int) -> float:
        """The pause after the attempt numbered `retry` (0 for the first) failed."""
        return min(self.initial_backoff_s * 2 ** min(retry, 30), self.max_backoff_s)


@dataclass(slots=True)
class Outgoing:
    """One event on its way to a webhook, and how its delivery went so far."""

    event_id: str
    event_type: str
    conversation_id: str | None
    url: str
    body: bytes
    attempts: int = 0
    answers: list[int | str] = field(default_factory=list)  # the last few: HTTP status or error
    outcome: str = "pending"  # pending, failed (being retried), delivered, abandoned


class Deliverer:
    """Delivers events to webhook URLs and records every attempt in `log`."""

    def __init__(self, signer: Signer, policy: DeliveryPolicy, log: Journal, faults: FaultInjector) -> None:
        self._signer = signer
        self._policy = policy
        self._log = log
        self._faults = faults
        self._lanes: dict[str, collections.deque[Outgoing]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(policy.concurrency)

    async def start(self) -> None:
        """Open the shared session."""
        connector = aiohttp.TCPConnector(limit=self._policy.concurrency, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def stop(self) -> None:
        """Abandon what is still pending and close the session."""
        self._lanes.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def submit(self, lane: str, url: str, event: dict[str, Any]) -> Outgoing:
        """Queue `event` for `url` behind the earlier events of `lane`; answer it as it goes out."""
        queued = Outgoing(
            event_id=str(uuid.uuid4()),
            event_type=str(event.get("eventType")),
            conversation_id=event.get("conversationId"),
            url=url,
            body=json.dumps(event, separators=(",", ":")).encode(),
        )
        pending = self._lanes.get(lane)
        if pending is None:
            self._lanes[lane] = collections.deque([queued])
            task = asyncio.get_running_loop().create_task(self._drain(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            pending.append(queued)
        return queued

    def forget(self, lane: str) -> None:
        """Drop the events of `lane` not yet delivered (its conversation was evicted or reset)."""
        pending = self._lanes.get(lane)
        if pending is not None:
            pending.clear()

    def clear(self) -> None:
        """Drop every event not yet delivered."""
        for pending in self._lanes.values():
            pending.clear()

    def pending(self) -> int:
        """How many events wait for delivery, the ones being attempted included."""
        return sum(len(pending) for pending in self._lanes.values())

    async def post_once(self, url: str, event: dict[str, Any]) -> tuple[int | None, str | None]:
        """One signed attempt without retries (webhook verification); answer (status, error)."""
        queued = Outgoing(str(uuid.uuid4()), str(event["eventType"]), None, url, json.dumps(event).encode())
        return await self._attempt(queued, 0)

    async def _drain(self, lane: str) -> None:
        pending = self._lanes[lane]
        try:
            while pending:
                await self._deliver(pending[0], pending)
                if pending:
                    pending.popleft()
        finally:
            if self._lanes.get(lane) is pending:
                del self._lanes[lane]

    async def _deliver(self, event: Outgoing, lane: collections.deque[Outgoing]) -> None:
        for retry in range(self._policy.max_attempts):
            if not lane:
                return  # forgotten while failing
            delay_s, fault = self._faults.decide_delivery()
            if delay_s:
                await asyncio.sleep(delay_s)
            if fault == "fail":
                self._record(event, retry, None, "sandbox fault: attempt not made", 0.0, outcome="failed")
            else:
                status, _ = await self._attempt(event, retry)
                if status is not None and 200 <= status < 300:
                    if fault == "duplicate":
                        await self._attempt(event, retry + 1)
                    return
            await asyncio.sleep(self._policy.backoff(retry))
        self._record(event, self._policy.max_attempts, None, "gave up", 0.0, outcome="abandoned")

    async def _attempt(self, event: Outgoing, retry: int) -> tuple[int | None, str | None]:
        assert self._session is not None, "start() first"
        transmission_time = time.time_ns() // 1_000_000
        signer = self._signer
        headers = {
            "Content-Type": "application/json",
            "x-8x8-signature": sign(
                event.body,
                key=signer.key,
                kid=signer.kid,
                tenant_id=signer.tenant_id,
                customer_id=signer.customer_id,
                event_id=event.event_id,
                retry=retry,
                transmission_time=transmission_time,
            ),
            "x-8x8-tenant-id": signer.tenant_id,
            "x-8x8-customer-id": signer.customer_id,
            "x-8x8-event-id": event.event_id,
            "x-8x8-transmission-time": str(transmission_time),
            "x-8x8-retry": str(retry),
        }
        status: int | None = None
        error: str | None = None
        started = time.perf_counter()
        async with self._slots:
            try:
                timeout = aiohttp.ClientTimeout(total=self._policy.timeout_s)
                async with self._session.post(event.url, data=event.body, headers=headers, timeout=timeout) as answer:
                    status = answer.status
                    await answer.read()
            except asyncio.TimeoutError:
                error = "timeout"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        self._record(event, retry, status, error, time.perf_counter() - started, outcome="delivered" if ok else "failed")
        return status, error

    def _record(
        self, event: Outgoing, retry: int, status: int | None, error: str | None, seconds: float, *, outcome: str
    ) -> None:
        if outcome != "abandoned":
            event.attempts += 1
            event.answers.append(status if status is not None else error or "no answer")
            del event.answers[:-_ANSWERS_KEPT]
        if event.outcome != "delivered":  # a duplicate that fails does not undo the delivery
            event.outcome = outcome
        self._log.append(
            {
                "time": time.time(),
                "eventId": event.event_id,
                "conversationId": event.conversation_id,
                "eventType": event.event_type,
                "url": event.url,
                "retry": retry,
                "status": status,
                "error": error,
                "outcome": outcome,
                "ms": round(seconds * 1000, 2),
            }
        )
