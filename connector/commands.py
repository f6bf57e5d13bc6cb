"""The command agent: runs `chat.commands` against 8x8 in per-conversation lanes, one result per command.

One Faust agent (concurrency 1) decodes each record and hands it to the lane of its ref: commands
of a ref run strictly in order, refs run in parallel, bounded by requests in flight and by the
commands buffered. A record's offset is acked only when it and every earlier record of its
partition are finished (`connector.lanes.InOrderAcks`), so a crash replays unfinished work and
never skips it. Replayed commands are answered from the table (their ids are remembered per ref)
without calling 8x8 again; a create whose outcome is unknown is first looked up by connectorRef.

Table writes from a lane go to the changelog partition of the command's own record, and every
record goes out through `connector.appender.Appender` (call order kept, Faust's per-record
machinery skipped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import faust
from prometheus_client import Counter, Gauge

from connector import status, transcripts
from connector.app import Connector
from connector.appender import NotDelivered
from connector.eightbyeight import (
    InvalidCommand,
    NewConversation,
    PlatformError,
    ReadBack,
    RetryPolicy,
    open_platform,
    retrying,
)
from connector.lanes import FirstReads, InOrderAcks, Lanes, Ticket
from connector.published import PublishedResults
from connector.schemas import SchemaError
from connector.status import CommandKind, Conversation, Status

__all__ = [
    "AUTO_END_PREFIX",
    "Command",
    "CommandProcessor",
    "CommandSettings",
    "auto_end_due",
    "install",
    "parse_command",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Command ids of the EndConversation commands the auto-end policy publishes: `auto-end:<ref>:<agent_left_at>`.
AUTO_END_PREFIX = "auto-end:"

RESULTS = Counter(
    "connector_command_results_total",
    "Command results published, by command type, status, and whether it re-emits an earlier result.",
    ["command_type", "status", "duplicate"],
)
DLQ_RECORDS = Counter("connector_commands_dlq_total", "Records sent to the command DLQ, by error code.", ["code"])
TABLE_ENTRIES = Gauge("connector_table_entries", "Entries in a table held by this worker.", ["table"])
LANES_BUFFERED = Gauge("connector_command_lanes_buffered", "Commands accepted by the lanes and not finished.")
LANES_ACTIVE = Gauge("connector_command_lanes_active", "Conversation refs with commands in their lane.")
TRANSCRIPTS_MISSING = Counter(
    "connector_transcripts_missing_total",
    "Transcripts after an end that could not be read or encoded (published with `error` set), by error code.",
    ["code"],
)


@dataclass(frozen=True)
class CommandSettings:
    """The command processor's knobs, read from Settings where it has them, else these defaults."""

    max_attempts: int = 5
    retry_max_s: float = 30.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0
    max_in_flight: int = 256
    max_buffered: int = 10_000
    auto_end_s: float = 0.0
    transcript_on_end: bool = True
    token_refresh_margin_s: float = 60.0
    find_max_pages: int = 20
    revoke_grace_s: float = 15.0

    @classmethod
    def from_settings(cls, settings: Any) -> CommandSettings:
        """Each field from its `Settings` field (see _SETTING_NAMES)."""
        return cls(**{field_name: getattr(settings, setting) for field_name, setting in _SETTING_NAMES.items()})

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.retry_max_s, self.backoff_base_s, self.backoff_cap_s)


_SETTING_NAMES = {
    "max_attempts": "command_max_attempts",
    "retry_max_s": "command_retry_max_s",
    "backoff_base_s": "command_backoff_base_s",
    "backoff_cap_s": "command_backoff_cap_s",
    "max_in_flight": "command_max_in_flight",
    "max_buffered": "command_max_buffered",
    "auto_end_s": "command_auto_end_s",
    "transcript_on_end": "command_transcript_on_end",
    "token_refresh_margin_s": "platform_token_refresh_margin_s",
    "find_max_pages": "platform_find_max_pages",
    "revoke_grace_s": "command_revoke_grace_s",
}


@dataclass(frozen=True)
class Command:
    """A decoded ConversationCommand: its id, ref, kind and the fields of its kind."""

    command_id: str
    ref: str
    kind: CommandKind
    body: dict[str, Any]


