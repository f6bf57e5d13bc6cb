"""The webhook signature verifier against an independent signer written from API.md."""

from __future__ import annotations

import base64
import json
import zlib

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connector.config import Generation, load_settings
from connector.signature import JwkCache, SignatureError, Verifier, jwk_url

TENANT = "tenant-1"
NOW_MS = 1_700_000_000_000
BODY = b'{"eventType":"QUEUED","conversationId":"c1","timestamp":1700000000000,"queueId":"7"}'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(
    body: bytes = BODY,
    *,
    key: rsa.RSAPrivateKey,
    kid: str = "kid-1",
    tenant: str = TENANT,
    customer: str = "cust-1",
    event_id: str = "ev-1",
    retry: int = 0,
    tt: int = NOW_MS,
    header: dict | None = None,
) -> dict[str, str]:
    """The x-8x8-* headers of one delivery, signed exactly as API.md describes."""
    protected = b64url(json.dumps(header or {"b64": False, "crit": ["b64"], "kid": kid, "alg": "RS256"}).encode())
    payload = (
        f'{{"checksum":{zlib.crc32(body)},"cid":"{customer}","eid":"{event_id}",'
        f'"retry":{retry},"tid":"{tenant}","tt":{tt}}}'
    ).encode()
    signature = key.sign(protected.encode() + b"." + payload, padding.PKCS1v15(), hashes.SHA256())
    return {
        "x-8x8-signature": f"{protected}..{b64url(signature)}",
        "x-8x8-tenant-id": tenant,
        "x-8x8-customer-id": customer,
        "x-8x8-event-id": event_id,
        "x-8x8-transmission-time": str(tt),
        "x-8x8-retry": str(retry),
    }


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    as_bytes = lambda v: v.to_bytes((v.bit_length() + 7) // 8, "big")  # noqa: E731
    return {"kty": "RSA", "kid": kid, "e": b64url(as_bytes(numbers.e)), "n": b64url(as_bytes(numbers.n))}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Keys:
    """A JWK endpoint serving `key` as kid-1, counting requests."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.jwks = {"kid-1": jwk(key, "kid-1")}
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        kid = request.url.path.split("/")[-2]
        if kid in self.jwks:
            return httpx.Response(200, json=self.jwks[kid])
        return httpx.Response(404, json={"error": "not found"})


@pytest.fixture
def keys(key: rsa.RSAPrivateKey) -> Keys:
    return Keys(key)


@pytest.fixture
def verifier(keys: Keys) -> Verifier:
    client = httpx.AsyncClient(transport=httpx.MockTransport(keys.handler))
    cache = JwkCache(lambda kid: f"https://8x8.test/vcc/us/chat/v2/jwk/{kid}/public", client, refetch_interval_s=60)
    return Verifier(cache, tenant_id=TENANT, window_s=300, clock=lambda: NOW_MS / 1000)


async def refused(verifier: Verifier, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureError) as caught:
        await verifier.verify(headers, body)
    return caught.value.code


async def test_authentic_delivery_passes_and_key_is_fetched_once(verifier, key, keys):
    delivery = await verifier.verify(sign(key=key), BODY)
    assert (delivery.event_id, delivery.tenant_id, delivery.retry) == ("ev-1", TENANT, 0)
    await verifier.verify(sign(key=key, retry=3, event_id="ev-2", tt=NOW_MS - 1000), BODY)
    assert keys.requests == ["/vcc/us/chat/v2/jwk/kid-1/public"]


async def test_signature_of_the_sandbox_signer_passes(verifier, key):
    from connector.sandbox.signing import sign as sandbox_sign

    signature = sandbox_sign(
        BODY, key=key, kid="kid-1", tenant_id=TENANT, customer_id="c", event_id="e", retry=2, transmission_time=NOW_MS
    )
    headers = sign(key=key, customer="c", event_id="e", retry=2) | {"x-8x8-signature": signature}
    await verifier.verify(headers, BODY)


async def test_wrong_key(verifier, other_key):
    assert await refused(verifier, sign(key=other_key)) == "bad_signature"


async def test_tampered_body(verifier, key):
    assert await refused(verifier, sign(key=key), BODY.replace(b'"7"', b'"8"')) == "bad_signature"


@pytest.mark.parametrize(
    "name, value",
    [("x-8x8-event-id", "ev-other"), ("x-8x8-retry", "1"), ("x-8x8-customer-id", "cust-2"), ("x-8x8-transmission-time", str(NOW_MS + 1))],
)
async def test_tampered_header(verifier, key, name, value):
    assert await refused(verifier, sign(key=key) | {name: value}) == "bad_signature"


async def test_stale_and_future_transmission_time(verifier, key):
    assert await refused(verifier, sign(key=key, tt=NOW_MS - 301_000)) == "stale"
    assert await refused(verifier, sign(key=key, tt=NOW_MS + 301_000)) == "future"
    await verifier.verify(sign(key=key, tt=NOW_MS - 299_000), BODY)


async def test_alg_none_refused(verifier):
    header = b64url(json.dumps({"b64": False, "crit": ["b64"], "kid": "kid-1", "alg": "none"}).encode())
    headers = sign(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert await refused(verifier, headers | {"x-8x8-signature": f"{header}.."}) == "bad_alg"


async def test_hs256_with_the_public_key_as_secret_refused(verifier, key):
    header = b64url(json.dumps({"b64": False, "crit": ["b64"], "kid": "kid-1", "alg": "HS256"}).encode())
    payload = b'{"checksum":%d,"cid":"cust-1","eid":"ev-1","retry":0,"tid":"tenant-1","tt":%d}' % (zlib.crc32(BODY), NOW_MS)
    mac = hmac.HMAC(json.dumps(jwk(key, "kid-1")).encode(), hashes.SHA256())
    mac.update(header.encode() + b"." + payload)
    headers = sign(key=key) | {"x-8x8-signature": f"{header}..{b64url(mac.finalize())}"}
    assert await refused(verifier, headers) == "bad_alg"


async def test_unencoded_payload_must_be_declared(verifier, key):
    headers = sign(key=key, header={"kid": "kid-1", "alg": "RS256"})
    assert await refused(verifier, headers) == "malformed"


async def test_unknown_kid_is_fetched_at_a_bounded_rate(verifier, key, keys):
    for _ in range(10):
        assert await refused(verifier, sign(key=key, kid="kid-unknown")) == "unknown_key"
    assert keys.requests.count("/vcc/us/chat/v2/jwk/kid-unknown/public") == 3  # the burst, then nothing


async def test_rotated_key_is_fetched_when_first_seen(verifier, keys, other_key):
    keys.jwks["kid-2"] = jwk(other_key, "kid-2")
    await verifier.verify(sign(key=other_key, kid="kid-2"), BODY)


@pytest.mark.parametrize(
    "name",
    ["x-8x8-signature", "x-8x8-tenant-id", "x-8x8-customer-id", "x-8x8-event-id", "x-8x8-transmission-time", "x-8x8-retry"],
)
async def test_missing_header(verifier, key, name):
    headers = sign(key=key)
    del headers[name]
    assert await refused(verifier, headers) == "missing_header"


async def test_wrong_tenant(verifier, key):
    assert await refused(verifier, sign(key=key, tenant="tenant-2")) == "wrong_tenant"


@pytest.mark.parametrize(
    "signature", ["garbage", "a.b.c", "!!!..!!!", b64url(b"[1]") + "..AA", b64url(b"{}") + ".x.AA"]
)
async def test_malformed_signature(verifier, key, signature):
    assert await refused(verifier, sign(key=key) | {"x-8x8-signature": signature}) in ("malformed", "bad_alg")


async def test_non_integer_times(verifier, key):
    assert await refused(verifier, sign(key=key) | {"x-8x8-retry": "x"}) == "malformed"


async def test_kid_cannot_escape_the_key_path(verifier, key):
    assert await refused(verifier, sign(key=key, kid="../../admin")) == "malformed"


async def test_unreachable_key_endpoint_is_an_unknown_key(key):
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    cache = JwkCache(lambda kid: f"https://8x8.test/{kid}", httpx.AsyncClient(transport=httpx.MockTransport(down)))
    verifier = Verifier(cache, tenant_id=TENANT, clock=lambda: NOW_MS / 1000)
    assert await refused(verifier, sign(key=key)) == "unknown_key"
    assert not await cache.reachable()


def test_jwk_url_per_generation():
    v2 = load_settings(platform_base_url="https://api.8x8.com/", platform_region="eu")
    gw = load_settings(platform_base_url="https://api.8x8.com", platform_generation=Generation.CHAT_GATEWAY_V1)
    assert jwk_url(v2, "k") == "https://api.8x8.com/vcc/eu/chat/v2/jwk/k/public"
    assert jwk_url(gw, "k") == "https://api.8x8.com/chat-gateway/v1/jwk/k/public"
