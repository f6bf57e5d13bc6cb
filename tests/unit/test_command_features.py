"""The rules of the Chat Gateway features as commands: what a generation lacks, and what a SendMessage carries."""

from __future__ import annotations

import re

import pytest

from connector.command import Command, message_of, unsupported
from connector.config import Generation, load_settings
from connector.eightbyeight import Card, File, InvalidCommand, open_platform
from connector.conversation import CommandKind


def _command(kind: CommandKind, **body) -> Command:
    return Command("c-1", "r-1", kind, {"text": "hi", **body} if kind is CommandKind.SEND_MESSAGE else body)


@pytest.fixture(params=list(Generation), ids=lambda g: g.value)
def platform(request):
    return open_platform(load_settings(platform_generation=request.param, platform_api_key="k", platform_api_secret="s"))


def test_each_generation_refuses_exactly_what_it_lacks(platform) -> None:
    commands = {
        "typing indicators": _command(CommandKind.SET_TYPING, active=True),
        "read receipts": _command(CommandKind.MARK_READ, message_id="m-1"),
        "attachments": _command(CommandKind.SEND_MESSAGE, attachments=[{"file_name": "a", "content_type": "t", "data": b"a"}]),
        "cards": _command(CommandKind.SEND_MESSAGE, cards=[{"content_type": "Buttons", "content_json": "{}"}]),
    }
    for feature, command in commands.items():
        refused = unsupported(command, platform)
        if platform.generation == "chat-api-v2":
            assert refused is not None and refused[0] == "UNSUPPORTED_BY_GENERATION", feature
            assert feature in refused[1] and "chat-api-v2" in refused[1]
        else:
            assert refused is None, feature
    assert unsupported(_command(CommandKind.SEND_MESSAGE, attachments=[], cards=[]), platform) is None


def test_a_message_carries_its_files_urls_and_cards() -> None:
    command = _command(
        CommandKind.SEND_MESSAGE,
        author_type="BOT",
        attachments=[
            {"file_name": "a.pdf", "content_type": "application/pdf", "data": b"%PDF", "url": None},
            {"file_name": "b.csv", "content_type": "text/csv", "data": None, "url": "https://files.example/b.csv?sig=1"},
        ],
        cards=[{"content_type": "application/8x8.quick.replies", "content_json": '{"options": []}'}],
    )
    message = message_of(command, max_file_bytes=4)
    assert message.author_type == "bot" and message.text == "hi"
    assert message.files == (File("a.pdf", "application/pdf", b"%PDF"),)
    assert message.to_fetch == (("b.csv", "text/csv", "https://files.example/b.csv?sig=1"),)
    assert message.cards == (Card("application/8x8.quick.replies", {"options": []}),)


@pytest.mark.parametrize(
    ("attachment", "card", "words"),
    [
        ({"file_name": "a", "content_type": "t", "data": b"12345", "url": None}, None, "5 bytes; CONNECTOR_COMMAND_ATTACHMENT_MAX_BYTES is 4"),
        ({"file_name": "a", "content_type": "t", "data": b"1", "url": "https://x/a"}, None, "not both"),
        ({"file_name": "a", "content_type": "t", "data": None, "url": None}, None, "not neither"),
        ({"file_name": "a", "content_type": "t", "data": None, "url": "file:///etc/passwd"}, None, "not an http(s) URL"),
        ({"file_name": "", "content_type": "t", "data": b"1", "url": None}, None, "file_name and content_type"),
        (None, {"content_type": "Buttons", "content_json": "[1]"}, "cards[0].content_json is not a JSON object"),
        (None, {"content_type": "Buttons", "content_json": "{"}, "cards[0].content_json is not JSON"),
    ],
)
def test_a_wrong_attachment_or_card_is_named(attachment, card, words) -> None:
    command = _command(CommandKind.SEND_MESSAGE, attachments=[attachment] if attachment else [], cards=[card] if card else [])
    with pytest.raises(InvalidCommand, match=re.escape(words)):
        message_of(command, max_file_bytes=4)
