"""The contract helper itself: it accepts what the specs allow and catches what they do not."""

from __future__ import annotations

import json

import pytest

from tests.contract.openapi_contract import Contract, Exchange

BASE = "http://sandbox/vcc/us/chat/v2/tenant/t"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


def exchange(method: str, url: str, status: int, body: object, *, request: object = None, content_type: str = "application/json") -> Exchange:
    return Exchange(
        method=method,
        url=url,
        request_headers={"authorization": "Bearer x", "content-type": "application/json"},
        request_body=json.dumps(request).encode() if request is not None else None,
        status=status,
        response_headers={"content-type": content_type},
        response_body=json.dumps(body).encode(),
    )


def test_a_conforming_answer_passes(contract: Contract) -> None:
    contract.check(exchange("POST", f"{BASE}/conversations", 202, {"conversationId": "c", "timestamp": 1}, request={"channelId": "1", "customer": {}}))


def test_a_wrong_body_is_caught(contract: Contract) -> None:
    with pytest.raises(AssertionError, match="response breaks the spec"):
        contract.check(exchange("POST", f"{BASE}/conversations", 202, {"conversationId": 5}, request={"channelId": "1", "customer": {}}))


def test_a_wrong_error_shape_is_caught(contract: Contract) -> None:
    # v2's 401 carries a `fault` object.
    with pytest.raises(AssertionError):
        contract.check(exchange("GET", f"{BASE}/conversations", 401, {"fault": "nope"}, content_type="application/problem+json"))


def test_an_invalid_request_must_get_a_4xx(contract: Contract) -> None:
    with pytest.raises(AssertionError, match="the spec rejects this request"):
        contract.check(exchange("POST", f"{BASE}/conversations", 202, {"conversationId": "c", "timestamp": 1}, request={"customer": {}}))
