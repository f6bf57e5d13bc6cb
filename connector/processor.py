"""The command processor: takes `chat.commands` records into per-conversation lanes and releases their offsets.

Each record is decoded and handed to the lane of its ref: commands of a ref run strictly in order
(`connector.runner`), refs run in parallel, bounded by requests in flight and by the commands
buffered. A record's offset is acked only when it and every earlier record of its partition are
finished (`connector.lanes.InOrderAcks`), so a crash replays unfinished work and never skips it;
on a rebalance the commands not started are handed back unacked (`revoke`).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import faust

from connector import _faust_compat as compat
from connector import results, tracing
from connector.app import Connector
from connector.appender import NotDelivered
from connector.auto_end import AutoEnd
from connector.command import parse_command
from connector.eightbyeight import InvalidCommand, open_platform
from connector.lanes import FirstReads, InOrderAcks, Lanes, Ticket
from connector.ownership import Ownership, Revoked
from connector.published import PublishedResults
from connector.runner import CommandRunner, Job
from connector.schemas import SchemaError

__all__ = ["CommandProcessor"]

logger = logging.getLogger(__name__)


class CommandProcessor:
    """Decodes and routes commands into their lanes, where `CommandRunner` executes and answers them; owns the
    8x8 adapter and the lanes.

    A record's offset is released (its ticket done) only once everything it leads to is stored in
    Kafka: the table entry, the result, the DLQ copy. A record Kafka refuses for good stops the
    worker without releasing it (`_halt`), so a restart runs it again.
    """

    def __init__(self, connector: Connector) -> None:
        settings = connector.settings
        self.connector = connector
        self.settings = settings
        self.platform = open_platform(settings)
        self.lanes: Lanes[str, Job] = Lanes(self._execute, settings.command_max_buffered)
        self.acks = InOrderAcks()
        self.reads = FirstReads()
        self.outputs = results.Outputs(settings, connector.codec, connector.appender)
        self.published = PublishedResults(settings, connector.codec)
        self.auto_end = AutoEnd(connector)
        self.ownership = Ownership(connector.app, settings.command_max_in_flight)
        self.runner = CommandRunner(connector, self.platform, self.ownership, self.outputs, self.published, self.auto_end)
        self._started = False
        self._revoke_timer: asyncio.TimerHandle | None = None

    async def ready(self) -> bool:
        """Ready once the schemas are registered (for the worker's /readyz)."""
        return self._started

    async def start(self) -> None:
        """Register the schemas, retrying while the registry is unreachable."""
        delay = 0.5
        while True:
            try:
                await self.connector.codec.start()
                self._started = True
                return
            except Exception as exc:  # the registry client raises several kinds
                logger.warning("schema registry not ready (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def submit(self, event: faust.EventT) -> None:
        """Take one record from the stream: answer a record that is no usable command at once, queue a command in its lane.

        Whatever goes wrong with one record ends in a FAILED result and a DLQ record, never in a
        stalled partition.
        """
        message = event.message
        if not self.ownership.owns(message):
            compat.settle_unacked(message)  # read before a revocation: the partition's next owner reads it again
            return
        ticket = self.acks.track(message.tp, event.ack, partial(compat.settle_unacked, message))
        if not self.reads.first(message.tp, compat.message_generation(message), message.offset):
            logger.info("%s[%s] offset %s was read before: not run again", message.topic, message.partition, message.offset)
            ticket.done()  # acked in order, so after the first delivery of the offset (in a lane or finished)
            return
        key = message.key.decode("utf-8", "replace") if message.key is not None else None
        # A record without a usable command id is answered under `<topic>:<partition>:<offset>`.
        record_id = f"{message.topic}:{message.partition}:{message.offset}"
        record: dict[str, Any] = {}
        try:
            record = await self.connector.codec.decode_waiting("ConversationCommand", message.value)
            command = parse_command(record, key)
        except Exception as exc:
            code = _POISON_CODES.get(type(exc))
            if code is None:
                code = "INTERNAL_ERROR"
                logger.exception("%s: unexpected error reading the record", record_id)
            await self._poison(event, ticket, results.unreadable(key or "", _command_id_of(record) or record_id, code, exc), exc)
            return
        await self.lanes.put(command.ref, Job(event, command, ticket))

    async def close(self) -> None:
        """Close the 8x8 HTTP client (once the lanes are drained: Faust stops the app after the streams)."""
        await self.platform.aclose()
        await self.published.close()

    def revoke(self) -> None:
        """A rebalance starts: every partition is revoked (Faust's assignor is eager).

        Commands not started are dropped unacked (the partition's next owner runs them); the ones
        running have `command_revoke_grace_s` to finish, then they are cancelled, and none starts
        another 8x8 call meanwhile (`Ownership.call`).
        """
        self.ownership.revoke()
        self.published.forget()
        self.auto_end.forget()
        taken = self.lanes.take_waiting()
        for job in taken:
            job.ticket.abandon()
        if self._revoke_timer is not None:
            self._revoke_timer.cancel()
        grace_s = self.settings.command_revoke_grace_s
        self._revoke_timer = asyncio.get_running_loop().call_later(grace_s, self._cancel_revoked)
        logger.info("partitions revoked: %d commands not started are left to the next owner", len(taken))

    async def _execute(self, job: Job) -> None:
        try:
            await self.runner.run(job)
        except Revoked:
            job.ticket.abandon()
            return
        except asyncio.CancelledError:
            job.ticket.abandon()
            raise
        except NotDelivered as exc:
            self._halt(job.ticket, job.event.message, exc)
            return
        except Exception as exc:  # a bug must still answer the command (once) and must not stop the lane
            logger.exception("command %s of %s failed unexpectedly", job.command.command_id, job.command.ref)
            if not job.answered:  # else its result is out already: nothing more to say
                reason = f"{type(exc).__name__}: {exc}"
                try:
                    answer = self.runner.result(job, "FAILED", error_code="INTERNAL_ERROR", error_message=reason)
                    await self.runner.finish(job, answer)
                except NotDelivered as failed:
                    self._halt(job.ticket, job.event.message, failed)
                    return
                except Exception:  # a bug in answering too: the partition must still move on
                    logger.exception("command %s of %s: no result could be published", job.command.command_id, job.command.ref)
        job.ticket.done()

    def _cancel_revoked(self) -> None:
        """The revocation grace is over: cancel the jobs of revoked partitions still running."""
        cancelled = self.lanes.cancel(lambda job: not self.ownership.owns(job.event.message))
        if cancelled:
            logger.warning(
                "%d commands still running %.0fs after the revocation were cancelled", cancelled, self.settings.command_revoke_grace_s
            )

    def _halt(self, ticket: Ticket, message: Any, exc: NotDelivered) -> None:
        """Kafka refused a record for good: stop the worker without releasing the command's offset."""
        ticket.abandon()
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        logger.critical(
            "%s refused a record for good (%s): stopping the worker without committing %s, so that a restart "
            "runs it again once the cause is fixed",
            exc.topic,
            exc,
            where,
        )
        if not self.ownership.halted:
            self.ownership.halted = True
            asyncio.ensure_future(self.connector.app.crash(exc))

    async def _poison(self, event: faust.EventT, ticket: Ticket, answer: dict[str, Any], exc: Exception) -> None:
        """A record that is no usable command: the DLQ, then its FAILED result (key: its key); then its offset goes.

        In this order a restart after a refusal may write a second DLQ copy, never a second result.
        """
        tracing.current.set(tracing.of_headers(event.message.headers))
        try:
            await self.outputs.dead_letter(event.message, answer["error_code"], type(exc).__name__, str(exc), answer=answer)
            await self.outputs.result(answer, key=event.message.key)
        except NotDelivered as failed:
            self._halt(ticket, event.message, failed)
            return
        ticket.done()


# The error code of a record that is no usable command, by what reading it raised.
_POISON_CODES: dict[type[Exception], str] = {SchemaError: "UNDECODABLE", InvalidCommand: "INVALID_COMMAND"}


def _command_id_of(record: dict[str, Any]) -> str | None:
    """The command id of a decoded record, if it has a usable one."""
    command_id = record.get("command_id")
    return command_id if isinstance(command_id, str) and command_id.strip() else None
