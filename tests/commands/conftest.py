"""Fixtures of the command tests: the sandbox as 8x8 (a subprocess), topics, a publisher, result readers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from connector.client import CommandPublisher
from connector.topics import create_topics
from tests.support.env import free_port, settings_of
from tests.support.topics import TopicReader

GENERATIONS = ("chat-api-v2", "chat-gateway-v1")


class Sandbox:
    """A sandbox process: its URL, admin calls, and the request log."""

    def __init__(self, url: str, process: subprocess.Popen) -> None:
        self.url = url
        self.process = process
        self.http = httpx.Client(base_url=url, timeout=30)

    def info(self) -> dict[str, Any]:
        return self.http.get("/_sandbox/info").raise_for_status().json()

    def channel(self, generation: str) -> str:
        return self.info()[generation]["channels"][0]

    def faults(self, default: dict[str, Any] | None = None, **operations: dict[str, Any]) -> None:
        self.http.put("/_sandbox/faults", json={"default": default or {}, "operations": operations}).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/requests").raise_for_status().json()

    def conversations(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/conversations").raise_for_status().json()

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return self.http.get(f"/_sandbox/conversations/{conversation_id}").raise_for_status().json()


@pytest.fixture
def worker_port() -> int:
    return free_port()


@pytest.fixture
def start_sandbox(tmp_path: Path, worker_port: int) -> Iterator[Callable[..., Sandbox]]:
    """Start `python -m connector.sandbox` posting webhooks to the worker of this test."""
    started: list[Sandbox] = []

    def start(*args: str) -> Sandbox:
        port = free_port()
        log = open(tmp_path / f"sandbox-{len(started)}.log", "ab")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "connector.sandbox", "--port", str(port),
                "--webhook-url", f"http://127.0.0.1:{worker_port}/webhooks/8x8",
                "--accept-delay", "0.2", "--reply-delay", "0.1", "--retry-initial", "0.1", "--retry-max", "1",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sandbox = Sandbox(f"http://127.0.0.1:{port}", process)
        started.append(sandbox)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                sandbox.info()
                return sandbox
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail(f"sandbox did not start:\n{(tmp_path / 'sandbox-0.log').read_text()[-3000:]}")

    yield start
    for sandbox in started:
        sandbox.process.kill()
        sandbox.process.wait(10)


@pytest.fixture
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return start_sandbox()


@pytest.fixture
def connector_env(settings_env: dict[str, str], worker_port: int) -> Callable[..., dict[str, str]]:
    """The worker's environment for a sandbox and a generation; topics created."""

    def env(sandbox: Sandbox, generation: str, **extra: Any) -> dict[str, str]:
        values = {
            **settings_env,
            "CONNECTOR_WEB_PORT": str(worker_port),
            "CONNECTOR_PLATFORM_GENERATION": generation,
            "CONNECTOR_PLATFORM_BASE_URL": sandbox.url,
            "CONNECTOR_PLATFORM_TENANT_ID": "sandbox-tenant",
            "CONNECTOR_PLATFORM_API_KEY": "sandbox-api-key",
            "CONNECTOR_PLATFORM_API_SECRET": "sandbox-api-secret",
            "CONNECTOR_PLATFORM_CHANNEL_ID": sandbox.channel(generation),
            "CONNECTOR_PLATFORM_TIMEOUT_S": "2",
            "CONNECTOR_LOG_LEVEL": "WARNING",
            **{f"CONNECTOR_{k.upper()}": str(v) for k, v in extra.items()},
        }
        create_topics(settings_of(values))
        return values

    return env


@pytest.fixture
def publisher_for() -> Iterator[Callable[[dict[str, str]], CommandPublisher]]:
    publishers: list[CommandPublisher] = []

    def make(env: dict[str, str]) -> CommandPublisher:
        publisher = CommandPublisher(settings_of(env), wait=False)  # many commands; flush() checks them all
        publishers.append(publisher)
        return publisher

    yield make
    for publisher in publishers:
        publisher.close()


class Results(TopicReader):
    """The CommandResult records, by command id."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, env["CONNECTOR_TOPIC_COMMAND_RESULTS"], "CommandResult")
        self.by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def _took(self, new: list[Any]) -> list[Any]:
        for result in new:
            self.by_id[result["command_id"]].append(result)
        return super()._took(new)

    def wait_for(self, command_ids: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
        """Poll until every id has a result (fails with the missing count on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.3)
            missing = [c for c in command_ids if c not in self.by_id]
            if not missing:
                return self.by_id
        pytest.fail(f"{len(missing)} of {len(command_ids)} commands have no result after {timeout}s, e.g. {missing[:3]}")

    def final(self, command_id: str) -> dict[str, Any]:
        return self.by_id[command_id][0]


