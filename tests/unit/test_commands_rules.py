"""The pure parts of the command agent: parsing, the rules, the create request, auto-end, remembered results."""

from __future__ import annotations

import pytest

from connector.auto_end import auto_end_due
from connector.command import Command, new_conversation, parse_command, refusal
from connector.results import recalled, remembered
from connector.eightbyeight import InvalidCommand
from connector.conversation import CommandKind, Conversation, Status, check_command

NS = "io.kafka8x8.chat"


def _record(kind: str, body: dict, ref: str = "r-1", command_id: str = "c-1") -> dict:
    return {"command_id": command_id, "conversation_ref": ref, "created_at": 0, "command": (f"{NS}.{kind}", body)}


def test_parse_command_kinds() -> None:
    command = parse_command(_record("SendMessage", {"text": "hi", "author_type": "USER"}), "r-1")
    assert command.kind is CommandKind.SEND_MESSAGE and command.ref == "r-1" and command.body["text"] == "hi"
    assert parse_command(_record("FetchTranscript", {"include_raw": True}), "r-1").kind is CommandKind.FETCH_TRANSCRIPT


@pytest.mark.parametrize(
    ("record", "key", "reason"),
    [
        (_record("EndConversation", {}, command_id=""), "r-1", "command_id is empty"),
        (_record("EndConversation", {}, ref=" "), " ", "conversation_ref is empty"),
        (_record("EndConversation", {}), "r-2", "the key must be the ref"),
        (_record("EndConversation", {}), None, "the key must be the ref"),
    ],
)
def test_invalid_commands(record, key, reason) -> None:
    with pytest.raises(InvalidCommand, match=reason):
        parse_command(record, key)


def test_start_becomes_the_create_request() -> None:
    body = {
        "customer": {"name": "Ann", "email": "a@x.io", "properties": {"tier": "gold"}, "phone": None},
        "channel_id": None,
        "assignment": (f"{NS}.Assignment", {"type": "SCRIPT", "id": "7"}),
        "history": [{"text": "earlier", "author_type": "BOT"}],
    }
    request = new_conversation(parse_command(_record("StartConversation", body), "r-1"), "default-channel")
    assert request.channel_id == "default-channel" and request.name == "Ann" and request.email == "a@x.io"
    assert request.assignment == ("script", "7") and request.history == [("earlier", "bot")]
    assert request.stamped_properties() == {"tier": "gold", "connectorRef": "r-1"}


def test_auto_end_due() -> None:
    left = Conversation(ref="r", status=Status.AGENT_LEFT, conversation_id="c", agent_left_at=1_000)
    assert not auto_end_due(left, 5_000, 0)  # policy off
    assert not auto_end_due(left, 5_000, 10)
    assert auto_end_due(left, 11_000, 10)
    wrote = Conversation(ref="r", status=Status.AGENT_LEFT, conversation_id="c", agent_left_at=1_000, last_customer_message_at=2_000)
    assert not auto_end_due(wrote, 60_000, 10)
    transferring = Conversation(ref="r", status=Status.TRANSFERRING, conversation_id="c", agent_left_at=1_000)
    assert not auto_end_due(transferring, 60_000, 10)


def test_rule_codes_and_reasons() -> None:
    active = Conversation(ref="r", status=Status.QUEUED, conversation_id="c")
    ended = Conversation(ref="r", status=Status.ENDED, conversation_id="c")
    cases = [
        (None, CommandKind.SEND_MESSAGE, "NOT_STARTED"),
        (None, CommandKind.END_CONVERSATION, "NOT_STARTED"),
        (active, CommandKind.START_CONVERSATION, "ALREADY_ACTIVE"),
        (ended, CommandKind.START_CONVERSATION, "ENDED"),
        (ended, CommandKind.SEND_MESSAGE, "ENDED"),
        (Conversation(ref="r", status=Status.FAILED), CommandKind.SEND_MESSAGE, "NOT_STARTED"),
    ]
    for existing, kind, code in cases:
        refused = check_command(existing, kind)
        assert refused is not None and refused[0] == code and refused[1], (existing, kind)
    assert check_command(active, CommandKind.SEND_MESSAGE) is None
    assert check_command(ended, CommandKind.FETCH_TRANSCRIPT) is None
    assert check_command(Conversation(ref="r", status=Status.CREATING), CommandKind.SEND_MESSAGE)[0] == "STILL_CREATING"


def test_a_start_whose_create_got_no_id_resumes() -> None:
    start = Command("c-1", "r", CommandKind.START_CONVERSATION, {})
    assert refusal(start, Conversation(ref="r", status=Status.CREATING)) is None
    assert refusal(start, Conversation(ref="r", status=Status.CREATING, conversation_id="x"))[0] == "ALREADY_ACTIVE"
    # Its events may have moved it on already (read again after a crash between the create and its result).
    assert refusal(start, Conversation(ref="r", status=Status.QUEUED)) is None
    assert refusal(start, Conversation(ref="r", status=Status.AGENT_JOINED)) is None
    assert refusal(start, Conversation(ref="r", status=Status.QUEUED, conversation_id="x"))[0] == "ALREADY_ACTIVE"


def test_remembered_results_are_compact_and_complete_again() -> None:
    result = {
        "command_id": "c-1",
        "conversation_ref": "r-1",
        "command_type": "SEND_MESSAGE",
        "status": "SUCCEEDED",
        "conversation_id": "x",
        "generation": "chat-api-v2",
        "http_status": None,
        "error_code": None,
        "error_message": None,
        "attempts": 1,
        "duplicate": False,
        "processed_at": 5,
    }
    stored = remembered(result, 7)
    assert set(stored) == {"command_type", "status", "conversation_id", "generation", "attempts", "processed_at", "offset"}
    assert stored["offset"] == 7, "the offset of the record it answered: a replay of that record asks the results topic"
    assert recalled("r-1", "c-1", stored) == result


def test_settings_come_from_the_one_settings_class(monkeypatch) -> None:
    from connector.config import load_settings
    from connector.eightbyeight import RetryPolicy

    monkeypatch.setenv("CONNECTOR_COMMAND_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("CONNECTOR_COMMAND_BACKOFF_CAP_S", "2.5")
    policy = RetryPolicy.from_settings(load_settings())
    assert policy.max_attempts == 9 and policy.backoff_cap_s == 2.5 and policy.max_total_s == 30.0
