"""Counting a conversation's 8x8 interactions from its events: the pure rules, and the replay guard of the entry."""

from __future__ import annotations

import pytest

from connector.conversation import (
    CommandKind,
    Interaction,
    Phase,
    after_command,
    after_event,
    next_interaction,
)
from connector.events import RECENT_CHANGES, counted

T0 = 1_700_000_000_000


def counts(*event_types: str) -> list[int]:
    """The interaction count of each event of a conversation, from its first."""
    interaction, found = None, []
    for event_type in event_types:
        interaction = next_interaction(interaction, event_type)
        found.append(interaction.count)
    return found


@pytest.mark.parametrize("first", ["QUEUED", "AGENT_JOINED", "MESSAGE", "CONVERSATION_UPDATE", "AGENT_LEFT", "UNKNOWN"])
def test_the_first_event_of_a_conversation_belongs_to_the_first_interaction(first: str) -> None:
    assert counts(first) == [1]


def test_after_the_agent_left_the_next_queued_opens_the_next_interaction_and_its_agent_joins_it() -> None:
    assert counts("QUEUED", "AGENT_JOINED", "MESSAGE", "AGENT_LEFT", "MESSAGE", "QUEUED", "AGENT_JOINED", "AGENT_LEFT") == [
        1, 1, 1, 1, 1, 2, 2, 2
    ]


def test_an_agent_joining_after_the_agent_left_opens_the_next_interaction_without_a_queued() -> None:
    assert counts("AGENT_JOINED", "AGENT_LEFT", "AGENT_JOINED", "QUEUED") == [1, 1, 2, 2]


def test_a_transfer_does_not_open_an_interaction() -> None:
    assert counts("QUEUED", "AGENT_JOINED", "TRANSFER", "AGENT_LEFT", "QUEUED", "AGENT_JOINED") == [1] * 6
    # Once the next agent joined, their leaving is an end again.
    assert counts("AGENT_JOINED", "TRANSFER", "AGENT_LEFT", "AGENT_JOINED", "AGENT_LEFT", "QUEUED")[-1] == 2


def test_phases() -> None:
    left = next_interaction(Interaction(3, Phase.OPEN), "AGENT_LEFT")
    assert left == Interaction(3, Phase.LEFT)
    assert next_interaction(left, "MESSAGE") == left  # the customer's message itself belongs to the last one
    assert next_interaction(left, "TRANSFER") == Interaction(3, Phase.TRANSFERRING)
    assert next_interaction(Interaction(3, Phase.TRANSFERRING), "QUEUED") == Interaction(3, Phase.TRANSFERRING)


@pytest.mark.parametrize(
    "events",
    [
        ["QUEUED", "AGENT_JOINED", "AGENT_LEFT", "reopen", "QUEUED", "AGENT_JOINED", "AGENT_LEFT", "reopen", "QUEUED"],
        ["QUEUED", "AGENT_JOINED", "TRANSFER", "AGENT_LEFT", "QUEUED", "AGENT_JOINED", "AGENT_LEFT", "reopen", "QUEUED"],
        ["QUEUED", "AGENT_JOINED", "TRANSFER", "AGENT_LEFT", "reopen", "AGENT_JOINED"],
    ],
)
def test_the_count_agrees_with_the_status_machine(events: list[str]) -> None:
    """The command side counts a customer message after the agent left ("reopen"); the events count its QUEUED."""
    conversation = after_command(None, CommandKind.START_CONVERSATION, T0, ref="r1", conversation_id="c1")
    interaction = None
    for n, event in enumerate(events):
        if event == "reopen":
            conversation = after_command(conversation, CommandKind.SEND_MESSAGE, T0 + n)
        else:
            conversation = after_event(conversation, event, T0 + n)
            interaction = next_interaction(interaction, event)
    assert interaction.count == conversation.interaction_count


# --- the entry and its replay guard -----------------------------------------------------------------


def test_an_entry_is_written_only_when_the_interaction_changes() -> None:
    count, entry = counted(None, "e1", "QUEUED", 3, T0)
    assert count == 1 and entry == {"count": 1, "phase": "OPEN", "partition": 3, "at": T0, "recent": [["e1", 1]]}
    assert counted(entry, "e2", "MESSAGE", 3, T0 + 1) == (1, None)
    count, left = counted(entry, "e3", "AGENT_LEFT", 3, T0 + 2)
    assert count == 1 and (left["phase"], left["at"], left["recent"]) == ("LEFT", T0 + 2, [["e1", 1], ["e3", 1]])
    count, reopened = counted(left, "e4", "QUEUED", 3, T0 + 3)
    assert count == 2 and reopened["count"] == 2 and reopened["phase"] == "OPEN"


def test_an_event_that_changed_the_entry_counts_once_when_it_comes_again() -> None:
    """A worker stopped after the write and before the event was published: the replay gets the same count."""
    _, entry = counted(None, "e1", "AGENT_JOINED", 0, T0)
    _, entry = counted(entry, "e2", "AGENT_LEFT", 0, T0)
    _, entry = counted(entry, "e3", "QUEUED", 0, T0)
    assert counted(entry, "e3", "QUEUED", 0, T0 + 1) == (2, None)
    assert counted(entry, "e2", "AGENT_LEFT", 0, T0 + 1) == (1, None)  # an earlier one too, whose copy was lost
    assert entry["count"] == 2


def test_an_entry_remembers_the_last_few_events_that_changed_it() -> None:
    entry = None
    for n in range(2 * RECENT_CHANGES):
        _, entry = counted(entry, f"e{n}", "AGENT_LEFT" if n % 2 else "QUEUED", 0, T0)
    assert [event_id for event_id, _ in entry["recent"]] == [f"e{n}" for n in range(RECENT_CHANGES, 2 * RECENT_CHANGES)]
    assert entry["count"] == RECENT_CHANGES