def parse_command(record: dict[str, Any], key: str | None) -> Command:
    """The command in a decoded record; InvalidCommand says what is wrong with it."""
    command_id = record.get("command_id") or ""
    ref = record.get("conversation_ref") or ""
    if not command_id.strip():
        raise InvalidCommand("command_id is empty")
    if not ref.strip():
        raise InvalidCommand("conversation_ref is empty")
    if key != ref:
        raise InvalidCommand(f"the record key {key!r} is not the conversation_ref {ref!r}; the key must be the ref")
    name, body = record["command"]
    kind = _KINDS.get(name.rsplit(".", 1)[-1])
    if kind is None:
        raise InvalidCommand(f"unknown command {name}")
    return Command(command_id, ref, kind, body)


# The error code of a record that is no usable command, by what reading it raised.
_POISON_CODES: dict[type[Exception], str] = {SchemaError: "UNDECODABLE", InvalidCommand: "INVALID_COMMAND"}

_KINDS = {
    "StartConversation": CommandKind.START_CONVERSATION,
    "SendMessage": CommandKind.SEND_MESSAGE,
    "EndConversation": CommandKind.END_CONVERSATION,
    "FetchTranscript": CommandKind.FETCH_TRANSCRIPT,
}


def new_conversation(command: Command, default_channel: str) -> NewConversation:
    """The create request of a StartConversation command."""
    customer = command.body["customer"]
    assignment = command.body.get("assignment")
    if isinstance(assignment, tuple):  # a union read with its record name: (name, record)
        assignment = assignment[1]
    return NewConversation(
        ref=command.ref,
        channel_id=command.body.get("channel_id") or default_channel,
        name=customer["name"],
        customer_id=customer.get("customer_id"),
        email=customer.get("email"),
        phone=customer.get("phone"),
        company=customer.get("company"),
        case_id=customer.get("case_id"),
        language=customer.get("language"),
        properties=dict(customer.get("properties") or {}),
        history=[(m["text"], m.get("author_type", "USER").lower()) for m in command.body.get("history") or ()],
        assignment=(assignment["type"].lower(), assignment["id"]) if assignment else None,
    )


def auto_end_due(conversation: Conversation, now_ms: int, after_s: float) -> bool:
    """True when the auto-end policy should end it: agent left `after_s` ago, no transfer, no customer message since."""
    if after_s <= 0 or conversation.status is not Status.AGENT_LEFT or conversation.agent_left_at is None:
        return False
    if conversation.last_customer_message_at is not None and conversation.last_customer_message_at >= conversation.agent_left_at:
        return False
    return now_ms - conversation.agent_left_at >= after_s * 1000


@dataclass
class _Job:
    """One record in a lane: the Faust event, its command and its ack ticket."""

    event: faust.EventT
    command: Command
    ticket: Ticket
    answered: bool = False  # its result has been published


class Revoked(Exception):
    """The job's partition was revoked: it stops before its next 8x8 call; the new owner runs it."""


