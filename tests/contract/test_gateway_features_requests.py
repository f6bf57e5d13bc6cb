"""Attachments, cards, typing indicators and read receipts: Chat Gateway's requests against its spec, v2's refusals.

The gateway adapter runs against the sandbox through a transport that checks every exchange against the
spec (the multipart upload included); the sandbox must then hold the message with its file and card,
and the worker's own aiohttp sender must make it do the same. Chat API v2 has none of these: its adapter refuses them without sending anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connector.config import Generation, load_settings
from connector.eightbyeight import Card, File, NewConversation, Platform, PlatformError, open_platform
from connector.sandbox import RunningSandbox, SandboxConfig, start_sandbox
from tests.contract.openapi_contract import CheckedTransport, Contract

PDF = b"%PDF-1.4\r\n--not-a-boundary\r\n\x00\xff binary"
CARD = Card("application/8x8.quick.replies", {"options": [{"title": "Yes", "data": {"postback": "1"}}]})


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox(
        SandboxConfig(port=0, webhook_url="http://127.0.0.1:9/hook", retry_max_attempts=1, agent_accept_delay_s=0.01)
    )
    yield running
    await running.stop()


def _platform(sandbox: RunningSandbox, generation: Generation, transport: httpx.AsyncBaseTransport | None) -> Platform:
    config = sandbox.sandbox.config
    settings = load_settings(
        platform_generation=generation,
        platform_base_url=sandbox.url,
        platform_allow_insecure_http=True,
        platform_tenant_id=config.tenant,
        platform_api_key=config.api_key,
        platform_api_secret=config.api_secret,
    )
    return open_platform(settings, transport=transport)


async def _flow(sandbox: RunningSandbox, transport: httpx.AsyncBaseTransport | None) -> tuple[list[Any], list[Any]]:
    """Create, send a file and a card, a file alone, type, read the last message; the operations 8x8 got
    (with their statuses) and the messages it holds from the integration (text, files, cards)."""
    platform = _platform(sandbox, Generation.CHAT_GATEWAY_V1, transport)
    channel = sandbox.info["chat-gateway-v1"]["channels"][0]
    conversation_id = await platform.create(NewConversation(ref="r-1", channel_id=channel, name="Ann"))
    await platform.send(conversation_id, "the invoice", "user", files=[File("invoice 1.pdf", "application/pdf", PDF)], cards=[CARD])
    await platform.send(conversation_id, "", "bot", files=[File("b.txt", "text/plain", b"b")])
    await platform.typing(conversation_id, "user")
    messages = await platform.messages(conversation_id)
    await platform.mark_read(conversation_id, messages[-1]["message_id"], "user")
    await platform.aclose()
    stored = sandbox.sandbox.store.conversations[conversation_id]
    assert [a["name"] for a in stored.activity] == ["typing", "read-receipt"]
    assert stored.activity[1]["readAt"] == messages[-1]["created_at"]
    for file in stored.files.values():
        assert (file.name, file.content_type, file.data) in (("invoice 1.pdf", "application/pdf", PDF), ("b.txt", "text/plain", b"b"))
    operations = [(r["operation"], r["status"]) for r in sandbox.sandbox.requests.records()]
    sent = [
        (m.text, [(a["fileName"], a["type"]) for a in m.attachments], m.cards)
        for m in stored.messages
        if m.author_type in ("user", "bot")
    ]
    return operations, sent


async def test_gateway_uploads_then_sends_and_types_and_reads_per_spec(sandbox: RunningSandbox) -> None:
    contract = Contract()
    checked = CheckedTransport(contract)
    operations, sent = await _flow(sandbox, checked)
    assert all(200 <= status < 300 for status in checked.statuses), checked.statuses
    paths = [entry.rsplit("/", 1)[-1] for entry in contract.checked]
    assert paths.count("attachments") == 2 and "typing" in paths and "read-receipt" in paths
    assert sent == [
        ("the invoice", [("invoice 1.pdf", "application/pdf")], [{"contentType": CARD.content_type, "content": CARD.content}]),
        ("", [("b.txt", "text/plain")], []),
    ]


async def test_the_workers_sender_sends_the_same(sandbox: RunningSandbox) -> None:
    """What the spec check saw through httpx is what the worker's aiohttp sender makes 8x8 do."""
    checked = await _flow(sandbox, CheckedTransport(Contract()))
    other = await start_sandbox(SandboxConfig(port=0, webhook_url="http://127.0.0.1:9/hook", retry_max_attempts=1, agent_accept_delay_s=0.01))
    try:
        assert await _flow(other, None) == checked
    finally:
        await other.stop()


async def test_a_message_naming_an_attachment_never_uploaded_is_refused(sandbox: RunningSandbox) -> None:
    """The sandbox checks the ids a message refers to (so the test above could fail)."""
    config = sandbox.sandbox.config
    headers = {"x-api-key": config.api_key}
    channel = sandbox.info["chat-gateway-v1"]["channels"][0]
    async with httpx.AsyncClient(base_url=f"{sandbox.url}/chat-gateway/v1", headers=headers) as client:
        created = await client.post("/conversations", json={"channelId": channel, "user": {"name": "Ann"}})
        conversation_id = created.json()["conversationId"]
        refused = await client.post(f"/conversations/{conversation_id}/messages", json={"authorType": "user", "attachments": [{"id": "nope"}]})
        not_multipart = await client.post(f"/conversations/{conversation_id}/attachments", json={"attachment": "x"})
        no_file = await client.post(f"/conversations/{conversation_id}/attachments", files={"authorType": (None, "user")})
    assert refused.status_code == 400 and "nope" in refused.text
    assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.text
    assert no_file.status_code == 400 and "attachment" in no_file.text


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.send("c-1", "hi", "user", files=[File("a.txt", "text/plain", b"a")]),
        lambda p: p.send("c-1", "hi", "user", cards=[CARD]),
        lambda p: p.typing("c-1", "user"),
        lambda p: p.mark_read("c-1", "m-1", "user"),
    ],
    ids=["attachments", "cards", "typing", "read-receipt"],
)
async def test_chat_api_v2_refuses_what_it_does_not_have_without_a_request(sandbox: RunningSandbox, call) -> None:
    checked = CheckedTransport(Contract())
    platform = _platform(sandbox, Generation.CHAT_API_V2, checked)
    with pytest.raises(PlatformError) as refused:
        await call(platform)
    await platform.aclose()
    assert refused.value.code == "UNSUPPORTED_BY_GENERATION" and "chat-api-v2" in refused.value.message
    assert checked.statuses == []
    assert not platform.features
