"""Attachments, cards, typing and read receipts as commands, on the real broker against the sandbox.

Chat Gateway: a SendMessage's file (its bytes, or fetched from a URL) is uploaded, the message refers to
it and the agent's side holds it; cards travel with it; SetTyping and MarkRead reach 8x8. Chat API v2 has
none of these: each gets a FAILED result UNSUPPORTED_BY_GENERATION naming the generation, and 8x8 is not
asked. `connector send message --attach` and `send typing` publish the same commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.client import Attachment
from tests.commands.conftest import Results

pytestmark = pytest.mark.kafka

PDF = b"%PDF-1.4 the invoice\r\n\x00\xff"
CARD = ("application/8x8.quick.replies", {"options": [{"title": "Yes", "data": {"postback": "yes"}}]})


def test_gateway_sends_files_cards_typing_and_read_receipts(
    start_sandbox, connector_env, start_worker, publisher_for, readers, tmp_path: Path
) -> None:
    sandbox = start_sandbox("--exchanges", "0")  # the agent stays
    # The sandbox serves its pre-signed URLs on 127.0.0.1, which the worker refuses unless allowed.
    env = connector_env(sandbox, "chat-gateway-v1", command_attachment_allowed_networks="127.0.0.0/8")
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"files-{uuid.uuid4().hex[:8]}"
    started = publisher.start(ref, name="Ann")
    publisher.flush()
    results.wait_for([started], 30)
    conversation_id = results.final(started)["conversation_id"]

    with_file = publisher.message(
        ref, "the invoice", attachments=[Attachment("invoice.pdf", "application/pdf", data=PDF)], cards=[CARD]
    )
    typing = publisher.typing(ref)
    stopped = publisher.typing(ref, active=False)
    publisher.flush()
    by_id = results.wait_for([with_file, typing, stopped], 30)
    for command_id in (with_file, typing, stopped):
        assert by_id[command_id][0]["status"] == "SUCCEEDED", by_id[command_id]
    assert by_id[stopped][0]["attempts"] == 0  # nothing to send for a stop

    seen = _wait(lambda: _conversation_with(sandbox, conversation_id, lambda c: any(m["attachments"] for m in c["messages"])))
    (sent,) = [m for m in seen["messages"] if m["attachments"]]
    assert sent["text"] == "the invoice" and sent["cards"] == [{"contentType": CARD[0], "content": CARD[1]}]
    (attachment,) = sent["attachments"]
    assert attachment["fileName"] == "invoice.pdf" and attachment["type"] == "application/pdf"
    assert httpx.get(attachment["preSignedUrl"]).content == PDF
    assert [a["name"] for a in seen["activity"]] == ["typing"]

    # A file by URL (the one just uploaded, from the sandbox's pre-signed URL), and a read receipt of the agent's greeting.
    greeting = next(m for m in seen["messages"] if m["author_type"] == "agent")
    by_url = publisher.message(ref, "", attachments=[Attachment("again.pdf", "application/pdf", url=attachment["preSignedUrl"])])
    read = publisher.mark_read(ref, greeting["id"])
    publisher.flush()
    by_id = results.wait_for([by_url, read], 30)
    assert by_id[by_url][0]["status"] == "SUCCEEDED" and by_id[read][0]["status"] == "SUCCEEDED", (by_id[by_url][0]["error_message"], by_id[read])
    seen = _wait(lambda: _conversation_with(sandbox, conversation_id, lambda c: len(c["activity"]) == 2))
    again = [a for m in seen["messages"] for a in m["attachments"] if a["fileName"] == "again.pdf"]
    assert len(again) == 1 and httpx.get(again[0]["preSignedUrl"]).content == PDF
    assert seen["activity"][1]["name"] == "read-receipt" and seen["activity"][1]["readAt"] == greeting["created_ms"]

    # A URL that does not answer, one on an internal address, and a card that is not JSON: FAILED with the
    # reason (never the URL's query), nothing sent.
    uploads = _count(sandbox, "addconversationattachments")
    missing = publisher.message(ref, "x", attachments=[Attachment("gone.pdf", "application/pdf", url=f"{sandbox.url}/nothing-here")])
    metadata = "http://169.254.169.254/latest/meta-data/?X-Amz-Signature=secret"
    internal = publisher.message(ref, "x", attachments=[Attachment("creds.txt", "text/plain", url=metadata)])
    bad_card = publisher.publish(ref, "SendMessage", {"text": "x", "cards": [{"content_type": "Buttons", "content_json": "{"}]})
    publisher.flush()
    by_id = results.wait_for([missing, internal, bad_card], 30)
    assert by_id[missing][0]["error_code"] == "ATTACHMENT_UNAVAILABLE" and "gone.pdf" in by_id[missing][0]["error_message"]
    refused = by_id[internal][0]
    assert refused["status"] == "FAILED" and refused["error_code"] == "ATTACHMENT_UNAVAILABLE", refused
    assert "169.254.169.254 is not a public address" in refused["error_message"] and "secret" not in refused["error_message"]
    assert by_id[bad_card][0]["error_code"] == "INVALID_COMMAND" and "cards[0]" in by_id[bad_card][0]["error_message"]
    assert _count(sandbox, "addconversationattachments") == uploads

    # The CLI: send message --attach, send typing --off.
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n1,2\n")
    for args in (["message", "--ref", ref, "--attach", str(report)], ["typing", "--ref", ref, "--off"]):
        done = subprocess.run(
            [sys.executable, "-m", "connector", "send", *args, "--wait", "--timeout", "30"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=90,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["status"] == "SUCCEEDED"
    seen = sandbox.conversation(conversation_id)
    assert any(a["fileName"] == "report.csv" and a["type"] == "text/csv" for m in seen["messages"] for a in m["attachments"])

    # The transcript carries the files (name, type, pre-signed URL) and the card.
    transcripts = readers(env["CONNECTOR_TOPIC_TRANSCRIPTS"], env, "ConversationTranscript")
    fetched = publisher.fetch_transcript(ref)
    publisher.flush()
    results.wait_for([fetched], 30)
    _wait(lambda: transcripts.poll(0.3) or None)
    (transcript,) = transcripts.records
    files = {a["file_name"]: a for m in transcript["messages"] for a in m["attachments"]}
    assert {"invoice.pdf", "again.pdf", "report.csv"} <= files.keys()
    assert files["invoice.pdf"]["content_type"] == "application/pdf" and httpx.get(files["invoice.pdf"]["url"]).content == PDF
    (with_card,) = [m for m in transcript["messages"] if m["cards"] and m["author_type"] == "user"]
    assert with_card["text"] == "the invoice" and json.loads(with_card["cards"][0]["content_json"]) == CARD[1]


def test_chat_api_v2_refuses_them_without_asking_8x8(start_sandbox, connector_env, start_worker, publisher_for, readers) -> None:
    sandbox = start_sandbox("--exchanges", "0")
    env = connector_env(sandbox, "chat-api-v2")
    start_worker(env)
    publisher = publisher_for(env)
    results: Results = readers(Results, env)
    ref = f"v2-{uuid.uuid4().hex[:8]}"
    started = publisher.start(ref, name="Ann")
    publisher.flush()
    results.wait_for([started], 30)
    before = len(sandbox.requests())
    refused = [
        publisher.message(ref, "x", attachments=[Attachment("a.txt", "text/plain", data=b"a")]),
        publisher.message(ref, "x", cards=[CARD]),
        publisher.typing(ref),
        publisher.mark_read(ref, "m-1"),
    ]
    fine = publisher.message(ref, "plain text still works")
    publisher.flush()
    by_id = results.wait_for([*refused, fine], 30)
    for command_id, feature in zip(refused, ("attachments", "cards", "typing indicators", "read receipts")):
        (result,) = by_id[command_id]
        assert result["status"] == "FAILED" and result["error_code"] == "UNSUPPORTED_BY_GENERATION", result
        assert "chat-api-v2" in result["error_message"] and feature in result["error_message"]
    assert by_id[fine][0]["status"] == "SUCCEEDED"
    after = [r for r in sandbox.requests()[before:] if r["method"] != "GET" and "oauth" not in r["path"]]
    assert [r["body"]["text"] for r in after] == ["plain text still works"]


def _conversation_with(sandbox, conversation_id: str, check) -> dict[str, Any] | None:
    seen = sandbox.conversation(conversation_id)
    return seen if check(seen) else None


def _count(sandbox, operation: str) -> int:
    return sum(1 for r in sandbox.requests() if r["operation"] == operation)


def _wait(find, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found is not None:
            return found
        time.sleep(0.2)
    pytest.fail("never happened")
