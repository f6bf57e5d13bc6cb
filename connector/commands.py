"""The command agent on the app: `chat.commands` into the `CommandProcessor`, the conversation view, the timers.

What a command is and when it runs: `connector.command`; running it: `connector.processor`; what it
says back: `connector.results`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import faust
from prometheus_client import Gauge

from connector import _faust_compat as compat
from connector.app import Connector
from connector.processor import CommandProcessor
from connector.retention import Sweeper, sweep_interval
from connector.conversation import Status

__all__ = ["install"]

logger = logging.getLogger(__name__)

TABLE_ENTRIES = Gauge("connector_table_entries", "Entries in a table held by this worker.", ["table"])
LANES_BUFFERED = Gauge("connector_command_lanes_buffered", "Commands accepted by the lanes and not finished.")
LANES_ACTIVE = Gauge("connector_command_lanes_active", "Conversation refs with commands in their lane.")
CONVERSATIONS = Gauge(
    "connector_conversations",
    "Conversations in the table partitions this worker holds (memory:// tables: standby copies too), by status.",
    ["status"],
)


def install(connector: Connector) -> None:
    """Add the command agent, the conversation view and the timers to the app."""
    processor = CommandProcessor(connector)
    connector.readiness["commands"] = processor.ready
    connector.readiness["platform"] = processor.outputs.credentials.ready
    connector.readiness_reasons["platform"] = processor.outputs.credentials.reason
    app = connector.app
    compat.on_rebalance_start(app, processor.revoke)

    @app.agent(connector.commands, name="connector.commands", concurrency=1)
    async def commands(stream: faust.StreamT) -> None:
        await processor.start()
        async for event in stream.noack().events():
            await processor.submit(event)

    # Routed by the ref's partition of chat.commands, not with `table_route`: the table's changelog
    # keys are JSON-encoded, so hashing them does not find the partition the entry lives in, which is
    # the partition of the command (and event) records, keyed by the raw ref.
    @app.topic_route(topic=connector.commands, match_info="ref")
    async def owned_conversation(view: Any, request: Any, ref: str) -> Any:
        """The conversation of `ref` as JSON (404 when unknown), on the worker that owns it."""
        value = connector.conversations.get(ref)
        if not value:
            return view.json({"error": f"no conversation with ref {ref}"}, status=404)
        return view.json(value)

    @app.page("/conversations/{ref}")
    async def conversation(view: Any, request: Any, ref: str) -> Any:
        """Any worker answers for any ref; 503 when the worker that owns it cannot be reached (down, rebalancing)."""
        try:
            return await owned_conversation(view, request, ref)
        except Exception as exc:  # Faust's routing raises the HTTP client's errors, or ServiceUnavailable
            logger.warning("conversation %s: its owner could not be asked: %s: %s", ref, type(exc).__name__, exc)
            return view.json(
                {"error": f"the worker that owns ref {ref} is unavailable now ({type(exc).__name__}); try again shortly"},
                status=503,
            )

    # Sent by App.on_stop after the consumer's wait_empty: every record handed to a lane is finished
    # and its offset committed, so nothing sends to 8x8 any more.
    @app.on_before_shutdown.connect
    async def close_platform(sender: faust.App, **kwargs: Any) -> None:
        await processor.close()

    @app.timer(interval=15.0)
    async def table_sizes() -> None:
        TABLE_ENTRIES.labels("conversations").set(len(connector.conversations))
        TABLE_ENTRIES.labels("refs").set(len(connector.refs))
        LANES_BUFFERED.set(processor.lanes.buffered)
        LANES_ACTIVE.set(processor.lanes.active)
        by_status = Counter(value["status"] for value in connector.conversations.values() if value)
        for status in Status:
            CONVERSATIONS.labels(status.value).set(by_status[status.value])

    sweeper = Sweeper(connector, busy=processor.lanes.holds)

    @app.timer(interval=sweep_interval(connector.settings.state_retention_s))
    async def expire_conversations() -> None:
        await sweeper.tick()

    auto_end_s = connector.settings.command_auto_end_s
    if auto_end_s > 0:

        @app.timer(interval=max(1.0, min(auto_end_s / 4, 30.0)))
        async def auto_end() -> None:
            await processor.auto_end.publish_due()
