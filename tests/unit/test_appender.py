"""The Appender and the DLQ write, in-process: call order under the lock, retriable or not, the too-large fallback."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import NotEnoughReplicasError, RecordTooLargeError, TopicAuthorizationFailedError
from faust.exceptions import ProducerSendError

from connector import appender as appender_module
from connector.appender import Appender, NotDelivered
from connector.results import Outputs
from tests.unit.fakes import FakeAppender, FakeCodec, FakeMessage, fast_settings


class FakeProducer:
    """Faust's producer: `send` hands back a future; `failures` are raised by the next deliveries, in turn;
    `full` makes the next `send` wait until it is set (the producer's batch is full)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any, int | None, Any]] = []
        self.failures: list[BaseException] = []
        self.full: asyncio.Event | None = None

    async def send(self, topic: str, key: Any, value: Any, partition: int | None, timestamp: Any, headers: Any) -> asyncio.Future[Any]:
        if self.full is not None:
            full, self.full = self.full, None
            await full.wait()
        self.sent.append((topic, key, value, partition, headers))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures:
            delivery.set_exception(self.failures.pop(0))
        else:
            delivery.set_result(SimpleNamespace(topic_partition=(topic, partition), offset=len(self.sent) - 1))
        return delivery


class FakeStore(dict):
    """A table's store: its entries and the changelog offsets it was told are persisted."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: list[tuple[Any, int]] = []

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted.append((tp, offset))


class FakeTable:
    def __init__(self) -> None:
        self.data = FakeStore()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-conversations-changelog")


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    monkeypatch.setattr(appender_module, "_BACKOFF_FIRST_S", 0.001)
    return FakeProducer()


@pytest.fixture
def appender(producer: FakeProducer) -> Appender:
    return Appender(SimpleNamespace(producer=producer))  # type: ignore[arg-type]


async def test_records_reach_the_producer_in_call_order_even_while_it_is_full(producer: FakeProducer, appender: Appender) -> None:
    producer.full = room = asyncio.Event()
    appends = [asyncio.create_task(appender.append("t", str(i).encode(), b"v")) for i in range(20)]
    await asyncio.sleep(0)
    assert producer.sent == []
    room.set()
    await asyncio.gather(*appends)
    assert [key for _, key, *_ in producer.sent] == [str(i).encode() for i in range(20)]


@pytest.mark.parametrize("error", [NotEnoughReplicasError(), asyncio.TimeoutError()])
async def test_deliver_tries_a_retriable_failure_again_until_kafka_has_the_record(
    producer: FakeProducer, appender: Appender, error: BaseException
) -> None:
    producer.failures = [error, error]
    metadata = await appender.deliver("t", b"k", b"v", headers=[("h", b"1")])
    assert metadata.offset == 2 and len(producer.sent) == 3
    assert producer.sent[-1] == ("t", b"k", b"v", None, [("h", b"1")])


async def test_deliver_gives_up_at_once_on_what_never_succeeds(producer: FakeProducer, appender: Appender) -> None:
    producer.failures = [TopicAuthorizationFailedError()]
    with pytest.raises(NotDelivered) as refused:
        await appender.deliver("t", b"k", b"v")
    assert len(producer.sent) == 1
    assert (refused.value.topic, refused.value.too_large) == ("t", False)


async def test_a_record_too_large_is_named_so_behind_fausts_wrapper(producer: FakeProducer, appender: Appender) -> None:
    wrapped = ProducerSendError("send failed")
    wrapped.__cause__ = RecordTooLargeError()
    producer.failures = [wrapped]
    with pytest.raises(NotDelivered) as refused:
        await appender.deliver("t", b"k", b"v" * 10)
    assert refused.value.too_large and isinstance(refused.value.cause, RecordTooLargeError)


async def test_put_durably_sets_the_entry_then_waits_for_its_changelog_record(producer: FakeProducer, appender: Appender) -> None:
    table = FakeTable()
    await appender.put_durably(table, "r1", {"status": "QUEUED"}, 3)  # type: ignore[arg-type]
    assert table.data == {"r1": {"status": "QUEUED"}}
    assert producer.sent == [("app-conversations-changelog", b"r1", orjson.dumps({"status": "QUEUED"}), 3, None)]
    assert table.data.persisted == [(("app-conversations-changelog", 3), 0)]


async def test_a_changelog_write_that_fails_records_no_persisted_offset(producer: FakeProducer, appender: Appender) -> None:
    table = FakeTable()
    producer.failures = [TopicAuthorizationFailedError()]
    delivery = await appender.put(table, "r1", {"status": "QUEUED"}, 0)  # type: ignore[arg-type]
    with pytest.raises(TopicAuthorizationFailedError):
        await delivery
    await asyncio.sleep(0)  # the done callbacks run
    assert table.data.persisted == []


async def test_delete_appends_a_tombstone_only_for_an_entry_that_is_there(producer: FakeProducer, appender: Appender) -> None:
    table = FakeTable()
    assert await appender.delete(table, "r1", 0) is None  # type: ignore[arg-type]
    table.data["r1"] = {"status": "ENDED"}
    await (await appender.delete(table, "r1", 0))  # type: ignore[arg-type, misc]
    assert table.data == {} and producer.sent == [("app-conversations-changelog", b"r1", None, 0, None)]


def _outputs() -> tuple[Outputs, FakeAppender]:
    stub = FakeAppender()
    return Outputs(fast_settings(), FakeCodec(), stub), stub  # type: ignore[arg-type]


async def test_a_dlq_copy_too_large_goes_without_its_body_and_headers_but_with_the_error() -> None:
    outputs, stub = _outputs()
    stub.refuse["chat.commands.dlq"].append(RecordTooLargeError())
    message = FakeMessage(4, b"r1", b"x" * 100, headers=[("big", b"y" * 50)])
    await outputs.dead_letter(message, "UNDECODABLE", "SchemaError", "no magic byte")
    (copy,) = stub.on("chat.commands.dlq")
    assert (copy.key, copy.value) == (b"r1", None)
    headers = dict(copy.headers or [])
    assert "big" not in headers
    assert headers["connector.error.code"] == b"UNDECODABLE"
    assert headers["__connect.errors.offset"] == b"4"
    assert headers["connector.dlq.body.omitted"] == b"RecordTooLargeError: 102 bytes"
    assert headers["connector.source.size"] == b"102"


async def test_a_dlq_copy_refused_for_another_reason_is_not_delivered() -> None:
    outputs, stub = _outputs()
    stub.refuse["chat.commands.dlq"].append(TopicAuthorizationFailedError())
    with pytest.raises(NotDelivered):
        await outputs.dead_letter(FakeMessage(0, b"r1", b"v"), "UNDECODABLE", "SchemaError", "no magic byte")
    assert stub.log == []
