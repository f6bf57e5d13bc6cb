"""When a conversation is deleted: the pure rules of `connector.retention`."""

from __future__ import annotations

import pytest

from connector.retention import expired, last_change, sweep_interval
from connector.conversation import Conversation, Status

DAY_MS = 24 * 3600 * 1000
T0 = 1_700_000_000_000


def entry(status: Status, updated_at: int = T0, **fields) -> dict:
    return Conversation(ref="r1", status=status, created_at=T0 - DAY_MS, updated_at=updated_at, **fields).to_dict()


@pytest.mark.parametrize("status", [Status.ENDED, Status.FAILED])
def test_an_ended_or_failed_conversation_expires_the_retention_time_after_its_last_change(status):
    value = entry(status)
    assert not expired(value, T0 + 7 * DAY_MS - 1, 7 * 24 * 3600)
    assert expired(value, T0 + 7 * DAY_MS, 7 * 24 * 3600)


@pytest.mark.parametrize("status", [Status.CREATING, Status.QUEUED, Status.AGENT_JOINED, Status.AGENT_LEFT, Status.TRANSFERRING])
def test_a_conversation_still_going_never_expires(status):
    assert not expired(entry(status), T0 + 365 * DAY_MS, 0)


def test_with_retention_zero_an_ended_conversation_expires_at_once():
    assert expired(entry(Status.ENDED), T0, 0)


def test_no_entry_is_not_expired():
    assert not expired(None, T0, 0)
    assert not expired({}, T0, 0)


def test_a_result_remembered_later_counts_as_a_change():
    """A command answered for an ended conversation (refused: already ended) keeps it a while longer, so
    that the same command delivered again is answered the same way, not as for an unknown ref."""
    value = Conversation.from_dict(entry(Status.ENDED)).remember("c9", {"status": "FAILED", "processed_at": T0 + DAY_MS}).to_dict()
    assert last_change(value) == T0 + DAY_MS
    assert not expired(value, T0 + DAY_MS + 1000, 60)
    assert expired(value, T0 + DAY_MS + 60_000, 60)


def test_ended_at_counts_as_a_change():
    value = entry(Status.ENDED, updated_at=T0, ended_at=T0 + 5000)
    assert last_change(value) == T0 + 5000


def test_sweeps_come_every_twentieth_of_the_retention_between_a_second_and_ten_minutes():
    assert sweep_interval(0) == 1.0
    assert sweep_interval(200) == 10.0
    assert sweep_interval(7 * 24 * 3600) == 600.0