class CommandProcessor:
    """Decodes, routes, executes and answers commands; owns the 8x8 adapter and the lanes.

    A record's offset is released (its ticket done) only once everything it leads to is stored in
    Kafka: the table entry, the result, the DLQ copy. A record Kafka refuses for good stops the
    worker without releasing it (`_halt`), so a restart runs it again.
    """

    def __init__(self, connector: Connector, config: CommandSettings) -> None:
        self.connector = connector
        self.config = config
        self.platform = open_platform(
            connector.settings,
            max_in_flight=config.max_in_flight,
            token_refresh_margin_s=config.token_refresh_margin_s,
            find_max_pages=config.find_max_pages,
        )
        self.policy = config.retry_policy()
        self.lanes: Lanes[str, _Job] = Lanes(self._execute, config.max_buffered)
        self.acks = InOrderAcks()
        self._auto_ending: set[str] = set()
        self.reads = FirstReads()
        self._started = False
        # The consumer generation revoked last: records fetched in it or before are no longer this worker's.
        self._fence = -1
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._halted = False
        self._revoke_timer: asyncio.TimerHandle | None = None
        self.published = PublishedResults(connector.settings, connector.codec)

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
            _settle_unacked(message)  # read before a revocation: the partition's next owner reads it again
            return
        ticket = self.acks.track(message.tp, event.ack, partial(_settle_unacked, message))
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
            await self._poison(event, ticket, key or "", _command_id_of(record) or record_id, code, exc)
            return
        await self.lanes.put(command.ref, _Job(event, command, ticket))

    async def close(self) -> None:
        """Close the 8x8 HTTP client (once the lanes are drained: Faust stops the app after the streams)."""
        await self.platform.aclose()
        await self.published.close()

    def revoke(self) -> None:
        """A rebalance starts: every partition is revoked (Faust's assignor is eager).

        Commands not started are dropped unacked (the partition's next owner runs them); the ones
        running have `revoke_grace_s` to finish, then they are cancelled, and none starts another
        8x8 call meanwhile (`_on_8x8`).
        """
        self._fence = max(self._fence, self.connector.app.consumer_generation_id)
        self.published.forget()
        taken = self.lanes.take_waiting()
        for job in taken:
            job.ticket.abandon()
        if self._revoke_timer is not None:
            self._revoke_timer.cancel()
        self._revoke_timer = asyncio.get_running_loop().call_later(self.config.revoke_grace_s, self._cancel_revoked)
        logger.info("partitions revoked: %d commands not started are left to the next owner", len(taken))

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
                    await self._finish(job, self._result(job.command, "FAILED", error_code="INTERNAL_ERROR", error_message=reason))
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
            if existing is None or not auto_end_due(existing, _now(), self.config.auto_end_s):
                await self._refuse(job, existing, "AUTO_END_CANCELLED", "the agent came back or the customer wrote: not ended")
                return
        resuming = (
            command.kind is CommandKind.START_CONVERSATION
            and existing is not None
            and existing.status is Status.CREATING
            and existing.conversation_id is None
        )
        reason = None if resuming else status.check_command(existing, command.kind)
        if reason is not None:
            await self._refuse(job, existing, _rule_code(existing, command.kind), reason)
            return
        if command.kind is CommandKind.START_CONVERSATION:
            await self._start(job, existing)
        elif command.kind is CommandKind.SEND_MESSAGE:
            assert existing is not None
            await self._send(job, existing)
        elif command.kind is CommandKind.END_CONVERSATION:
            assert existing is not None and existing.conversation_id is not None
            if await self._call(job, existing.conversation_id, self.platform.end) and self.config.transcript_on_end:
                await self._ended_transcript(job, existing.conversation_id)
        else:
            assert existing is not None and existing.conversation_id is not None
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
        await self._publish_result(_recalled(job.command.ref, job.command.command_id, stored), duplicate=published)

    async def _start(self, job: _Job, existing: Conversation | None) -> None:
        command = job.command
        try:
            request = new_conversation(command, self.connector.settings.platform_channel_id)
            self.platform.check(request)
        except InvalidCommand as exc:
            await self._refuse(job, existing, "INVALID_COMMAND", str(exc))
            return
        now = _now()
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
            result = self._failure(command, exc)
            reason = result["error_message"]
            if isinstance(exc, PlatformError) and unsure:
                reason = f"{reason} (the create may have reached 8x8; the next start for this ref looks it up first)"
            await self._conclude(job, result, lambda current: _after_failure(current or creating, reason, _now()))
            return
        conversation_id = attempted.value
        result = self._result(command, "SUCCEEDED", conversation_id=conversation_id, attempts=attempted.attempts)
        # The mapping is stored before the start is remembered: a replay answered from the table
        # must never leave the conversation's events without their ref.
        await self._publish_mapping(conversation_id, command.ref)
        await self._conclude(
            job,
            result,
            lambda current: status.after_command(
                current or creating,
                CommandKind.START_CONVERSATION,
                _now(),
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
                await self._conclude(job, self._failure(command, exc, conversation_id=conversation_id), _unchanged)
                return
            if found.value:
                logger.info("%s: message of command %s found on 8x8 after a restart: not sent again", command.ref, command.command_id)
                await self._call(job, conversation_id, None)
                return
        else:
            now = _now()
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
                await self._conclude(job, self._failure(command, exc, conversation_id=conversation_id), _unchanged)
                return False
            attempts = attempted.attempts
        result = self._result(command, "SUCCEEDED", conversation_id=conversation_id, attempts=attempts)
        await self._conclude(job, result, lambda current: status.after_command(current, command.kind, _now()))
        return True

    async def _fetch_transcript(self, job: _Job, conversation_id: str) -> None:
        command = job.command
        error = await self._transcript(job, conversation_id, "REQUESTED")
        if error is None:
            result = self._result(command, "SUCCEEDED", conversation_id=conversation_id)
        else:
            result = self._failure(command, error, conversation_id=conversation_id)
        await self._conclude(job, result, _unchanged)

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
            job.command.ref, conversation_id, self.platform.generation, "ENDED", job.command.command_id, empty, _now(), error=reason
        )
        await self._emit(self.connector.settings.topic_transcripts, job.command.ref.encode(), "ConversationTranscript", record)

    async def _transcript(self, job: _Job, conversation_id: str, reason: str) -> Exception | None:
        """Read the conversation back and publish its transcript; the error if that failed (8x8, its answer, Avro)."""

        try:
            attempted = await retrying(self.policy, lambda: self._on_8x8(job, lambda: self.platform.read_back(conversation_id)))
            record = transcripts.record(
                job.command.ref, conversation_id, self.platform.generation, reason, job.command.command_id, attempted.value, _now()
            )
            value = self.connector.codec.encode("ConversationTranscript", record)
        except (Revoked, asyncio.CancelledError):
            raise
        except PlatformError as exc:
            return exc
        except Exception as exc:  # an answer the adapter did not foresee, or one Avro cannot take
            logger.exception("transcript of %s (8x8 conversation %s) could not be built", job.command.ref, conversation_id)
            return exc
        await self.connector.appender.deliver(self.connector.settings.topic_transcripts, job.command.ref.encode(), value)
        return None

    async def _refuse(self, job: _Job, existing: Conversation | None, code: str, reason: str) -> None:
        """A FAILED result for a command that makes no sense now; nothing is sent to 8x8.

        A ref that has no entry gets none: a command for a ref never started creates no state
        (the same command again gets the same answer, from the same rule).
        """
        result = self._result(job.command, "FAILED", error_code=code, error_message=reason)
        await self._conclude(job, result, _unchanged if existing is not None else None)

    async def _on_8x8(self, job: _Job, call: Callable[[], Awaitable[T]]) -> T:
        """Make one 8x8 call for `job` once a slot is free, if its partition is still this worker's then.

        The slots bound the calls in flight (`max_in_flight`); the ownership check comes after the
        wait for one, so that no call starts for a partition revoked meanwhile.
        """
        async with self._slots:
            if not self._owns(job.event.message) or self._halted:
                raise Revoked(job.command.command_id)
            return await call()

    def _owns(self, message: Any) -> bool:
        """Whether `message` was fetched after the last revocation: its partition is still this worker's."""
        return message.generation_id > self._fence

    def _cancel_revoked(self) -> None:
        """The revocation grace is over: cancel the jobs of revoked partitions still running."""
        cancelled = self.lanes.cancel(lambda job: not self._owns(job.event.message))
        if cancelled:
            logger.warning("%d commands still running %.0fs after the revocation were cancelled", cancelled, self.config.revoke_grace_s)

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

    # --- table, results, DLQ --------------------------------------------------------------------

    def _read(self, ref: str) -> Conversation | None:
        value = self.connector.conversations.get(ref)
        return Conversation.from_dict(value) if value else None

    async def _write(self, job: _Job, change: Callable[[Conversation | None], Conversation]) -> None:
        """Apply `change` to the current entry (read and written with no await between) and wait until the
        changelog record is stored, so that nothing is announced before the state that explains it."""
        value = change(self._read(job.command.ref)).to_dict()
        await self.connector.appender.put_durably(self.connector.conversations, job.command.ref, value, job.event.message.partition)

    async def _conclude(self, job: _Job, result: dict[str, Any], change: Callable[[Conversation], Conversation] | None) -> None:
        """Remember the result in the entry as `change` leaves it, then publish it (and the DLQ record of a failure).

        In this order nothing is announced before the state that explains it, and a replay after a
        crash answers from the table; whether it then says `duplicate: true` depends on whether this
        result reached Kafka (`_answer_again`). `change` None: the ref has no entry and gets none.
        """
        if change is not None:
            source = job.event.message.offset
            await self._write(job, lambda current: change(current).remember(result["command_id"], _remembered(result, source)))
        await self._finish(job, result)

    async def _finish(self, job: _Job, result: dict[str, Any]) -> None:
        job.answered = True
        await self._publish_result(result, duplicate=False)
        if result["status"] == "FAILED":
            await self._dead_letter(job.event, result["error_code"], "CommandFailed", result["error_message"] or "")

    async def _publish_result(self, result: dict[str, Any], *, duplicate: bool) -> None:
        result = {**result, "duplicate": duplicate}
        await self._emit(self.connector.settings.topic_command_results, result["conversation_ref"].encode(), "CommandResult", result)
        RESULTS.labels(result["command_type"], result["status"], str(duplicate).lower()).inc()

    async def _publish_mapping(self, conversation_id: str, ref: str) -> None:
        """Tell the event agent which ref an 8x8 id belongs to (it alone writes the `refs` table)."""
        mapping = {
            "kind": "REF_MAPPING",
            "generation": self.platform.generation,
            "body": b"",
            "headers": {},
            "received_at": _now(),
            "conversation_ref": ref,
        }
        await self._emit(self.connector.settings.topic_webhooks_raw, conversation_id.encode(), "RawWebhook", mapping)

    async def _poison(self, event: faust.EventT, ticket: Ticket, ref: str, command_id: str, code: str, exc: Exception) -> None:
        """A record that is no usable command: FAILED result (key: its key) and the DLQ; then its offset goes."""
        result = {
            "command_id": command_id,
            "conversation_ref": ref,
            "command_type": "UNKNOWN",
            "status": "FAILED",
            "error_code": code,
            "error_message": str(exc)[:1000],
            "attempts": 0,
            "duplicate": False,
            "processed_at": _now(),
        }
        try:
            await self._emit(self.connector.settings.topic_command_results, event.message.key, "CommandResult", result)
            RESULTS.labels("UNKNOWN", "FAILED", "false").inc()
            await self._dead_letter(event, code, type(exc).__name__, str(exc))
        except NotDelivered as failed:
            self._halt(ticket, event.message, failed)
            return
        ticket.done()

    async def _emit(self, topic: str, key: bytes | None, schema: str, record: dict[str, Any]) -> None:
        """Append `record`, Avro-encoded under our registered `schema`, to `topic`, and wait until Kafka has it."""
        await self.connector.appender.deliver(topic, key, self.connector.codec.encode(schema, record))

    async def _dead_letter(self, event: faust.EventT, code: str, error_class: str, text: str) -> None:
        """The record, its headers and the error in headers, to the DLQ; its body is left out if the DLQ cannot take it."""
        message = event.message
        headers = [
            ("connector.error.class", error_class.encode()),
            ("connector.error.code", code.encode()),
            ("connector.error.message", text[:1000].encode("utf-8", "replace")),
            ("connector.source.topic", message.topic.encode()),
            ("connector.source.partition", str(message.partition).encode()),
            ("connector.source.offset", str(message.offset).encode()),
        ]
        dlq = self.connector.settings.topic_commands_dlq
        try:
            await self.connector.appender.deliver(dlq, message.key, message.value, headers=list(_header_items(message.headers)) + headers)
        except NotDelivered as exc:
            if not exc.too_large:
                raise
            size = len(message.value or b"") + len(message.key or b"")
            logger.warning("%s[%s]@%s: DLQ copy too large (%d bytes); its body and headers are left out", message.topic, message.partition, message.offset, size)
            dropped = [("connector.dlq.body.omitted", f"{type(exc.cause).__name__}: {size} bytes".encode()), ("connector.source.size", str(size).encode())]
            await self.connector.appender.deliver(dlq, message.key, None, headers=headers + dropped)
        DLQ_RECORDS.labels(code).inc()

    def _result(self, command: Command, result_status: str, **fields: Any) -> dict[str, Any]:
        return {
            "command_id": command.command_id,
            "conversation_ref": command.ref,
            "command_type": command.kind.value,
            "status": result_status,
            "conversation_id": None,
            "generation": self.platform.generation,
            "http_status": None,
            "error_code": None,
            "error_message": None,
            "attempts": 0,
            "duplicate": False,
            "processed_at": _now(),
            **fields,
        }

    def _failure(self, command: Command, exc: Exception, **fields: Any) -> dict[str, Any]:
        if isinstance(exc, PlatformError):
            return self._result(
                command,
                "FAILED",
                http_status=exc.http_status,
                error_code=exc.code,
                error_message=exc.message,
                attempts=exc.attempts,
                **fields,
            )
        return self._result(command, "FAILED", error_code="INVALID_COMMAND", error_message=str(exc), **fields)

    # --- timers ---------------------------------------------------------------------------------

    async def auto_end(self) -> None:
        """Publish an EndConversation for each owned conversation the auto-end policy says is due.

        The command goes through chat.commands like any other, so its table writes land in the
        right changelog partition and its lane keeps the ref's order; its id is deterministic, so a
        second publication is answered as a duplicate.
        """
        app = self.connector.app
        owned = app.assignor.assigned_actives()
        topic = self.connector.commands.get_topic_name()
        now = _now()
        await self.connector.codec.start()
        for ref, value in list(self.connector.conversations.items()):
            if ref in self._auto_ending or not value:
                continue
            conversation = Conversation.from_dict(value)
            if not auto_end_due(conversation, now, self.config.auto_end_s):
                continue
            if app.producer.key_partition(topic, ref.encode()) not in owned:
                continue
            self._auto_ending.add(ref)
            record = {
                "command_id": f"{AUTO_END_PREFIX}{ref}:{conversation.agent_left_at}",
                "conversation_ref": ref,
                "created_at": now,
                "command": ("io.kafka8x8.chat.EndConversation", {"reason": "auto-end: the agent left"}),
            }
            await self.connector.commands.send(key=ref.encode(), value=self.connector.codec.encode("ConversationCommand", record))

    def measure_tables(self) -> None:
        TABLE_ENTRIES.labels("conversations").set(len(self.connector.conversations))
        TABLE_ENTRIES.labels("refs").set(len(self.connector.refs))
        LANES_BUFFERED.set(self.lanes.buffered)
        LANES_ACTIVE.set(self.lanes.active)


def install(connector: Connector) -> None:
    """Add the command agent, the conversation view and the timers to the app."""
    config = CommandSettings.from_settings(connector.settings)
    processor = CommandProcessor(connector, config)
    connector.extras["commands"] = processor
    connector.extras.setdefault("readiness", {})["commands"] = processor.ready
    app = connector.app

    # Faust calls on_rebalance_start first thing when partitions are revoked, before it waits for the
    # streams to ack what they hold; its on_partitions_revoked signal comes only after that wait.
    rebalance_start = app.on_rebalance_start

    def on_rebalance_start() -> None:
        rebalance_start()
        processor.revoke()

    app.on_rebalance_start = on_rebalance_start  # type: ignore[method-assign]

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
        processor.measure_tables()

    if config.auto_end_s > 0:

        @app.timer(interval=max(1.0, min(config.auto_end_s / 4, 30.0)))
        async def auto_end() -> None:
            await processor.auto_end()


# --- helpers --------------------------------------------------------------------------------


def _after_failure(conversation: Conversation, reason: str, now: int) -> Conversation:
    """A start that failed: FAILED with the reason, unless 8x8 already gave it an id."""
    if conversation.conversation_id is not None:
        return conversation
    return dataclasses.replace(conversation, status=Status.FAILED, error=reason, updated_at=now)


def _unchanged(conversation: Conversation) -> Conversation:
    """The entry as it is (the command's result is remembered in it all the same)."""
    return conversation


def _rule_code(existing: Conversation | None, kind: CommandKind) -> str:
    """The error code of a command `status.check_command` refused."""
    if existing is not None and existing.status is Status.ENDED:
        return "ENDED"
    if kind is CommandKind.START_CONVERSATION:
        return "ALREADY_ACTIVE"
    if existing is None or existing.conversation_id is None and existing.status is Status.FAILED:
        return "NOT_STARTED"
    return "STILL_CREATING"


# How far 8x8's clock may be behind ours when a replayed send looks for its message (see `_was_sent`).
_SEND_CLOCK_SKEW_MS = 2_000

# A remembered result keeps only what is not a default, to keep 64 of them per ref small.
_RESULT_DEFAULTS = {
    "conversation_id": None,
    "generation": None,
    "http_status": None,
    "error_code": None,
    "error_message": None,
    "attempts": 0,
    "duplicate": False,
}


def _remembered(result: dict[str, Any], offset: int) -> dict[str, Any]:
    """What the table keeps of a result, with the offset of the record it answered."""
    kept = {
        key: value
        for key, value in result.items()
        if key not in ("conversation_ref", "command_id") and _RESULT_DEFAULTS.get(key, ...) != value
    }
    kept["offset"] = offset
    return kept


def _recalled(ref: str, command_id: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The result again from what the table kept."""
    recalled = {**_RESULT_DEFAULTS, **stored, "conversation_ref": ref, "command_id": command_id}
    recalled.pop("offset", None)
    return recalled


def _settle_unacked(message: Any) -> None:
    """Let Faust stop waiting for `message` without acking it, so that its offset is never committed here.

    Faust's consumer waits, before a rebalance or a stop completes, until every record handed to a
    stream is acked (`Consumer.wait_empty`); `Consumer.ack` would also record the offset for the
    next commit. Marking the message acked is what that wait looks at, and nothing else.
    """
    message.acked = True


def _command_id_of(record: dict[str, Any]) -> str | None:
    """The command id of a decoded record, if it has a usable one."""
    command_id = record.get("command_id")
    return command_id if isinstance(command_id, str) and command_id.strip() else None


def _header_items(headers: Any) -> Iterator[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        yield key, value


def _now() -> int:
    return int(time.time() * 1000)
