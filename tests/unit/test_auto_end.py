"""The auto-end timer's failure paths: what it cannot publish now, it publishes at a later tick, and it never stops the worker."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from connector import _faust_compat as compat
from connector.auto_end import AutoEnd
from connector.conversation import Conversation, Status
from connector.results import now_ms
from connector.schemas import RegistryUnavailable
from tests.unit.fakes import FakeConnector, fast_settings


class Commands:
    """chat.commands as the timer sees it: `fail` sends raise, the others are kept."""

    def __init__(self) -> None:
        self.fail = 0
        self.sent: list[tuple[bytes, Any]] = []

    def get_topic_name(self) -> str:
        return "chat.commands"

    async def send(self, *, key: bytes, value: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise KafkaTimeoutError()
        self.sent.append((key, value))


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch) -> FakeConnector:
    monkeypatch.setattr(compat, "active_partitions", lambda app: {0})
    monkeypatch.setattr(compat, "key_partition", lambda app, topic, key: 0)
    connector = FakeConnector(settings=fast_settings(command_auto_end_s=1))
    left = Conversation(ref="r1", status=Status.AGENT_LEFT, conversation_id="cid-1", agent_left_at=now_ms() - 5_000)
    connector.conversations["r1"] = left.to_dict()
    connector.commands = Commands()  # type: ignore[attr-defined]
    return connector


async def test_an_end_kafka_did_not_take_is_published_at_the_next_tick(connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    auto_end = AutoEnd(connector)  # type: ignore[arg-type]
    connector.commands.fail = 1  # type: ignore[attr-defined]
    await auto_end.publish_due()  # does not raise: a timer's exception would stop the worker
    assert "the next tick tries again" in caplog.text
    await auto_end.publish_due()
    assert [key for key, _ in connector.commands.sent] == [b"r1"]  # type: ignore[attr-defined]
    await auto_end.publish_due()
    assert len(connector.commands.sent) == 1, "published once until its command has run"  # type: ignore[attr-defined]


async def test_a_registry_that_cannot_answer_is_waited_out(connector: FakeConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unavailable() -> None:
        raise RegistryUnavailable("schema registry at http://registry: ConnectError")

    monkeypatch.setattr(connector.codec, "start", unavailable)
    await AutoEnd(connector).publish_due()  # type: ignore[arg-type]
    assert connector.commands.sent == []  # type: ignore[attr-defined]


async def test_a_rebalance_lets_the_timer_publish_again(connector: FakeConnector) -> None:
    """An end published before a rebalance may be run (or cancelled) by another worker: this one must not wait for it."""
    auto_end = AutoEnd(connector)  # type: ignore[arg-type]
    await auto_end.publish_due()
    auto_end.forget()
    await auto_end.publish_due()
    assert [key for key, _ in connector.commands.sent] == [b"r1", b"r1"]  # type: ignore[attr-defined]
