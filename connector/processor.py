"""The command processor: runs `chat.commands` against 8x8 in per-conversation lanes, one result per command.

Each record is decoded and handed to the lane of its ref: commands of a ref run strictly in order,
refs run in parallel, bounded by requests in flight and by the commands buffered. A record's offset
is acked only when it and every earlier record of its partition are finished
(`connector.lanes.InOrderAcks`), so a crash replays unfinished work and never skips it. Replayed
commands are answered from the table (their ids are remembered per ref) without calling 8x8 again;
a create or a send whose outcome is unknown is first looked up on 8x8.

Table writes from a lane go to the changelog partition of the command's own record, and every
record goes out through `connector.appender.Appender` (call order kept, Faust's per-record
machinery skipped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import faust
from prometheus_client import Counter

from connector import _faust_compat as compat
from connector import results, status, transcripts
from connector.app import Connector
from connector.appender import NotDelivered
from connector.command import AUTO_END_PREFIX, Command, auto_end_due, new_conversation, parse_command, refusal
from connector.eightbyeight import InvalidCommand, PlatformError, ReadBack, RetryPolicy, open_platform, retrying
from connector.lanes import FirstReads, InOrderAcks, Lanes, Ticket
from connector.published import PublishedResults
from connector.results import now_ms
from connector.schemas import SchemaError
from connector.status import CommandKind, Conversation, Status

__all__ = ["CommandProcessor"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSCRIPTS_MISSING = Counter(
    "connector_transcripts_missing_total",
    "Transcripts after an end that could not be read or encoded (published with `error` set), by error code.",
    ["code"],
)


class CommandProcessor:
    """Decodes, routes, executes and answers commands; owns the 8x8 adapter and the lanes.

    A record's offset is released (its ticket done) only once everything it leads to is stored in
    Kafka: the table entry, the result, the DLQ copy. A record Kafka refuses for good stops the
    worker without releasing it (`_halt`), so a restart runs it again.
    """

    def __init__(self, connector: Connector) -> None:
        settings = connector.settings
        self.connector = connector
        self.settings = settings
        self.platform = open_platform(settings)
        self.policy = RetryPolicy.from_settings(settings)
        self.lanes: Lanes[str, _Job] = Lanes(self._execute, settings.command_max_buffered)
        self.acks = InOrderAcks()
        self.reads = FirstReads()
        self.outputs = results.Outputs(settings, connector.codec, connector.appender)
        self.published = PublishedResults(settings, connector.codec)
        self._auto_ending: set[str] = set()
        self._started = False
        # The consumer generation revoked last: records fetched in it or before are no longer this worker's.
        self._fence = -1
        self._slots = asyncio.Semaphore(settings.command_max_in_flight)
        self._halted = False
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
        if not self._owns(message):
            compat.settle_unacked(message)  # read before a revocation: the partition's next owner reads it again
            return
        ticket = self.acks.track(message.tp, event.ack, partial(compat.settle_unacked, message))
        if not self.reads.first(message.tp, message.generation_id, message.offset):
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
        await self.lanes.put(command.ref, _Job(event, command, ticket))

    async def close(self) -> None:
        """Close the 8x8 HTTP client (once the lanes are drained: Faust stops the app after the streams)."""
        await self.platform.aclose()
        await self.published.close()

    def revoke(self) -> None:
        """A rebalance starts: every partition is revoked (Faust's assignor is eager).

        Commands not started are dropped unacked (the partition's next owner runs them); the ones
        running have `command_revoke_grace_s` to finish, then they are cancelled, and none starts
        another 8x8 call meanwhile (`_on_8x8`).
        """
        self._fence = max(self._fence, compat.consumer_generation(self.connector.app))
        self.published.forget()
        taken = self.lanes.take_waiting()
        for job in taken:
            job.ticket.abandon()
        if self._revoke_timer is not None:
            self._revoke_timer.cancel()
        grace_s = self.settings.command_revoke_grace_s
        self._revoke_timer = asyncio.get_running_loop().call_later(grace_s, self._cancel_revoked)
        logger.info("partitions revoked: %d commands not started are left to the next owner", len(taken))

    async def auto_end(self) -> None:
        """Publish an EndConversation for each owned conversation the auto-end policy says is due.

        The command goes through chat.commands like any other, so its table writes land in the
        right changelog partition and its lane keeps the ref's order; its id is deterministic, so a
        second publication is answered as a duplicate.
        """
        app = self.connector.app
        owned = compat.active_partitions(app)
        topic = self.connector.commands.get_topic_name()
        now = now_ms()
        await self.connector.codec.start()
        for ref, value in list(self.connector.conversations.items()):
            if ref in self._auto_ending or not value:
                continue
            conversation = Conversation.from_dict(value)
            if not auto_end_due(conversation, now, self.settings.command_auto_end_s):
                continue
            if compat.key_partition(app, topic, ref.encode()) not in owned:
                continue
            self._auto_ending.add(ref)
            record = {
                "command_id": f"{AUTO_END_PREFIX}{ref}:{conversation.agent_left_at}",
                "conversation_ref": ref,
                "created_at": now,
                "command": ("io.kafka8x8.chat.EndConversation", {"reason": "auto-end: the agent left"}),
            }
            await self.connector.commands.send(key=ref.encode(), value=self.connector.codec.encode("ConversationCommand", record))

    # --- one command ------------------------------------------------------------------------------

    async def _execute(self, job: _Job) -> None:
        try:
            await self._run(job)
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
                    await self._finish(job, self._result(job, "FAILED", error_code="INTERNAL_ERROR", error_message=reason))
                except NotDelivered as failed:
                    self._halt(job.ticket, job.event.message, failed)
                    return
                except Exception:  # a bug in answering too: the partition must still move on
                    logger.exception("command %s of %s: no result could be published", job.command.command_id, job.command.ref)
        job.ticket.done()

    async def _run(self, job: _Job) -> None:
        command = job.command
        existing = self._read(command.ref)
        if existing is not None and command.command_id in existing.recent_commands:
            await self._answer_again(job, existing.recent_commands[command.command_id])
            return
        if command.command_id.startswith(AUTO_END_PREFIX):
            self._auto_ending.discard(command.ref)
            if existing is None or not auto_end_due(existing, now_ms(), self.settings.command_auto_end_s):
                await self._refuse(job, existing, "AUTO_END_CANCELLED", "the agent came back or the customer wrote: not ended")
                return
        refused = refusal(command, existing)
        if refused is not None:
            await self._refuse(job, existing, *refused)
            return
        if command.kind is CommandKind.START_CONVERSATION:
            await self._start(job, existing)
            return
        assert existing is not None and existing.conversation_id is not None
        if command.kind is CommandKind.SEND_MESSAGE:
            await self._send(job, existing)
        elif command.kind is CommandKind.END_CONVERSATION:
            if await self._call(job, existing.conversation_id, self.platform.end) and self.settings.command_transcript_on_end:
                await self._ended_transcript(job, existing.conversation_id)
        else:
            await self._fetch_transcript(job, existing.conversation_id)

    async def _answer_again(self, job: _Job, stored: dict[str, Any]) -> None:
        """Publish a remembered result again, flagged `duplicate` when the first one is in Kafka.

        It is, when it came from an earlier record than this one (that record's offset was released
        only after its result was stored). When this very record is replayed (a crash or a rebalance
        came between its table write and its offset), the results topic says.
        """
        message = job.event.message
        source = stored.get("offset")
        published = (
            source is None
            or source < message.offset
            or await self.published.has(message.partition, job.command.command_id, stored["processed_at"])
        )
        await self.outputs.result(results.recalled(job.command.ref, job.command.command_id, stored), duplicate=published)

    async def _start(self, job: _Job, existing: Conversation | None) -> None:
        command = job.command
        try:
            request = new_conversation(command, self.settings.platform_channel_id)
            self.platform.check(request)
        except InvalidCommand as exc:
            await self._refuse(job, existing, "INVALID_COMMAND", str(exc))
            return
        now = now_ms()
        # A create was tried before for this ref (crash, or unknown outcome): look it up before creating.
        unsure = existing is not None and existing.conversation_id is None and existing.created_at > 0
        creating = Conversation(
            ref=command.ref,
            status=Status.CREATING,
            generation=self.platform.generation,
            channel_id=request.channel_id,
            created_at=existing.created_at if unsure and existing else now,
            updated_at=now,
            recent_commands=existing.recent_commands if existing else {},
        )
        # Durable before the call: after a crash the table must say a create may have happened.
        await self._write(job, lambda current: creating)

        async def create_once() -> str:
            nonlocal unsure
            if unsure:
                found = await self._on_8x8(job, lambda: self.platform.find_by_ref(command.ref))
                if found is not None:
                    return found
                unsure = False
            try:
                return await self._on_8x8(job, lambda: self.platform.create(request))
            except PlatformError as exc:
                unsure = exc.outcome_unknown
                raise

        try:
            attempted = await retrying(self.policy, create_once)
        except (PlatformError, InvalidCommand) as exc:
            failed = self._failure(job, exc)
            reason = failed["error_message"]
            if isinstance(exc, PlatformError) and unsure:
                reason = f"{reason} (the create may have reached 8x8; the next start for this ref looks it up first)"
            await self._conclude(job, failed, lambda current: _after_failure(current or creating, reason, now_ms()))
            return
        conversation_id = attempted.value
        succeeded = self._result(job, "SUCCEEDED", conversation_id=conversation_id, attempts=attempted.attempts)
        # The mapping is stored before the start is remembered: a replay answered from the table
        # must never leave the conversation's events without their ref.
        await self.outputs.mapping(conversation_id, command.ref, self.platform.generation)
        await self._conclude(
            job,
            succeeded,
            lambda current: status.after_command(
                current or creating,
                CommandKind.START_CONVERSATION,
                now_ms(),
                ref=command.ref,
                conversation_id=conversation_id,
                generation=self.platform.generation,
                channel_id=request.channel_id,
            ),
        )

    async def _send(self, job: _Job, existing: Conversation) -> None:
        """SendMessage: 8x8 honours no idempotency key, so the intent is stored before the call, and a replay
        that finds it without an outcome looks for the message on 8x8 before sending it again."""
        command = job.command
        text, author_type = command.body["text"], command.body.get("author_type", "USER").lower()
        conversation_id = existing.conversation_id
        assert conversation_id is not None
        if existing.sending == command.command_id and existing.sending_at is not None:
            since = existing.sending_at
            try:
                found = await retrying(self.policy, lambda: self._on_8x8(job, lambda: self._was_sent(conversation_id, text, author_type, since)))
            except PlatformError as exc:
                exc.message = f"could not check on 8x8 whether the message was sent before a restart: {exc.message}"
                await self._conclude(job, self._failure(job, exc, conversation_id=conversation_id), _unchanged)
                return
            if found.value:
                logger.info("%s: message of command %s found on 8x8 after a restart: not sent again", command.ref, command.command_id)
                await self._call(job, conversation_id, None)
                return
        else:
            now = now_ms()
            await self._write(job, lambda current: dataclasses.replace(current, sending=command.command_id, sending_at=now))
        await self._call(job, conversation_id, lambda cid: self.platform.send(cid, text, author_type))

    async def _was_sent(self, conversation_id: str, text: str, author_type: str, since_ms: int) -> bool:
        """Whether 8x8 holds a message of `author_type` with `text` created since the intent (less clock skew)."""
        earliest = since_ms - _SEND_CLOCK_SKEW_MS
        return any(
            message["text"] == text
            and (message["author_type"] or "").lower() == author_type
            and (message["created_at"] is None or message["created_at"] >= earliest)
            for message in await self.platform.messages(conversation_id)
        )

    async def _call(self, job: _Job, conversation_id: str, call: Callable[[str], Any] | None) -> bool:
        """Send/end with retries (None: it was made already), then record the outcome; True when 8x8 accepted it."""
        command = job.command
        attempts = 0
        if call is not None:
            try:
                attempted = await retrying(self.policy, lambda: self._on_8x8(job, lambda: call(conversation_id)))
            except PlatformError as exc:
                await self._conclude(job, self._failure(job, exc, conversation_id=conversation_id), _unchanged)
                return False
            attempts = attempted.attempts
        succeeded = self._result(job, "SUCCEEDED", conversation_id=conversation_id, attempts=attempts)
        await self._conclude(job, succeeded, lambda current: status.after_command(current, command.kind, now_ms()))
        return True

    async def _fetch_transcript(self, job: _Job, conversation_id: str) -> None:
        error = await self._transcript(job, conversation_id, "REQUESTED")
        if error is None:
            answer = self._result(job, "SUCCEEDED", conversation_id=conversation_id)
        else:
            answer = self._failure(job, error, conversation_id=conversation_id)
        await self._conclude(job, answer, _unchanged)

    async def _ended_transcript(self, job: _Job, conversation_id: str) -> None:
        """The transcript after an end, whose result is out already: a failure is reported on its own.

        It is logged, counted, and published as a transcript with `error` set and nothing else, so
        that downstream knows this one is missing; never as a second result of the command.
        """
        error = await self._transcript(job, conversation_id, "ENDED")
        if error is None:
            return
        reason = f"{error.code}: {error.message}" if isinstance(error, PlatformError) else f"{type(error).__name__}: {error}"
        TRANSCRIPTS_MISSING.labels(error.code if isinstance(error, PlatformError) else "INTERNAL_ERROR").inc()
        logger.warning("no transcript for ref %s (8x8 conversation %s): %s", job.command.ref, conversation_id, reason)
        empty = ReadBack(status=None, conversation={}, messages=[], participants=[], interactions=[])
        record = transcripts.record(
            job.command.ref, conversation_id, self.platform.generation, "ENDED", job.command.command_id, empty, now_ms(), error=reason
        )
        await self.outputs.emit(self.settings.topic_transcripts, job.command.ref.encode(), "ConversationTranscript", record)

    async def _transcript(self, job: _Job, conversation_id: str, reason: str) -> Exception | None:
        """Read the conversation back and publish its transcript; the error if that failed (8x8, its answer, Avro)."""
        try:
            attempted = await retrying(self.policy, lambda: self._on_8x8(job, lambda: self.platform.read_back(conversation_id)))
            record = transcripts.record(
                job.command.ref, conversation_id, self.platform.generation, reason, job.command.command_id, attempted.value, now_ms()
            )
            value = self.connector.codec.encode("ConversationTranscript", record)
        except (Revoked, asyncio.CancelledError):
            raise
        except PlatformError as exc:
            return exc
        except Exception as exc:  # an answer the adapter did not foresee, or one Avro cannot take
            logger.exception("transcript of %s (8x8 conversation %s) could not be built", job.command.ref, conversation_id)
            return exc
        await self.connector.appender.deliver(self.settings.topic_transcripts, job.command.ref.encode(), value)
        return None

    async def _refuse(self, job: _Job, existing: Conversation | None, code: str, reason: str) -> None:
        """A FAILED result for a command that makes no sense now; nothing is sent to 8x8.

        A ref that has no entry gets none: a command for a ref never started creates no state
        (the same command again gets the same answer, from the same rule).
        """
        answer = self._result(job, "FAILED", error_code=code, error_message=reason)
        await self._conclude(job, answer, _unchanged if existing is not None else None)

    # --- ownership --------------------------------------------------------------------------------

    async def _on_8x8(self, job: _Job, call: Callable[[], Awaitable[T]]) -> T:
        """Make one 8x8 call for `job` once a slot is free, if its partition is still this worker's then.

        The slots bound the calls in flight (`command_max_in_flight`); the ownership check comes
        after the wait for one, so that no call starts for a partition revoked meanwhile.
        """
        async with self._slots:
            if not self._owns(job.event.message) or self._halted:
                raise Revoked(job.command.command_id)
            return await call()

    def _owns(self, message: Any) -> bool:
        """Whether `message` was fetched after the last revocation: its partition is still this worker's."""
        return compat.message_generation(message) > self._fence

    def _cancel_revoked(self) -> None:
        """The revocation grace is over: cancel the jobs of revoked partitions still running."""
        cancelled = self.lanes.cancel(lambda job: not self._owns(job.event.message))
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
        if not self._halted:
            self._halted = True
            asyncio.ensure_future(self.connector.app.crash(exc))

    # --- table and answers ------------------------------------------------------------------------

    def _read(self, ref: str) -> Conversation | None:
        value = self.connector.conversations.get(ref)
        return Conversation.from_dict(value) if value else None

    async def _write(self, job: _Job, change: Callable[[Conversation | None], Conversation]) -> None:
        """Apply `change` to the current entry (read and written with no await between) and wait until the
        changelog record is stored, so that nothing is announced before the state that explains it."""
        value = change(self._read(job.command.ref)).to_dict()
        await self.connector.appender.put_durably(self.connector.conversations, job.command.ref, value, job.event.message.partition)

    async def _conclude(self, job: _Job, answer: dict[str, Any], change: Callable[[Conversation], Conversation] | None) -> None:
        """Remember the result in the entry as `change` leaves it, then publish it (and the DLQ record of a failure).

        In this order nothing is announced before the state that explains it, and a replay after a
        crash answers from the table; whether it then says `duplicate: true` depends on whether this
        result reached Kafka (`_answer_again`). `change` None: the ref has no entry and gets none.
        """
        if change is not None:
            source = job.event.message.offset
            await self._write(job, lambda current: change(current).remember(answer["command_id"], results.remembered(answer, source)))
        await self._finish(job, answer)

    async def _finish(self, job: _Job, answer: dict[str, Any]) -> None:
        job.answered = True
        await self.outputs.result(answer)
        if answer["status"] == "FAILED":
            await self.outputs.dead_letter(job.event.message, answer["error_code"], "CommandFailed", answer["error_message"] or "")

    async def _poison(self, event: faust.EventT, ticket: Ticket, answer: dict[str, Any], exc: Exception) -> None:
        """A record that is no usable command: FAILED result (key: its key) and the DLQ; then its offset goes."""
        try:
            await self.outputs.result(answer, key=event.message.key)
            await self.outputs.dead_letter(event.message, answer["error_code"], type(exc).__name__, str(exc))
        except NotDelivered as failed:
            self._halt(ticket, event.message, failed)
            return
        ticket.done()

    def _result(self, job: _Job, result_status: str, **fields: Any) -> dict[str, Any]:
        return results.result(job.command, result_status, self.platform.generation, **fields)

    def _failure(self, job: _Job, exc: Exception, **fields: Any) -> dict[str, Any]:
        return results.failure(job.command, exc, self.platform.generation, **fields)


@dataclass
class _Job:
    """One record in a lane: the Faust event, its command and its ack ticket."""

    event: faust.EventT
    command: Command
    ticket: Ticket
    answered: bool = False  # its result has been published


class Revoked(Exception):
    """The job's partition was revoked: it stops before its next 8x8 call; the new owner runs it."""


# The error code of a record that is no usable command, by what reading it raised.
_POISON_CODES: dict[type[Exception], str] = {SchemaError: "UNDECODABLE", InvalidCommand: "INVALID_COMMAND"}

# How far 8x8's clock may be behind ours when a replayed send looks for its message (see `_was_sent`).
_SEND_CLOCK_SKEW_MS = 2_000


def _after_failure(conversation: Conversation, reason: str, now: int) -> Conversation:
    """A start that failed: FAILED with the reason, unless 8x8 already gave it an id."""
    if conversation.conversation_id is not None:
        return conversation
    return dataclasses.replace(conversation, status=Status.FAILED, error=reason, updated_at=now)


def _unchanged(conversation: Conversation) -> Conversation:
    """The entry as it is (the command's result is remembered in it all the same)."""
    return conversation


def _command_id_of(record: dict[str, Any]) -> str | None:
    """The command id of a decoded record, if it has a usable one."""
    command_id = record.get("command_id")
    return command_id if isinstance(command_id, str) and command_id.strip() else None
