"""How the codec sorts what the registry says about a writer's schema id: final answers, and blips to wait out."""

from __future__ import annotations

import json
import struct

import httpx
import pytest
import respx

from connector.config import load_settings
from connector.schemas import AvroCodec, RegistryUnavailable, SchemaError

REGISTRY = "http://registry.test/apis/ccompat/v7"


def _codec() -> AvroCodec:
    return AvroCodec(load_settings(schema_registry_url=REGISTRY))


def _framed(schema_id: int) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + b"\x02"


@respx.mock
async def test_an_id_the_registry_does_not_know_is_asked_for_once() -> None:
    route = respx.get(f"{REGISTRY}/schemas/ids/77").mock(
        return_value=httpx.Response(404, json={"error_code": 40403, "message": "not found"})
    )
    codec = _codec()
    for _ in range(50):
        with pytest.raises(SchemaError, match="unknown to the registry"):
            await codec.decode("ConversationCommand", _framed(77))
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"schema": '{"type": "object"}', "schemaType": "JSON"}, "is a JSON schema, not Avro"),
        ({"schema": 'syntax = "proto3";', "schemaType": "PROTOBUF"}, "is not an Avro schema"),
        ({"schema": json.dumps({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nonsense"}]})}, "is not an Avro schema: UnknownType"),
    ],
)
async def test_a_schema_that_is_no_avro_is_a_final_answer(answer, reason) -> None:
    route = respx.get(f"{REGISTRY}/schemas/ids/5").mock(return_value=httpx.Response(200, json=answer))
    codec = _codec()
    for _ in range(3):
        with pytest.raises(SchemaError, match=reason):
            await codec.decode("ConversationCommand", _framed(5))
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize(
    "failure",
    [httpx.Response(503, json={"error_code": 50301, "message": "down"}), httpx.Response(401), httpx.ConnectError("refused")],
)
async def test_a_registry_that_cannot_answer_now_is_asked_again(failure) -> None:
    route = respx.get(f"{REGISTRY}/schemas/ids/9").mock(side_effect=[failure, failure])
    codec = _codec()
    for _ in range(2):
        with pytest.raises(RegistryUnavailable, match="schema id 9 could not be fetched"):
            await codec.decode("ConversationCommand", _framed(9))
    assert route.call_count == 2
