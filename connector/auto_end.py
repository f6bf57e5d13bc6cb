"""The auto-end policy: end a conversation the agent left a while ago, with no transfer and no customer message since.

`AutoEnd.publish_due` (a timer) publishes an EndConversation to chat.commands for each conversation
this worker owns that is due; it runs like any other command, so its table writes land in the right
changelog partition and its lane keeps the ref's order. Its command id is deterministic, so a
second publication is answered as a duplicate, and the processor checks again before ending.
"""

from __future__ import annotations

import logging

from connector import _faust_compat as compat
from connector.app import Connector
from connector.results import now_ms
from connector.conversation import Conversation, Status

__all__ = ["AUTO_END_PREFIX", "AutoEnd", "auto_end_due"]

# Command ids of the EndConversation commands the policy publishes: `auto-end:<ref>:<agent_left_at>`.
AUTO_END_PREFIX = "auto-end:"

logger = logging.getLogger(__name__)


def auto_end_due(conversation: Conversation, now: int, after_s: float) -> bool:
    """True when the policy should end it: agent left `after_s` ago, no transfer, no customer message since."""
    if after_s <= 0 or conversation.status is not Status.AGENT_LEFT or conversation.agent_left_at is None:
        return False
    if conversation.last_customer_message_at is not None and conversation.last_customer_message_at >= conversation.agent_left_at:
        return False
    return now - conversation.agent_left_at >= after_s * 1000


class AutoEnd:
    """Publishes the due ends of the conversations this worker owns, each once until its command has run."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector
        self._after_s = connector.settings.command_auto_end_s
        self._pending: set[str] = set()

    def due(self, conversation: Conversation | None) -> bool:
        """Whether an auto-end command may still end this conversation (the agent may have come back)."""
        return conversation is not None and auto_end_due(conversation, now_ms(), self._after_s)

    def ran(self, ref: str) -> None:
        """The auto-end command of `ref` was taken by its lane: the timer may publish one again later."""
        self._pending.discard(ref)

    async def publish_due(self) -> None:
        """The timer: publish an EndConversation for each owned conversation that is due. An error (the
        registry or Kafka away) is logged and the next tick tries again: a timer's exception would stop the worker."""
        try:
            await self._publish_due()
        except Exception:  # the registry client and aiokafka raise several kinds
            logger.exception("auto-end: the due ends could not be published; the next tick tries again")

    def forget(self) -> None:
        """A rebalance: the ends published are the partitions' next owners' to run; the timer may publish again."""
        self._pending.clear()

    async def _publish_due(self) -> None:
        connector = self._connector
        app = connector.app
        owned = compat.active_partitions(app)
        topic = connector.commands.get_topic_name()
        now = now_ms()
        await connector.codec.start()
        for ref, value in list(connector.conversations.items()):
            if ref in self._pending or not value:
                continue
            conversation = Conversation.from_dict(value)
            if not auto_end_due(conversation, now, self._after_s):
                continue
            if compat.key_partition(app, topic, ref.encode()) not in owned:
                continue
            record = {
                "command_id": f"{AUTO_END_PREFIX}{ref}:{conversation.agent_left_at}",
                "conversation_ref": ref,
                "created_at": now,
                "command": ("io.kafka8x8.chat.EndConversation", {"reason": "auto-end: the agent left"}),
            }
            self._pending.add(ref)
            try:
                await connector.commands.send(key=ref.encode(), value=connector.codec.encode("ConversationCommand", record))
            except BaseException:
                self._pending.discard(ref)  # not published: the next tick publishes it
                raise
