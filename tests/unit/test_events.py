"""The pure normaliser: every event type of both generations into one ChatEvent shape."""

from __future__ import annotations

import json

import fastavro
import pytest

from connector.normalise import NormaliseError, event_id_of, event_key, is_echo, normalise, parse
from connector.schemas import load_schema

V2, GW = "chat-api-v2", "chat-gateway-v1"
RECEIVED = 1_700_000_000_500
CHAT_EVENT = fastavro.parse_schema(load_schema("ChatEvent"))


def run(event: dict, generation: str, ref: str | None = "ref-1") -> dict:
    body = json.dumps(event).encode()
    record = normalise(
        parse(body), body.decode(), generation=generation, event_id="e1", received_at=RECEIVED, tenant_id="t", conversation_ref=ref
    )
    fastavro.validate(record, CHAT_EVENT, raise_errors=True)
    assert record["raw_json"] == body.decode()
    assert (record["event_id"], record["generation"], record["received_at"]) == ("e1", generation, RECEIVED)
    return record


def base(event_type: str, **fields) -> dict:
    return {"eventType": event_type, "conversationId": "c1", "timestamp": 1_700_000_000_000, **fields}


def subset(record: dict, **expected) -> None:
    assert {name: record[name] for name in expected} == expected


# --- Chat API v2 -------------------------------------------------------------------------------


def test_v2_queued():
    record = run(base("QUEUED", messageType="SYSTEM", queueId=101, queueName="Sales"), V2)
    subset(record, event_type="QUEUED", raw_event_type="QUEUED", conversation_id="c1", conversation_ref="ref-1",
           timestamp=1_700_000_000_000, queue_id="101", queue_name="Sales", tenant_id="t", is_echo=False)


@pytest.mark.parametrize("event_type", ["AGENT_JOINED", "AGENT_LEFT"])
def test_v2_agent_joined_and_left(event_type):
    record = run(base(event_type, messageType="SYSTEM", agentId="a7", agentName="Ann"), V2)
    subset(record, event_type=event_type, agent_id="a7", agent_name="Ann", member_type=None)


def test_v2_transfer():
    subset(run(base("TRANSFER", messageType="SYSTEM"), V2), event_type="TRANSFER", agent_id=None)


def test_v2_text_is_a_message_from_the_agent():
    record = run(base("TEXT", messageType="AGENT", agentId="a7", agentName="Ann", message="Hello"), V2)
    subset(record, event_type="MESSAGE", raw_event_type="TEXT", text="Hello", sender_type="agent", sender_id="a7",
           agent_id="a7", agent_name="Ann", is_echo=False)


def test_v2_unknown_type_and_fields_are_kept():
    event = base("SURVEY_DONE", messageType="SYSTEM", score=5, nested={"a": [1]})
    record = run(event, V2)
    subset(record, event_type="UNKNOWN", raw_event_type="SURVEY_DONE", conversation_id="c1")
    assert json.loads(record["raw_json"]) == event


def test_v2_extra_fields_on_a_known_type_are_kept_in_raw_json():
    event = base("QUEUED", messageType="SYSTEM", queueId="1", priority="high")
    assert json.loads(run(event, V2)["raw_json"])["priority"] == "high"


# --- Chat Gateway v1 ---------------------------------------------------------------------------


def test_gateway_queued():
    record = run(base("QUEUED", data={"queueId": "101", "queueName": "Sales"}), GW)
    subset(record, event_type="QUEUED", queue_id="101", queue_name="Sales", generation=GW)


@pytest.mark.parametrize("change, expected", [("joined", "AGENT_JOINED"), ("left", "AGENT_LEFT")])
def test_gateway_agent_membership_becomes_agent_joined_or_left(change, expected):
    record = run(base("MEMBERS_CHANGED", data={"memberType": "agent", "change": change, "id": "a7"}), GW)
    subset(record, event_type=expected, raw_event_type="MEMBERS_CHANGED", agent_id="a7",
           member_type="agent", member_change=change)


@pytest.mark.parametrize("member_type, change", [("user", "left"), ("bot", "joined"), ("agent", "muted")])
def test_gateway_other_membership_stays_members_changed(member_type, change):
    record = run(base("MEMBERS_CHANGED", data={"memberType": member_type, "change": change, "id": "x"}), GW)
    subset(record, event_type="MEMBERS_CHANGED", member_type=member_type, member_change=change, agent_id=None)


def test_gateway_transfer_without_data():
    subset(run(base("TRANSFER"), GW), event_type="TRANSFER")


def test_gateway_agent_message_with_attachments_and_cards():
    attachments = [{"id": "f1", "type": "image/png", "preSignedUrl": "https://x/f1", "fileName": "a.png"}]
    cards = [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {"body": []}}]
    data = {"isEcho": False, "sender": {"id": "a7", "type": "agent"}, "text": "Hi", "attachments": attachments, "cards": cards}
    record = run(base("MESSAGE", data=data), GW)
    subset(record, event_type="MESSAGE", text="Hi", sender_id="a7", sender_type="agent", agent_id="a7", is_echo=False)
    assert json.loads(record["attachments_json"]) == attachments
    assert json.loads(record["cards_json"]) == cards
    assert record["attachments"] == [{"attachment_id": "f1", "file_name": "a.png", "content_type": "image/png", "url": "https://x/f1"}]
    assert record["cards"] == [
        {"card_id": None, "content_type": "application/vnd.microsoft.card.adaptive", "content_json": '{"body":[]}'}
    ]