@pytest.fixture
def readers() -> Iterator[Callable[..., Any]]:
    opened: list[TopicReader] = []

    def make(kind: type[TopicReader] | str, env: dict[str, str], schema: str | None = None) -> Any:
        reader = kind(env) if isinstance(kind, type) else TopicReader(env, kind, schema)
        opened.append(reader)
        return reader

    yield make
    for reader in opened:
        reader.close()


def publish_workload(
    publisher: CommandPublisher, prefix: str, refs: int, messages: int, *, end: bool = True
) -> tuple[list[str], list[str]]:
    """Start `refs` conversations, send each `messages` numbered messages ("<ref> #<n>"), end them all
    (unless `end` is false), interleaved across refs; answers the refs and the command ids in publishing order."""
    run = uuid.uuid4().hex[:6]
    names = [f"{prefix}{run}-{i}" for i in range(refs)]
    ids = [publisher.start(ref, name=f"Customer {ref}") for ref in names]
    for n in range(messages):
        ids += [publisher.message(ref, f"{ref} #{n}") for ref in names]
    if end:
        ids += [publisher.end(ref) for ref in names]
    publisher.flush()
    return names, ids


def assert_exactly_one_result(by_id: dict[str, list[dict[str, Any]]], command_ids: list[str]) -> int:
    """"Exactly one result per command", precisely: every command id has CommandResults that all agree on
    the outcome (status, conversation id, error code); exactly one of them is an original
    (duplicate=false) and it comes first; any other re-emits it (duplicate=true) after a redelivery,
    so a consumer that skips duplicates still sees every outcome. Answers the number of re-emitted duplicates."""
    re_emitted = 0
    for command_id in command_ids:
        records = by_id.get(command_id)
        assert records, f"no result for {command_id}"
        outcomes = {(r["status"], r["conversation_id"], r["error_code"]) for r in records}
        assert len(outcomes) == 1, f"{command_id}: different outcomes {records}"
        originals = [r for r in records if not r["duplicate"]]
        assert len(originals) == 1, f"{command_id}: {len(originals)} original results {records}"
        assert not records[0]["duplicate"], f"{command_id}: a duplicate before the original {records}"
        re_emitted += len(records) - 1
    return re_emitted


def assert_each_ref_created_once_and_sent_in_order(sandbox: "Sandbox", generation: str, refs: list[str], messages: int) -> dict[str, str]:
    """One 8x8 conversation per ref, and each ref's numbered messages ("<ref> #<n>") sent exactly once, in
    order; answers 8x8 conversation id -> ref."""
    created = created_by_ref(sandbox, generation)
    assert sorted(created) == sorted(refs)
    assert all(len(c) == 1 for c in created.values()), "a conversation was created twice"
    ref_of = {conversation_id: ref for ref, (conversation_id,) in created.items()}
    sent = sends_by_ref(sandbox.requests(), ref_of)
    for ref in refs:
        assert [int(text.rsplit("#", 1)[1]) for text in sent[ref]] == list(range(messages)), f"{ref}: sent {sent[ref]}"
    return ref_of


def sends_by_ref(requests: list[dict[str, Any]], conversation_ref: dict[str, str]) -> dict[str, list[str]]:
    """The message texts 8x8 accepted (or took then dropped the answer), per ref, in the order received."""
    out: dict[str, list[str]] = defaultdict(list)
    for request in requests:
        if request["operation"] not in ("sendmessagetocctransaction", "sendmessagetocctransaction-1"):
            continue
        if request["status"] != 202 and request.get("appliedStatus") != 202:
            continue
        conversation_id = request["path"].split("/conversations/")[1].split("/")[0]
        out[conversation_ref[conversation_id]].append(request["body"]["text"])
    return out


def created_by_ref(sandbox: Sandbox, generation: str) -> dict[str, list[str]]:
    """The conversations the sandbox holds, by the connectorRef stamped in them."""
    out: dict[str, list[str]] = defaultdict(list)
    for conversation in sandbox.conversations():
        if conversation["generation"] != generation:
            continue
        customer = conversation["customer"]
        ref = customer.get("connectorRef") or next(
            (p["value"] for p in customer.get("additionalProperties", []) if p["key"] == "connectorRef"), None
        )
        out[ref].append(conversation["id"])
    return out
