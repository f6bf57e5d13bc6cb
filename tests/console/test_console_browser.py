"""The console in a real headless Chromium, with a worker on the real broker: someone watches a
conversation the connector starts, plays the agent, and the connector sees what they did."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tests.console.conftest import Browser

pytestmark = pytest.mark.kafka


def connector(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The `connector` command with the test's environment."""
    return subprocess.run([sys.executable, "-m", "connector", *args], env=env, capture_output=True, text=True, timeout=timeout)


def chat_events(env: dict[str, str], until: Any, timeout: float = 40.0) -> list[dict[str, Any]]:
    """`connector events tail --json` from the beginning, again until `until(events)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        tailed = connector(env, "events", "tail", "--json", "--from-beginning", "--timeout", "2")
        assert tailed.returncode == 0, tailed.stderr
        events = [json.loads(line) for line in tailed.stdout.splitlines()]
        if until(events) or time.monotonic() > deadline:
            return events


def status_of(browser: Browser, conversation_id: str) -> str:
    return browser.text(f'#conversations tr[data-conversation-id="{conversation_id}"] .status')


def test_watch_a_conversation_and_play_the_agent(start_sandbox, connector_env, start_worker, browser: Browser) -> None:
    # One agent, whose script would take an hour to accept: the conversation stays queued until taken.
    sandbox = start_sandbox("--agents", "1", "--accept-delay", "3600")
    env = connector_env(sandbox, "chat-api-v2")
    start_worker(env)
    ref = f"web-{uuid.uuid4().hex[:8]}"

    browser.open(sandbox.url)
    browser.wait_for(lambda: browser.text("#live") == "Live", "its live stream connected")
    browser.step("console")

    started = connector(env, "send", "start", "--ref", ref, "--name", "Ada Lovelace", "--text", "Where is my parcel?", "--wait")
    assert started.returncode == 0, started.stderr
    conversation_id = json.loads(started.stdout.splitlines()[0])["conversation_id"]
    browser.wait_for(lambda: status_of(browser, conversation_id) == "QUEUED", "the new conversation, queued")
    row = browser.find(f'#conversations tr[data-conversation-id="{conversation_id}"]')
    assert "Ada Lovelace" in row.text and ref in row.text and "v2" in row.text
    browser.step("queued")

    assert len(browser.driver.find_elements("css selector", "#agents tr[data-agent-id]")) == 1
    browser.click("#agents tr[data-agent-id] button", "Take over")
    browser.wait_for(lambda: "you" in browser.text("#agents tr[data-agent-id]"), "the agent played by a person")
    accept = f'#queues button[data-key="accept-{conversation_id}"]'
    browser.wait_for(lambda: browser.find(accept).is_enabled(), "the conversation waiting in its queue, ready to accept")
    browser.step("taken-over")

    browser.click(accept, "Accept")
    browser.wait_for(lambda: status_of(browser, conversation_id) == "AGENT_JOINED", "the agent joined")
    browser.wait_for(lambda: browser.find("#agent-controls").is_displayed(), "the agent's controls")
    assert "Where is my parcel?" in browser.text("#timeline")
    browser.step("accepted")

    reply = "It left our warehouse this morning."
    browser.find("#text").send_keys(reply + "\n")  # Enter sends
    browser.wait_for(lambda: reply in browser.text("#timeline .message.from-agent"), "the agent's message in the timeline")
    browser.wait_for(lambda: "delivered" in browser.text('#timeline .webhook[data-event-type="TEXT"]'), "its webhook delivered")
    browser.step("replied")

    def agent_message(events: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((e for e in events if e["event_type"] == "MESSAGE" and e["text"] == reply), None)

    message = agent_message(chat_events(env, agent_message))
    assert message is not None, "connector events tail never showed the agent's message"
    assert message["conversation_ref"] == ref and message["sender_type"] == "agent" and message["agent_name"] == "Ada 1"

    browser.click("#leave", "Leave the interaction")
    browser.wait_for(lambda: status_of(browser, conversation_id) == "AGENT_LEFT", "the conversation's status AGENT_LEFT")
    browser.wait_for(lambda: browser.text('#timeline .webhook[data-event-type="AGENT_LEFT"]'), "the AGENT_LEFT webhook")
    assert "free" in browser.text("#agents tr[data-agent-id]")
    browser.step("left")
    left = chat_events(env, lambda events: any(e["event_type"] == "AGENT_LEFT" for e in events))
    assert [e["conversation_ref"] for e in left if e["event_type"] == "AGENT_LEFT"] == [ref]


def test_gateway_attachment_card_typing_read_receipt_transfer_and_faults(
    start_sandbox, connector_env, start_worker, browser: Browser, tmp_path
) -> None:
    sandbox = start_sandbox("--agents", "1", "--accept-delay", "3600")
    env = connector_env(sandbox, "chat-gateway-v1")
    start_worker(env)
    ref = f"web-{uuid.uuid4().hex[:8]}"
    browser.open(sandbox.url)
    browser.wait_for(lambda: browser.text("#live") == "Live", "its live stream connected")

    # Faults as a form, applied at once: a third of the webhook delivery attempts fail (and are retried).
    browser.find("#fault-delivery-rate_fail").send_keys("0.3")
    browser.find('#faults button[type="submit"]').click()
    browser.wait_for(lambda: browser.text("#notice") == "Faults applied.", "the faults applied")
    assert sandbox.http.get("/_sandbox/faults").json()["delivery"]["rate_fail"] == 0.3
    browser.step("faults")

    browser.click("#agents tr[data-agent-id] button", "Take over")  # before anything waits
    browser.wait_for(lambda: "you" in browser.text("#agents tr[data-agent-id]"), "the agent played by a person")
    started = connector(env, "send", "start", "--ref", ref, "--name", "Grace Hopper", "--wait")
    assert started.returncode == 0, started.stderr
    conversation_id = json.loads(started.stdout)["conversation_id"]
    browser.click(f'#conversations button[data-key="open-{conversation_id}"]', "the conversation")
    browser.wait_for(lambda: browser.find("#accept").is_displayed(), "Accept")
    browser.click("#accept", "Accept")
    browser.wait_for(lambda: browser.find("#gateway-controls").is_displayed(), "the Chat Gateway controls")

    browser.find("#typing-on").click()
    browser.wait_for(lambda: browser.text("#notice") == "Typing shown.", "typing shown")
    browser.find("#typing-off").click()
    browser.wait_for(lambda: browser.text("#notice") == "Typing stopped.", "typing stopped")
    browser.find("#read").click()
    browser.wait_for(lambda: browser.text("#notice") == "Read receipt sent.", "the read receipt sent")
    invoice = tmp_path / "invoice.txt"
    invoice.write_text("Invoice 42: one parcel, paid.")
    browser.find("#file").send_keys(str(invoice))
    browser.find('#attach button[type="submit"]').click()
    browser.wait_for(lambda: "Attachment: invoice.txt" in browser.text("#timeline"), "the attachment in the timeline")
    browser.click("#gateway-controls summary", "Send a card")
    browser.click('#card button[type="submit"]', "Send card")  # the sample adaptive card
    browser.wait_for(lambda: "Card: application/vnd.microsoft.card.adaptive" in browser.text("#timeline"), "the card")
    browser.step("attachment-and-card")

    browser.find("#queue").send_keys("202\n")
    browser.wait_for(lambda: status_of(browser, conversation_id) == "TRANSFERRING", "the conversation transferring")
    browser.click(f'#queues li[data-queue-id="202"] button[data-key="accept-{conversation_id}"]', "it in queue 202")
    browser.wait_for(lambda: status_of(browser, conversation_id) == "AGENT_JOINED", "the agent joined again")
    browser.wait_for(lambda: "sandbox fault: attempt not made" in browser.text("#timeline"), "a failed attempt in the timeline")
    browser.step("transferred")

    def complete(events: list[dict[str, Any]]) -> bool:
        mine = [e for e in events if e["conversation_ref"] == ref]
        return sum(e["event_type"] == "AGENT_JOINED" for e in mine) == 2

    events = [e for e in chat_events(env, complete) if e["conversation_ref"] == ref]
    activities = [(e["activity_name"], json.loads(e["activity_value_json"])) for e in events if e["event_type"] == "ACTIVITY"]
    agent_id = sandbox.info()["agents"][0]["id"]
    assert activities[:2] == [("typing", {"users": [agent_id]}), ("typing", {"users": []})]
    assert activities[2][0] == "read-receipts" and activities[2][1]["users"] == [agent_id]
    messages = [e for e in events if e["event_type"] == "MESSAGE" and e["sender_type"] == "agent"]
    (attachment,) = json.loads(messages[0]["attachments_json"])
    assert attachment["fileName"] == "invoice.txt" and attachment["type"] == "text/plain"
    assert sandbox.http.get(attachment["preSignedUrl"]).text == "Invoice 42: one parcel, paid."
    (card,) = json.loads(messages[1]["cards_json"])
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive" and card["content"]["type"] == "AdaptiveCard"
    assert [e["event_type"] for e in events if e["event_type"] in ("TRANSFER", "AGENT_LEFT", "AGENT_JOINED")] == [
        "AGENT_JOINED", "TRANSFER", "AGENT_LEFT", "AGENT_JOINED",
    ]
