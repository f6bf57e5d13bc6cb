"""The simulated contact center: a shared pool of agents serving queued interactions.

A new conversation opens an interaction that waits in its queue (first come, first served across
queues) until an agent is free; a scripted agent accepts after a delay, greets, answers each
customer message, and after a number of exchanges leaves, or first transfers the interaction to
another agent. A customer message after the agent left opens a new interaction on the same
conversation. What scripted agents decide (transfers, wording) depends only on the seed and the
conversation id.

Any agent can be taken over from the console: its script stops, and a person does what the script
does (accept, type, write, transfer, leave) through the same methods, so 8x8's side of it, the
webhooks, is the same.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.config import Generation
from connector.sandbox.events import Notifier
from connector.sandbox.state import Agent, Conversation, Interaction, Message, Participant, Store, now_ms

__all__ = ["AgentBehaviour", "ContactCenter", "Refused"]

_NAMES = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "June", "Kai", "Lena"]
_REPLIES = [
    "Thanks, let me check that for you.",
    "I see. Could you tell me a little more?",
    "Understood, I am looking into it now.",
    "Good question. Here is what I found.",
]
# The card a scripted agent sends with a file (8x8's quick replies, as the spec's example).
_QUICK_REPLIES = {"options": [{"title": "That helps", "data": {"postback": "yes"}}, {"title": "Not yet", "data": {"postback": "no"}}]}


@dataclass(frozen=True)
class AgentBehaviour:
    """How the simulated agents act."""

    accept_delay_s: float = 1.0
    reply_delay_s: float = 0.5
    exchanges: int = 3  # 0: the agent never leaves on its own
    transfer_probability: float = 0.0
    # Chat Gateway: read receipts before answering, and this share of answers with a file and a card (0: neither).
    extras: float = 0.0


class Refused(Exception):
    """An agent action that does not apply to the conversation or agent as they are now."""


class ContactCenter:
    """Queues and agents; every change is told to the `notifier`."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        agents: int,
        behaviour: AgentBehaviour,
        seed: int,
        attach: Callable[[Conversation, str, str, bytes], dict[str, Any]],
    ) -> None:
        self._store = store
        self._attach = attach
        self._notify = notifier
        self._behaviour = behaviour
        self._seed = seed
        self.agents = [Agent(store.new_id("agent"), f"{_NAMES[i % len(_NAMES)]} {i + 1}") for i in range(agents)]
        self._by_id = {agent.id: agent for agent in self.agents}
        self._waiting: collections.deque[tuple[Conversation, Interaction]] = collections.deque()
        self._scripts: dict[str, asyncio.Task[None]] = {}  # by agent id
        self._typing: set[str] = set()  # agents shown typing

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
        """Stop every script, free every agent and hand it back to its script."""
        for task in self._scripts.values():
            task.cancel()
        self._scripts.clear()
        self._waiting.clear()
        self._typing.clear()
        for agent in self.agents:
            agent.serving = None
            agent.scripted = True

    def queued(self) -> list[tuple[Conversation, Interaction]]:
        """The interactions waiting for an agent, first in line first."""
        return [(c, i) for c, i in self._waiting if not c.ended and c.interaction is i]

    def waiting(self) -> int:
        """How many interactions wait for an agent."""
        return len(self.queued())

    # --- who plays an agent ------------------------------------------------------------------

    def agent(self, agent_id: str) -> Agent | None:
        return self._by_id.get(agent_id)

    def take_over(self, agent: Agent) -> None:
        """Stop the agent's script; an interaction it was still accepting goes back to the head of the line."""
        if not agent.scripted:
            return
        agent.scripted = False
        self._end_script(agent)
        conversation = self._serving(agent)
        if conversation is not None:
            conversation.inbox = None
            if agent.id in self._typing:  # the script stopped mid-answer
                self.typing(conversation, agent, False)
            interaction = conversation.interaction
            if conversation.state != "handling" and interaction is not None:
                interaction.agent_ids.remove(agent.id)
                self._release(conversation)
                self._waiting.appendleft((conversation, interaction))
        self._notify.changed(conversation)
        self._dispatch()

    def hand_back(self, agent: Agent) -> None:
        """Let the script play the agent again; it carries on with the conversation the agent serves."""
        if agent.scripted:
            return
        agent.scripted = True
        conversation = self._serving(agent)
        if conversation is not None and conversation.interaction is not None:
            inbox = self._listen(conversation)
            script = self._converse(conversation, conversation.interaction, agent, inbox, pending=_unanswered(conversation))
            self._scripts[agent.id] = asyncio.get_running_loop().create_task(script)
        self._notify.changed(conversation)
        self._dispatch()

    def serving(self, agent: Agent) -> Conversation | None:
        """The conversation whose interaction the agent has joined, if any."""
        conversation = self._serving(agent)
        return conversation if conversation is not None and conversation.state == "handling" else None

    # --- what an agent does: the scripts and the console both call these ---------------------

    def accept(self, agent: Agent, conversation: Conversation) -> None:
        """The agent takes the conversation's waiting interaction out of line and joins it at once."""
        if agent.busy:
            raise Refused(f"{agent.name} already serves a conversation.")
        interaction = conversation.interaction
        line = [n for n, (c, i) in enumerate(self._waiting) if c is conversation and i is interaction]
        if conversation.ended or interaction is None or not line:
            raise Refused(f"Conversation {conversation.id} is not waiting for an agent.")
        del self._waiting[line[0]]
        self._assign(conversation, interaction, agent)
        self.join(conversation, agent)

    def join(self, conversation: Conversation, agent: Agent) -> None:
        """The agent assigned to the conversation joins its interaction."""
        conversation.state = "handling"
        conversation.participants[agent.id] = Participant(agent.id, "agent")
        self._notify.agent_joined(conversation, agent)

    def say(
        self,
        conversation: Conversation,
        agent: Agent,
        text: str,
        *,
        attachments: list[Any] | None = None,
        cards: list[Any] | None = None,
    ) -> Message:
        """The agent writes a message (the gateway carries attachments and cards too)."""
        interaction = conversation.interactions[-1]
        message = Message(
            self._store.new_id("message"), interaction.id, "agent", agent.id, text, now_ms(), attachments or [], cards or []
        )
        conversation.messages.append(message)
        self._notify.agent_message(conversation, agent, message)
        return message

    def typing(self, conversation: Conversation, agent: Agent, typing: bool) -> None:
        """The agent starts or stops typing."""
        if typing:
            self._typing.add(agent.id)
        else:
            self._typing.discard(agent.id)
        self._notify.typing(conversation, agent, typing)

    def read(self, conversation: Conversation, agent: Agent) -> None:
        """The agent has read everything so far."""
        self._notify.read_receipt(conversation, agent, now_ms())

    def transfer(self, conversation: Conversation, agent: Agent, queue_id: str | None = None) -> None:
        """The agent hands the interaction over and leaves; it waits first in line, in `queue_id` if given."""
        interaction = conversation.interactions[-1]
        self._part(conversation, agent)
        interaction.transferred = True
        if queue_id:
            interaction.queue_id = conversation.queue_id = queue_id
        self._notify.transfer(conversation)
        self._notify.agent_left(conversation, agent, idle=False)
        self._waiting.appendleft((conversation, interaction))
        conversation.state = "queued"
        self._dispatch()

    def leave(self, conversation: Conversation, agent: Agent) -> None:
        """The agent ends the interaction: the conversation is idle until the customer writes again."""
        interaction = conversation.interactions[-1]
        self._part(conversation, agent)
        interaction.end_ms = now_ms()
        conversation.state = "idle"
        self._notify.agent_left(conversation, agent, idle=True)
        self._dispatch()

    # --- the scripts ---------------------------------------------------------------------------

    def _enqueue(self, conversation: Conversation, interaction: Interaction) -> None:
        conversation.state = "queued"
        self._notify.queued(conversation, interaction.queue_id)
        self._waiting.append((conversation, interaction))
        self._dispatch()

    def _dispatch(self) -> None:
        """Give waiting interactions to free scripted agents (people accept from the console)."""
        free = [agent for agent in self.agents if agent.scripted and not agent.busy]
        while free and self._waiting:
            conversation, interaction = self._waiting.popleft()
            if conversation.ended or conversation.interaction is not interaction:
                continue
            # After a transfer, another agent than before takes over, if there is one.
            agent = next((a for a in free if a.id not in interaction.agent_ids), free[0])
            free.remove(agent)
            self._assign(conversation, interaction, agent)
            task = asyncio.get_running_loop().create_task(self._script(conversation, interaction, agent))
            self._scripts[agent.id] = task

    async def _script(self, conversation: Conversation, interaction: Interaction, agent: Agent) -> None:
        """A scripted agent: accept after a delay, greet, then converse."""
        await asyncio.sleep(self._behaviour.accept_delay_s)
        inbox = self._listen(conversation)
        self.join(conversation, agent)
        pending = _unanswered(conversation)
        await self._say(conversation, agent, f"Hello, this is {agent.name}. How can I help?", typing=False)
        await self._converse(conversation, interaction, agent, inbox, pending=pending)

    async def _converse(
        self, conversation: Conversation, interaction: Interaction, agent: Agent, inbox: asyncio.Queue[Message], *, pending: bool
    ) -> None:
        """Answer the customer (a message already waiting first) `exchanges` times, then transfer or leave."""
        behaviour = self._behaviour
        answered = 0
        if pending:
            await self._answer(conversation, agent)
            answered += 1
        while behaviour.exchanges == 0 or answered < behaviour.exchanges:
            await inbox.get()
            while not inbox.empty():  # several messages in a row get one answer
                inbox.get_nowait()
            await self._answer(conversation, agent)
            answered += 1
        if not interaction.transferred and self._rng(conversation).random() < behaviour.transfer_probability:
            self.transfer(conversation, agent)
        else:
            self.leave(conversation, agent)

    async def _answer(self, conversation: Conversation, agent: Agent) -> None:
        """Read what the customer wrote, type, answer; with the extras on (gateway), sometimes with a file and a card."""
        rng = self._rng(conversation)
        extras = self._behaviour.extras > 0 and conversation.generation is not Generation.CHAT_API_V2
        if extras:
            self.read(conversation, agent)
        attachments: list[dict[str, Any]] = []
        cards: list[dict[str, Any]] = []
        if extras and rng.random() < self._behaviour.extras:
            number = len(conversation.messages)
            notes = f"Notes of {agent.name} on conversation {conversation.id}, message {number}.\n".encode()
            attachments.append(self._attach(conversation, f"notes-{number}.txt", "text/plain", notes))
            cards.append({"id": self._store.new_id("card"), "contentType": "application/8x8.quick.replies", "content": _QUICK_REPLIES})
        await self._say(conversation, agent, rng.choice(_REPLIES), attachments=attachments, cards=cards)

    async def _say(
        self,
        conversation: Conversation,
        agent: Agent,
        text: str,
        *,
        typing: bool = True,
        attachments: list[dict[str, Any]] | None = None,
        cards: list[dict[str, Any]] | None = None,
    ) -> None:
        if typing:
            self.typing(conversation, agent, True)
            await asyncio.sleep(self._behaviour.reply_delay_s)
            self.typing(conversation, agent, False)
        self.say(conversation, agent, text, attachments=attachments, cards=cards)

    def _rng(self, conversation: Conversation) -> random.Random:
        """Randomness that depends only on the seed and where the conversation is (nothing to keep)."""
        return random.Random(f"{self._seed}:{conversation.id}:{len(conversation.messages)}")

    def _listen(self, conversation: Conversation) -> asyncio.Queue[Message]:
        """The inbox through which the customer's messages reach the script."""
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        conversation.inbox = inbox
        return inbox

    def _end_script(self, agent: Agent) -> None:
        """Stop the agent's script, unless it is the script itself asking."""
        task = self._scripts.pop(agent.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _assign(self, conversation: Conversation, interaction: Interaction, agent: Agent) -> None:
        agent.serving = conversation.id
        interaction.agent_ids.append(agent.id)
        conversation.agent_id = agent.id
        self._notify.changed(conversation)

    def _part(self, conversation: Conversation, agent: Agent) -> None:
        """The agent stops serving the conversation: its script ends, it is free, it left the participants."""
        self._end_script(agent)
        self._typing.discard(agent.id)
        self._release(conversation)
        conversation.participants[agent.id].removed = True

    def _serving(self, agent: Agent) -> Conversation | None:
        return self._store.conversations.get(agent.serving) if agent.serving is not None else None

    def _stop_serving(self, conversation: Conversation) -> None:
        agent = self._by_id.get(conversation.agent_id) if conversation.agent_id is not None else None
        if agent is not None:
            self._end_script(agent)
            self._typing.discard(agent.id)
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
        agent = self._by_id.get(conversation.agent_id) if conversation.agent_id is not None else None
        if agent is not None and agent.serving == conversation.id:
            agent.serving = None
        conversation.agent_id = None
        self._notify.changed(conversation)


def _unanswered(conversation: Conversation) -> bool:
    """Whether the customer wrote last (while the interaction waited, say)."""
    return bool(conversation.messages) and conversation.messages[-1].author_type != "agent"
