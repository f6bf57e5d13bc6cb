"""The webhook edge's answers, in-process: aiohttp's test server, a stub producer, the real verifier on a mock key endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector.config import load_settings
from connector.schemas import RegistryUnavailable
from connector.signature import Verifier
from connector.webhook import PATH, Edge
from tests.unit.test_signature import BODY, TENANT, cache, clock, key, keys, other_key, sign, verifier  # noqa: F401 (fixtures)

MAX_BODY = 2048


class StubProducer:
    """The edge's producer: records what it appends; `takes` False is Kafka not acknowledging in time."""

    def __init__(self) -> None:
        self.appended: list[tuple[bytes, bytes]] = []
        self.takes = True

    async def append(self, key: bytes, value: bytes) -> bool:
        if self.takes:
            self.appended.append((key, value))
        return self.takes


class StubCodec:
    """Encodes a RawWebhook as its body (the bulk of the record) and keeps the records; `down`: the registry away."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.down = False

    async def start(self, *names: str) -> None:
        if self.down:
            raise RegistryUnavailable("schema registry at http://registry: ConnectError")

    def encode(self, schema: str, record: dict[str, Any]) -> bytes:
        self.records.append(record)
        return record["body"]


@pytest.fixture
def producer() -> StubProducer:
    return StubProducer()


@pytest.fixture
def codec() -> StubCodec:
    return StubCodec()


@pytest.fixture
async def client(verifier: Verifier, producer: StubProducer, codec: StubCodec) -> AsyncIterator[TestClient]:
    settings = load_settings(webhook_max_body_bytes=MAX_BODY, webhook_read_timeout_s=0.3, platform_tenant_id=TENANT)
    app = web.Application()
    app.router.add_post(PATH, Edge(settings, codec, producer, verifier).handle)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_an_authentic_webhook_is_appended_keyed_by_its_conversation_and_answered_204(client, producer, codec, key) -> None:
    answer = await client.post(PATH, data=BODY, headers=sign(key=key))
    assert answer.status == 204
    assert producer.appended == [(b"c1", BODY)]
    (record,) = codec.records
    assert (record["kind"], record["headers"]["x-8x8-event-id"]) == ("WEBHOOK", "ev-1")
    assert "x-8x8-signature" not in record["headers"]


@pytest.mark.parametrize("forgery", ["wrong key", "tampered body", "wrong tenant", "no signature"])
async def test_a_webhook_that_is_not_authentic_gets_one_401_that_does_not_say_why(client, producer, key, other_key, forgery) -> None:
    headers, body = {
        "wrong key": (sign(key=other_key), BODY),
        "tampered body": (sign(key=key), BODY.replace(b'"7"', b'"8"')),
        "wrong tenant": (sign(key=key, tenant="another"), BODY),
        "no signature": ({k: v for k, v in sign(key=key).items() if k != "x-8x8-signature"}, BODY),
    }[forgery]
    answer = await client.post(PATH, data=body, headers=headers)
    assert answer.status == 401
    assert await answer.json() == {"error": "not authenticated"}
    assert producer.appended == []


async def test_a_key_that_cannot_be_fetched_is_503_so_that_8x8_sends_again(client, producer, key, keys) -> None:
    keys.down = True
    answer = await client.post(PATH, data=BODY, headers=sign(key=key))
    assert answer.status == 503 and producer.appended == []


async def test_a_schema_registry_that_cannot_answer_is_503_so_that_8x8_sends_again(client, producer, codec, key) -> None:
    codec.down = True
    answer = await client.post(PATH, data=BODY, headers=sign(key=key))
    assert answer.status == 503 and await answer.json() == {"error": "temporarily unavailable, retry"}
    assert producer.appended == []


@pytest.mark.parametrize(("body", "says"), [(b'{"eventType": ', "body is not JSON"), (b"[1, 2]", "body is not a JSON object")])
async def test_an_authentic_body_that_is_no_json_object_is_400(client, producer, key, body: bytes, says: str) -> None:
    answer = await client.post(PATH, data=body, headers=sign(body, key=key))
    assert answer.status == 400
    assert says in (await answer.json())["error"]
    assert producer.appended == []


async def test_a_body_larger_than_the_limit_is_413_by_its_length_or_as_it_streams(client, producer, key) -> None:
    large = json.dumps({"eventType": "TEXT", "conversationId": "c1", "message": "x" * MAX_BODY}).encode()
    answer = await client.post(PATH, data=large, headers=sign(large, key=key))
    assert answer.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for at in range(0, len(large), 512):
            yield large[at : at + 512]

    answer = await client.post(PATH, data=chunks(), headers=sign(large, key=key))
    assert answer.status == 413
    assert producer.appended == []


async def test_a_body_trickling_in_past_the_read_deadline_is_408(client, producer, key) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield BODY[:10]
        await asyncio.sleep(1.0)
        yield BODY[10:]

    answer = await client.post(PATH, data=trickle(), headers=sign(key=key))
    assert answer.status == 408
    assert producer.appended == []


async def test_a_webhook_kafka_does_not_take_in_time_is_503(client, producer, key) -> None:
    producer.takes = False
    answer = await client.post(PATH, data=BODY, headers=sign(key=key))
    assert answer.status == 503
    assert await answer.json() == {"error": "temporarily unavailable, retry"}


async def test_8x8s_verification_call_is_answered_without_an_append(client, producer, key) -> None:
    body = b'{"eventType":"WEB_HOOK_VERIFY"}'
    answer = await client.post(PATH, data=body, headers=sign(body, key=key))
    assert answer.status == 204 and producer.appended == []