def test_gateway_message_id_is_kept_for_read_receipts():
    data = {"id": "m-9", "isEcho": False, "sender": {"id": "a7", "type": "agent"}, "text": "Hi"}
    subset(run(base("MESSAGE", data=data), GW), message_id="m-9", attachments=[], cards=[])


def test_gateway_echo_of_our_own_message_is_recognised():
    data = {"isEcho": True, "sender": {"id": "u1", "type": "user"}, "text": "from us"}
    record = run(base("MESSAGE", data=data), GW)
    subset(record, event_type="MESSAGE", is_echo=True, sender_type="user", sender_id="u1", agent_id=None,
           text="from us", attachments_json=None, cards_json=None)
    assert is_echo(base("MESSAGE", data=data))
    assert not is_echo(base("MESSAGE", data={**data, "isEcho": False})) and not is_echo(base("ACTIVITY", data=data))


def test_gateway_conversation_update():
    data = {"state": "active", "assignment": {"type": "agent", "id": "a7", "resourceId": "r7"},
            "user": {"name": "Bo"}, "msisdn": "+1", "channel": "ch1"}
    record = run(base("CONVERSATION_UPDATE", data=data), GW)
    subset(record, event_type="CONVERSATION_UPDATE", conversation_state="active", assignment_type="agent",
           assignment_id="a7", assignment_resource_id="r7", channel_id="ch1", msisdn="+1")


def test_gateway_conversation_update_without_assignment():
    record = run(base("CONVERSATION_UPDATE", data={"state": "idle"}), GW)
    subset(record, conversation_state="idle", assignment_type=None)


@pytest.mark.parametrize(
    "name, value",
    [("typing", {"users": ["a7"]}), ("typing", {"users": []}), ("adaptiveCard/action", {"id": 1}),
     ("quickReply/action", {"text": "yes"}), ("read-receipts", {"messageIds": ["m1"]}), ("whatsapp/x", "v")],
)
def test_gateway_activity(name, value):
    record = run(base("ACTIVITY", data={"name": name, "value": value}), GW)
    subset(record, event_type="ACTIVITY", activity_name=name)
    assert json.loads(record["activity_value_json"]) == value


@pytest.mark.parametrize(
    "name, value, fields",
    [
        ("typing", {"users": ["a7"]}, {"typing": True, "activity_user_ids": ["a7"]}),
        ("typing", {"users": []}, {"typing": False, "activity_user_ids": []}),
        ("read-receipts", {"users": ["a7"], "readAt": 1_700_000_000_123}, {"read_at": 1_700_000_000_123, "activity_user_ids": ["a7"]}),
        ("quickReply/action", {"title": "Yes", "data": {"postback": "1"}}, {"action_title": "Yes", "action_data_json": '{"postback":"1"}'}),
        ("adaptiveCard/action", {"cardId": "k1", "data": {"ok": True}}, {"action_card_id": "k1", "action_data_json": '{"ok":true}'}),
        ("whatsapp/x", "v", {"typing": None, "read_at": None, "action_data_json": None}),
    ],
)
def test_gateway_activity_fields(name, value, fields):
    subset(run(base("ACTIVITY", data={"name": name, "value": value}), GW), **fields)


def test_gateway_unknown_type_is_kept():
    event = base("PARTICIPANT_MOOD", data={"mood": "happy"})
    record = run(event, GW)
    subset(record, event_type="UNKNOWN", raw_event_type="PARTICIPANT_MOOD")
    assert json.loads(record["raw_json"]) == event


# --- common --------------------------------------------------------------------------------------


def test_missing_timestamp_is_the_receive_time_and_iso_text_is_read():
    assert run({"eventType": "TRANSFER", "conversationId": "c1"}, V2)["timestamp"] == RECEIVED
    assert run(base("TRANSFER", timestamp="2023-11-14T22:13:20Z"), V2)["timestamp"] == 1_700_000_000_000


def test_no_conversation_and_no_type():
    record = run({"notificationVersion": "v2.0"}, V2, ref=None)
    subset(record, event_type="UNKNOWN", raw_event_type="", conversation_id=None, conversation_ref=None)


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'"text"'])
def test_non_objects_are_refused(body):
    with pytest.raises(NormaliseError):
        parse(body)


def test_key_is_the_conversation_id_else_the_event_id():
    assert event_key({"conversationId": "c9"}, "e1") == "c9"
    assert event_key({"conversationId": 9}, "e1") == "9"
    assert event_key({"eventType": "WEB_HOOK_VERIFY"}, "e1") == "e1"


def test_event_id_is_the_header_else_a_digest_of_the_body():
    assert event_id_of({"x-8x8-event-id": "e1"}, b"{}") == "e1"
    assert event_id_of({}, b"{}") == event_id_of({}, b"{}") != event_id_of({}, b"{ }")
