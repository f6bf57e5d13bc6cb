"""`connector events tail` lines: one JSON object, or a short line for people."""

from __future__ import annotations

import datetime
import json

from connector.tail import format_line

RECORD = {
    "event_id": "e-1",
    "event_type": "MESSAGE",
    "conversation_id": "c-1",
    "conversation_ref": "order-42",
    "timestamp": datetime.datetime(2026, 11, 25, 14, 43, 1, 325000, tzinfo=datetime.timezone.utc),
    "agent_name": "Ben 2",
    "text": "How can I help?",
    "is_echo": False,
}


def test_json_lines_carry_epoch_milliseconds() -> None:
    line = json.loads(format_line(RECORD, as_json=True))
    assert line["timestamp"] == 1795617781325 and line["conversation_ref"] == "order-42"


def test_human_lines_say_when_who_and_what() -> None:
    assert format_line(RECORD, as_json=False) == "14:43:01.325 order-42 MESSAGE             Ben 2 How can I help?"
    unmapped = {**RECORD, "conversation_ref": None, "is_echo": True}
    assert format_line(unmapped, as_json=False).startswith("14:43:01.325 8x8:c-1 MESSAGE")
    assert format_line(unmapped, as_json=False).endswith("(echo)")
