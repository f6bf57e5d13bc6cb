"""Running one command: its rule, its 8x8 calls, its table writes and its result, in that order.

Nothing is announced before the state that explains it: a command's table entry is written (and
acknowledged) before its result is published, so that a replay after a crash answers from the
table. Where 8x8 honours no idempotency key (create, send) the intent is written before the call,
and a replay that finds it without an outcome asks 8x8 what happened before calling again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import faust
from prometheus_client import Counter

from connector import attachments, results, tracing, transcripts
from connector.attachments import AttachmentUnavailable
from connector.app import Connector
from connector.appender import NotDelivered
from connector.auto_end import AUTO_END_PREFIX, AutoEnd
from connector.command import Command, Message, message_of, new_conversation, refusal, unsupported
from connector.eightbyeight import File, InvalidCommand, Platform, PlatformError, ReadBack, RetryPolicy, retrying
from connector.lanes import Ticket
from connector.ownership import Ownership, Revoked
from connector.published import PublishedResults
from connector.results import now_ms
from connector.conversation import CommandKind, Conversation, Status, after_command

__all__ = ["CommandRunner", "Job"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSCRIPTS_MISSING = Counter(
    "connector_transcripts_missing_total",
    "Transcripts after an end that could not be read or encoded (published with `error` set), by error code.",
    ["code"],
)


@dataclass
class Job:
    """One record in a lane: the Faust event, its command and its ack ticket."""

    event: faust.EventT
    command: Command
    ticket: Ticket
    answered: bool = False  # its result has been published


class CommandRunner:
    """Runs commands against 8x8 and the conversations table, and answers each once."""

    def __init__(
        self,
        connector: Connector,
        platform: Platform,
        ownership: Ownership,
        outputs: results.Outputs,
        published: PublishedResults,
        auto_end: AutoEnd,
    ) -> None:
        self.connector = connector
        self.settings = connector.settings
        self.platform = platform
        self.policy = RetryPolicy.from_settings(connector.settings)
        self.ownership = ownership
        self.outputs = outputs
        self.published = published
        self.auto_end = auto_end

    async def run(self, job: Job) -> None:
        """Run the command of `job` and answer it; Revoked when its partition was taken away first."""
        tracing.current.set(tracing.of_headers(job.event.message.headers))
        command = job.command
        existing = self._read(command.ref)
        if existing is not None and command.command_id in existing.recent_commands:
            await self._answer_again(job, existing.recent_commands[command.command_id])
            return
        if command.command_id.startswith(AUTO_END_PREFIX):
            self.auto_end.ran(command.ref)
            if not self.auto_end.due(existing):
                await self._refuse(job, existing, "AUTO_END_CANCELLED", "the agent came back or the customer wrote: not ended")
                return
        refused = unsupported(command, self.platform) or refusal(command, existing)
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
        elif command.kind is CommandKind.SET_TYPING:
            author_type = command.body.get("author_type", "USER").lower()
            # A stop needs no call: 8x8's indicator lapses by itself, and a message ends it.
            typing = (lambda cid: self.platform.typing(cid, author_type)) if command.body.get("active", True) else None
            await self._call(job, existing.conversation_id, typing)
        elif command.kind is CommandKind.MARK_READ:
            author_type, message_id = command.body.get("author_type", "USER").lower(), command.body["message_id"]
            await self._call(job, existing.conversation_id, lambda cid: self.platform.mark_read(cid, message_id, author_type))
        else:
            await self._fetch_transcript(job, existing.conversation_id)

    async def _answer_again(self, job: Job, stored: dict[str, Any]) -> None:
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

    async def _start(self, job: Job, existing: Conversation | None) -> None:
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
        if unsure and existing is not None and existing.status is not Status.FAILED:
            # The conversation's events may have moved the entry on since that create: keep what they said.
            creating = dataclasses.replace(existing, updated_at=now)
        # Durable before the call: after a crash the table must say a create may have happened.
        await self._write(job, lambda current: creating)

        create = _LookedUpFirst(
            lambda: self._on_8x8(job, lambda: self.platform.create(request)),
            lambda: self._on_8x8(job, lambda: self.platform.find_by_ref(command.ref)),
            unsure=unsure,
        )
        try:
            attempted = await retrying(self.policy, create)
        except (PlatformError, InvalidCommand) as exc:
            failed = self._failure(job, exc)
            reason = failed["error_message"]
            if isinstance(exc, PlatformError) and create.unsure:
                reason = f"{reason} (the create may have reached 8x8; the next start for this ref looks it up first)"
            await self._conclude(job, failed, lambda current: _after_failure(current or creating, reason, now_ms()))
            return
        conversation_id = attempted.value
        succeeded = self.result(job, "SUCCEEDED", conversation_id=conversation_id, attempts=attempted.attempts)
        # The mapping is stored before the start is remembered: a replay answered from the table
        # must never leave the conversation's events without their ref.
        await self.outputs.mapping(conversation_id, command.ref, self.platform.generation)
        await self._conclude(
            job,
            succeeded,
            lambda current: after_command(
                current or creating,
                CommandKind.START_CONVERSATION,
                now_ms(),
                ref=command.ref,
                conversation_id=conversation_id,
                generation=self.platform.generation,
                channel_id=request.channel_id,
            ),
        )

    async def _send(self, job: Job, existing: Conversation) -> None:
        """SendMessage: 8x8 honours no idempotency key, so the intent is stored before the call, and a replay
        that finds it without an outcome looks for the message on 8x8 before sending it again."""
        command = job.command
        try:
            message = message_of(command, self.settings.command_attachment_max_bytes)
        except InvalidCommand as exc:
            await self._refuse(job, existing, "INVALID_COMMAND", str(exc))
            return
        conversation_id = existing.conversation_id
        assert conversation_id is not None
        if existing.sending == command.command_id and existing.sending_at is not None:
            since = existing.sending_at
            try:
                found = await retrying(self.policy, lambda: self._on_8x8(job, lambda: self._was_sent(conversation_id, message, since)))
            except PlatformError as exc:
                exc.message = f"could not check on 8x8 whether the message was sent before a restart: {exc.message}"
                await self._conclude(job, self._failure(job, exc, conversation_id=conversation_id), _unchanged)
                return
            if found.value:
                logger.info("%s: message of command %s found on 8x8 after a restart: not sent again", command.ref, command.command_id)
                await self._call(job, conversation_id, None)
                return
        else:
            since = now_ms()
            await self._write(job, lambda current: dataclasses.replace(current, sending=command.command_id, sending_at=since))
        try:
            files = message.files + tuple([await self._fetch(*item) for item in message.to_fetch])
        except AttachmentUnavailable as exc:
            await self._refuse(job, existing, "ATTACHMENT_UNAVAILABLE", str(exc))
            return
        text, author_type, cards = message.text, message.author_type, message.cards

        async def sent() -> bool | None:
            return await self._was_sent(conversation_id, message, since) or None

        send = _LookedUpFirst(lambda: self.platform.send(conversation_id, text, author_type, files=files, cards=cards), sent)
        await self._call(job, conversation_id, lambda cid: send())

    async def _fetch(self, name: str, content_type: str, url: str) -> File:
        return await attachments.fetch(
            name,
            content_type,
            url,
            max_bytes=self.settings.command_attachment_max_bytes,
            timeout_s=self.settings.platform_timeout_s,
            network=attachments.CheckedNetwork(self.settings.command_attachment_allowed_networks),
        )

    async def _was_sent(self, conversation_id: str, message: Message, since_ms: int) -> bool:
        """Whether 8x8 holds a message of the author with the text (and files of the names) created since the
        intent (less clock skew)."""
        earliest = since_ms - _SEND_CLOCK_SKEW_MS
        names = [file.name for file in message.files] + [name for name, _, _ in message.to_fetch]
        return any(
            held["text"] == message.text
            and (held["author_type"] or "").lower() == message.author_type
            and (held["created_at"] is None or held["created_at"] >= earliest)
            and [attachment["file_name"] for attachment in held.get("attachments") or ()] == names
            for held in await self.platform.messages(conversation_id)
        )

    async def _call(self, job: Job, conversation_id: str, call: Callable[[str], Any] | None) -> bool:
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
        succeeded = self.result(job, "SUCCEEDED", conversation_id=conversation_id, attempts=attempts)
        await self._conclude(job, succeeded, lambda current: after_command(current, command.kind, now_ms()))
        return True

    async def _fetch_transcript(self, job: Job, conversation_id: str) -> None:
        error = await self._transcript(job, conversation_id, "REQUESTED")
        if error is None:
            answer = self.result(job, "SUCCEEDED", conversation_id=conversation_id)
        else:
            answer = self._failure(job, error, conversation_id=conversation_id)
        await self._conclude(job, answer, _unchanged)

    async def _ended_transcript(self, job: Job, conversation_id: str) -> None:
        """The transcript after an end, whose result is out already: a failure is reported on its own.

        It is logged, counted, and published as a transcript with `error` set and nothing else, so
        that downstream knows this one is missing; never as a second result of the command.
        """
        try:
            error: Exception | None = await self._transcript(job, conversation_id, "ENDED")
        except Revoked:  # the next owner answers the end from the table and reads nothing back: say it is missing
            error = Revoked("the command's partition moved to another worker before the conversation was read back")
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

    async def _transcript(self, job: Job, conversation_id: str, reason: str) -> Exception | None:
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
        try:
            await self.connector.appender.deliver(
                self.settings.topic_transcripts, job.command.ref.encode(), value, headers=tracing.kafka_headers()
            )
        except NotDelivered as exc:  # too large for the topic: the same again would be refused again
            if not exc.too_large:
                raise  # not authorised, or another refusal a restart must meet once it is fixed (the worker stops)
            logger.error("transcript of %s (8x8 conversation %s) not published: %s", job.command.ref, conversation_id, exc)
            return exc
        return None

    async def _refuse(self, job: Job, existing: Conversation | None, code: str, reason: str) -> None:
        """A FAILED result for a command that makes no sense now; nothing is sent to 8x8.

        A ref that has no entry gets none: a command for a ref never started creates no state
        (the same command again gets the same answer, from the same rule).
        """
        answer = self.result(job, "FAILED", error_code=code, error_message=reason)
        await self._conclude(job, answer, _unchanged if existing is not None else None)

    # --- table and answers ------------------------------------------------------------------------

    async def _on_8x8(self, job: Job, call: Callable[[], Awaitable[T]]) -> T:
        """One 8x8 call for `job`, if its partition is still this worker's when a slot is free (`Ownership.call`)."""
        return await self.ownership.call(job.event.message, job.command.command_id, call)

    def _read(self, ref: str) -> Conversation | None:
        value = self.connector.conversations.get(ref)
        return Conversation.from_dict(value) if value else None

    async def _write(self, job: Job, change: Callable[[Conversation | None], Conversation]) -> None:
        """Apply `change` to the current entry (read and written with no await between) and wait until the
        changelog record is stored, so that nothing is announced before the state that explains it."""
        value = change(self._read(job.command.ref)).to_dict()
        await self.connector.appender.put_durably(self.connector.conversations, job.command.ref, value, job.event.message.partition)

    async def _conclude(self, job: Job, answer: dict[str, Any], change: Callable[[Conversation], Conversation] | None) -> None:
        """Remember the result in the entry as `change` leaves it, then publish it (and the DLQ record of a failure).

        In this order nothing is announced before the state that explains it, and a replay after a
        crash answers from the table; whether it then says `duplicate: true` depends on whether this
        result reached Kafka (`_answer_again`). `change` None: the ref has no entry and gets none.
        """
        if change is not None:
            source = job.event.message.offset
            await self._write(job, lambda current: change(current).remember(answer["command_id"], results.remembered(answer, source)))
        await self.finish(job, answer)

    async def finish(self, job: Job, answer: dict[str, Any]) -> None:
        """Publish the result of `job` (and the DLQ copy of a failure)."""
        await self.outputs.result(answer)
        job.answered = True
        results.observe_end_to_end(answer, job.event.message.timestamp)
        if answer["status"] == "FAILED":
            await self.outputs.dead_letter(
                job.event.message, answer["error_code"], "CommandFailed", answer["error_message"] or "", answer=answer
            )

    def result(self, job: Job, result_status: str, **fields: Any) -> dict[str, Any]:
        """The CommandResult of `job` (fields: conversation_id, error_code, ...)."""
        return results.result(job.command, result_status, self.platform.generation, **fields)

    def _failure(self, job: Job, exc: Exception, **fields: Any) -> dict[str, Any]:
        return results.failure(job.command, exc, self.platform.generation, **fields)


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


class _LookedUpFirst(Generic[T]):
    """An 8x8 call that honours no idempotency key, as a retryable attempt: after an attempt whose outcome is
    unknown (a timeout, a 5xx; or from the start, `unsure`), the next one asks `look_up` whether the call took
    effect and answers what it found instead of calling again; `look_up` answers None for "not there"."""

    def __init__(
        self, call: Callable[[], Awaitable[T]], look_up: Callable[[], Awaitable[T | None]], *, unsure: bool = False
    ) -> None:
        self._call = call
        self._look_up = look_up
        self.unsure = unsure

    async def __call__(self) -> T:
        if self.unsure:
            found = await self._look_up()
            if found is not None:
                return found
            self.unsure = False
        try:
            return await self._call()
        except PlatformError as exc:
            self.unsure = exc.outcome_unknown
            raise
