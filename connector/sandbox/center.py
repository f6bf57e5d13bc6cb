"""The simulated contact center: a shared pool of agents serving queued interactions.

A new conversation opens an interaction that waits in its queue (first come, first served across
queues) until an agent is free; the agent accepts after a delay, greets, answers each customer
message, and after a number of exchanges leaves, or first transfers the interaction to another
agent. A customer message after the agent left opens a new interaction on the same conversation.
What agents decide (transfers, wording) depends only on the seed and the conversation id.
"""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass
from typing import Any

from connector.sandbox.events import Notifier
from connector.sandbox.state import Agent, Conversation, Interaction, Message, Participant, Store, now_ms

__all__ = ["AgentBehaviour", "ContactCenter"]

_NAMES = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "June", "Kai", "Lena"]
_REPLIES = [
    "Thanks, let me check that for you.",
    "I see. Could you tell me a little more?",
    "Understood, I am looking into it now.",
    "Good question. Here is what I found.",
]


@dataclass(frozen=True)
class AgentBehaviour:
    """How the simulated agents act."""

    accept_delay_s: float = 1.0
    reply_delay_s: float = 0.5
    exchanges: int = 3  # 0: the agent never leaves on its own
    transfer_probability: float = 0.0


class ContactCenter:
    """Queues and agents; every change is told to the `notifier`."""

    def __init__(self, store: Store, notifier: Notifier, *, agents: int, behaviour: AgentBehaviour, seed: int) -> None:
        self._store = store
        self._notify = notifier
        self._behaviour = behaviour
        self._seed = seed
        self.agents = [Agent(store.new_id("agent"), f"{_NAMES[i % len(_NAMES)]} {i + 1}") for i in range(agents)]
        self._waiting: collections.deque[tuple[Conversation, Interaction]] = collections.deque()
        self._serving: dict[str, asyncio.Task[None]] = {}

    def conversation_created(self, conversation: Conversation, history: list[tuple[str, str]]) -> None:
        """Open the first interaction of a conversation just created, with the history it came with."""
        conversation.participants[conversation.customer_id] = Participant(conversation.customer_id, "user")
        interaction = Interaction(self._store.new_id("interaction"), conversation.queue_id, now_ms())
        conversation.interactions.append(interaction)
        for author_type, text in history:
            author_id = self._author(conversation, author_type)
            message = Message(self._store.new_id("message"), interaction.id, author_type, author_id, text, now_ms())
            conversation.messages.append(message)
        self._notify.created(conversation)
        self._enqueue(conversation, interaction)

    def customer_message(
        self, conversation: Conversation, author_type: str, text: str, *, attachments: list[Any], cards: list[Any]
    ) -> Message:
        """A customer (or bot) message: to the serving agent, or it opens a new interaction."""
        reopen = conversation.interaction is None
        if reopen:
            conversation.interactions.append(Interaction(self._store.new_id("interaction"), conversation.queue_id, now_ms()))
        author_id = self._author(conversation, author_type)
        interaction = conversation.interactions[-1]
        message = Message(
            self._store.new_id("message"), interaction.id, author_type, author_id, text, now_ms(), attachments, cards
        )
        conversation.messages.append(message)
        self._notify.user_message(conversation, message)
        if reopen:
            self._enqueue(conversation, interaction)
        elif conversation.inbox is not None:
            conversation.inbox.put_nowait(message)
        return message

    def customer_left(self, conversation: Conversation) -> None:
        """Customer leaves: end the conversation and free its agent."""
        self._stop_serving(conversation)
        if conversation.interaction is not None:
            conversation.interaction.end_ms = now_ms()
        conversation.participants[conversation.customer_id].removed = True
        self._store.mark_ended(conversation)
        self._notify.user_left(conversation)
        self._dispatch()

    def forget(self, conversation: Conversation) -> None:
        """Stop all work on an evicted conversation."""
        self._stop_serving(conversation)
        conversation.state = "ended"
        self._notify.forget(conversation)
        self._dispatch()

    def reset(self) -> None:
        """Stop serving everything and free every agent."""
        for task in self._serving.values():
            task.cancel()
        self._serving.clear()
        self._waiting.clear()
        for agent in self.agents:
            agent.busy = False

    def waiting(self) -> int:
        """How many interactions wait for an agent."""
        return sum(1 for conversation, _ in self._waiting if not conversation.ended)

    def _enqueue(self, conversation: Conversation, interaction: Interaction) -> None:
        conversation.state = "queued"
        self._notify.queued(conversation, interaction.queue_id)
        self._waiting.append((conversation, interaction))
        self._dispatch()

    def _dispatch(self) -> None:
        free = [agent for agent in self.agents if not agent.busy]
        while free and self._waiting:
            conversation, interaction = self._waiting.popleft()
            if conversation.ended or conversation.interaction is not interaction:
                continue
            # After a transfer, another agent than before takes over, if there is one.
            agent = next((a for a in free if a.id not in interaction.agent_ids), free[0])
            free.remove(agent)
            agent.busy = True
            interaction.agent_ids.append(agent.id)
            conversation.agent_id = agent.id
            task = asyncio.get_running_loop().create_task(self._serve(conversation, interaction, agent))
            self._serving[conversation.id] = task

    async def _serve(self, conversation: Conversation, interaction: Interaction, agent: Agent) -> None:
        behaviour = self._behaviour
        await asyncio.sleep(behaviour.accept_delay_s)
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        conversation.inbox = inbox
        conversation.state = "handling"
        conversation.participants[agent.id] = Participant(agent.id, "agent")
        self._notify.agent_joined(conversation, agent)
        pending = _unanswered(conversation)
        await self._say(conversation, interaction, agent, f"Hello, this is {agent.name}. How can I help?", typing=False)
        answered = 0
        if pending:
            await self._say(conversation, interaction, agent, self._reply(conversation))
            answered += 1
        while behaviour.exchanges == 0 or answered < behaviour.exchanges:
            await inbox.get()
            while not inbox.empty():  # several messages in a row get one answer
                inbox.get_nowait()
            await self._say(conversation, interaction, agent, self._reply(conversation))
            answered += 1
        transfer = not interaction.transferred and self._rng(conversation).random() < behaviour.transfer_probability
        del self._serving[conversation.id]
        self._release(conversation)
        conversation.participants[agent.id].removed = True
        if transfer:
            interaction.transferred = True
            self._notify.transfer(conversation)
            self._notify.agent_left(conversation, agent, idle=False)
            self._waiting.appendleft((conversation, interaction))
            conversation.state = "queued"
        else:
            interaction.end_ms = now_ms()
            conversation.state = "idle"
            self._notify.agent_left(conversation, agent, idle=True)
        self._dispatch()

    async def _say(
        self, conversation: Conversation, interaction: Interaction, agent: Agent, text: str, *, typing: bool = True
    ) -> None:
        if typing:
            self._notify.typing(conversation, agent, True)
            await asyncio.sleep(self._behaviour.reply_delay_s)
            self._notify.typing(conversation, agent, False)
        message = Message(self._store.new_id("message"), interaction.id, "agent", agent.id, text, now_ms())
        conversation.messages.append(message)
        self._notify.agent_message(conversation, agent, message)

    def _reply(self, conversation: Conversation) -> str:
        return self._rng(conversation).choice(_REPLIES)

    def _rng(self, conversation: Conversation) -> random.Random:
        """Randomness that depends only on the seed and where the conversation is (nothing to keep)."""
        return random.Random(f"{self._seed}:{conversation.id}:{len(conversation.messages)}")

    def _stop_serving(self, conversation: Conversation) -> None:
        task = self._serving.pop(conversation.id, None)
        if task is not None:
            task.cancel()
        self._release(conversation)

    def _author(self, conversation: Conversation, author_type: str) -> str:
        """The participant id of a user or bot author, the bot joining on its first message."""
        if author_type == "user":
            return conversation.customer_id
        if "bot" not in conversation.participants:
            conversation.participants["bot"] = Participant("bot", "bot")
        return "bot"

    def _release(self, conversation: Conversation) -> None:
        conversation.inbox = None
        for agent in self.agents:
            if agent.id == conversation.agent_id:
                agent.busy = False
        conversation.agent_id = None


def _unanswered(conversation: Conversation) -> bool:
    """Whether the customer wrote last (while the interaction waited, say)."""
    return bool(conversation.messages) and conversation.messages[-1].author_type != "agent"
