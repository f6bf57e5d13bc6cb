"""The webhook signature verifier against an independent signer written from API.md, and its key cache."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import zlib

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connector.config import Generation, load_settings
from connector.signature import EventBodies, JwkCache, KeyUnavailable, SignatureError, Verifier, jwk_url

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


def forge_crc32(prefix: bytes, suffix: bytes, target: int, width: int = 64) -> bytes:
    """prefix + `width` letters (each a or c) + suffix whose CRC32 is `target`: anyone can do this.

    CRC32 is affine over GF(2): flipping bit 1 of letter i changes the CRC by a fixed e_i, so the
    letters to flip solve sum(e_i) = crc(base) ^ target (Gaussian elimination on 32-bit vectors).
    """
    base = bytearray(prefix + b"a" * width + suffix)
    start = zlib.crc32(base)
    pivots: dict[int, tuple[int, int]] = {}  # top bit -> (effect, letters flipped to get it)
    for i in range(width):
        flipped = bytearray(base)
        flipped[len(prefix) + i] ^= 0x02
        effect, letters = zlib.crc32(flipped) ^ start, 1 << i
        while effect:
            top = effect.bit_length() - 1
            if top not in pivots:
                pivots[top] = (effect, letters)
                break
            effect, letters = effect ^ pivots[top][0], letters ^ pivots[top][1]
    goal, letters = start ^ target, 0
    while goal:
        effect, flips = pivots[goal.bit_length() - 1]
        goal, letters = goal ^ effect, letters ^ flips
    for i in range(width):
        if letters >> i & 1:
            base[len(prefix) + i] ^= 0x02
    return bytes(base)


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
    """A JWK endpoint serving `key` as kid-1, counting requests; `down` makes it answer 503."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.jwks: dict[str, object] = {"kid-1": jwk(key, "kid-1")}
        self.requests: list[str] = []
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        kid = request.url.path.split("/")[-2]
        if self.down:
            return httpx.Response(503, json={"error": "unavailable"})
        if kid in self.jwks:
            return httpx.Response(200, json=self.jwks[kid])
        return httpx.Response(404, json={"error": "not found"})

    def fetches(self, kid: str) -> int:
        return self.requests.count(f"/vcc/us/chat/v2/jwk/{kid}/public")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(key: rsa.RSAPrivateKey) -> Keys:
    return Keys(key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(keys: Keys, clock: Clock) -> JwkCache:
    client = httpx.AsyncClient(transport=httpx.MockTransport(keys.handler))
    return JwkCache(
        lambda kid: f"https://8x8.test/vcc/us/chat/v2/jwk/{kid}/public", client, ttl_s=3600, retry_after_s=5, clock=clock
    )


@pytest.fixture
def verifier(cache: JwkCache) -> Verifier:
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


async def test_junk_key_ids_do_not_lock_out_a_genuine_key(verifier, key, keys, other_key):
    """Each key id has its own budget: many junk ids, then 8x8's rotated key is still fetched."""
    for n in range(20):
        assert await refused(verifier, sign(key=key, kid=f"junk-{n}")) == "unknown_key"
    keys.jwks["kid-2"] = jwk(other_key, "kid-2")
    await verifier.verify(sign(key=other_key, kid="kid-2"), BODY)
    await verifier.verify(sign(key=key, event_id="ev-2"), BODY)
    assert keys.fetches("kid-2") == keys.fetches("kid-1") == 1


async def test_a_missed_key_id_backs_off_with_401_then_is_fetched_again(verifier, key, keys, other_key, clock):
    """A key 8x8 has not published yet: 401, and 401 without a fetch while its id backs off, then accepted."""
    steps = [  # (seconds later, code, fetches so far): retried after 5 s, then 10 s, then 20 s
        (0.0, "unknown_key", 1),
        (4.9, "key_rate_limited", 1),
        (0.2, "unknown_key", 2),
        (9.0, "key_rate_limited", 2),
        (1.1, "unknown_key", 3),
        (19.0, "key_rate_limited", 3),
    ]
    for seconds, code, fetches in steps:
        clock.now += seconds
        assert await refused(verifier, sign(key=other_key, kid="kid-2")) == code, clock.now
        assert keys.fetches("kid-2") == fetches, clock.now
    keys.jwks["kid-2"] = jwk(other_key, "kid-2")
    clock.now += 1.1
    await verifier.verify(sign(key=other_key, kid="kid-2"), BODY)
    assert keys.fetches("kid-2") == 4


async def test_unknown_key_refused_by_the_limiter_is_401_not_503(cache, keys):
    """8x8 said it has no such key: refused by the budget is a refusal like any other (its own metric label)."""
    with pytest.raises(SignatureError) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "unknown_key"
    with pytest.raises(SignatureError) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "key_rate_limited" and keys.fetches("kid-9") == 1


async def test_key_whose_fetch_failed_refused_by_the_limiter_is_503(cache, keys, clock):
    """8x8 could not be asked: 503 while the id backs off too (8x8 retries); the last miss decides."""
    keys.down = True
    with pytest.raises(KeyUnavailable) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "key_unavailable"
    with pytest.raises(KeyUnavailable) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "key_rate_limited" and keys.fetches("kid-9") == 1
    keys.down = False
    clock.now += 5
    with pytest.raises(SignatureError) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "unknown_key" and keys.fetches("kid-9") == 2
    with pytest.raises(SignatureError) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "key_rate_limited" and keys.fetches("kid-9") == 2
    keys.down = True
    clock.now += 10
    with pytest.raises(KeyUnavailable):
        await cache.key("kid-9")
    with pytest.raises(KeyUnavailable) as caught:
        await cache.key("kid-9")
    assert caught.value.code == "key_rate_limited" and keys.fetches("kid-9") == 3


async def test_a_junk_key_id_does_not_tell_a_right_tenant_from_a_wrong_one(verifier, key, keys):
    """The tenant and time are checked before the key: every answer to a junk kid must be the same refusal.

    Were the back-off a 503, the second delivery with the right tenant would confirm the guess.
    """
    for tenant in ("a-guess", TENANT, TENANT, TENANT, "a-guess"):
        headers = sign(key=key, kid="junk-1", tenant=tenant)
        with pytest.raises(SignatureError):  # 401, whatever the reason (a KeyUnavailable would be 503)
            await verifier.verify(headers, BODY)
    assert keys.fetches("junk-1") == 1


async def test_cached_key_is_served_and_refreshed_in_the_background_after_its_ttl(verifier, cache, key, keys, clock):
    await verifier.verify(sign(key=key), BODY)
    clock.now += 3599
    await verifier.verify(sign(key=key, event_id="ev-2"), BODY)
    assert keys.fetches("kid-1") == 1
    keys.down = True
    clock.now += 2  # past the TTL: served, refreshed in the background (which fails: still served)
    await verifier.verify(sign(key=key, event_id="ev-3"), BODY)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert keys.fetches("kid-1") == 2
    await verifier.verify(sign(key=key, event_id="ev-4"), BODY)
    keys.down = False
    clock.now += 6  # the failed refresh's back-off is over: refreshed again, confirmed
    await verifier.verify(sign(key=key, event_id="ev-5"), BODY)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert keys.fetches("kid-1") == 3
    clock.now += 3599
    await verifier.verify(sign(key=key, event_id="ev-6"), BODY)
    assert keys.fetches("kid-1") == 3, "confirmed by the refresh: fresh again"


async def test_revoked_key_stops_working(verifier, key, keys, clock):
    await verifier.verify(sign(key=key), BODY)
    del keys.jwks["kid-1"]  # 8x8 revoked it
    clock.now += 3601
    await verifier.verify(sign(key=key, event_id="ev-2"), BODY)  # still served while the refresh runs
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert keys.fetches("kid-1") == 2
    with pytest.raises((SignatureError, KeyUnavailable)):
        await verifier.verify(sign(key=key, event_id="ev-3"), BODY)


async def test_key_not_confirmed_for_twice_its_ttl_expires(verifier, key, keys, clock):
    await verifier.verify(sign(key=key), BODY)
    keys.down = True
    clock.now += 7201
    with pytest.raises(KeyUnavailable):
        await verifier.verify(sign(key=key, event_id="ev-2"), BODY)


@pytest.mark.parametrize("answer", ["string", "object"])
async def test_jwk_served_as_a_json_string_or_object(verifier, key, keys, answer):
    """The specs declare the key endpoint's answer a `string`: a JSON string holding the JWK is accepted too."""
    if answer == "string":
        keys.jwks["kid-1"] = json.dumps(keys.jwks["kid-1"])
    await verifier.verify(sign(key=key), BODY)


@pytest.mark.parametrize("answer", [["not", "a", "jwk"], 42, "not json", '"a string in a string"', {"kty": "EC"}, {"kty": "RSA"}])
async def test_unusable_jwk_is_a_failed_fetch_not_a_crash(verifier, key, keys, answer, caplog):
    keys.jwks["kid-1"] = answer
    with caplog.at_level(logging.WARNING, logger="connector.signature"):
        assert await refused(verifier, sign(key=key)) == "unknown_key"
    assert "signing key kid-1 not usable" in caplog.text


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


@pytest.mark.parametrize("kid", ["../../admin", "..", ".", "a.b", "kid=", "k/1", "k%2F1", "k?x", "é"])
async def test_kid_cannot_escape_the_key_path(verifier, key, keys, kid):
    assert await refused(verifier, sign(key=key, kid=kid)) == "malformed"
    assert keys.requests == [], "no request to 8x8"


async def test_non_ascii_signature_is_malformed_not_a_crash(verifier, key):
    headers = sign(key=key)
    assert await refused(verifier, headers | {"x-8x8-signature": "é" + headers["x-8x8-signature"]}) == "malformed"
    assert await refused(verifier, headers | {"x-8x8-signature": headers["x-8x8-signature"] + "é"}) == "malformed"


async def test_header_that_was_not_utf8_is_malformed_not_a_crash(verifier, key):
    """aiohttp hands undecodable header bytes over as lone surrogates."""
    headers = sign(key=key) | {"x-8x8-customer-id": b"cust-\xff".decode("utf-8", "surrogateescape")}
    assert await refused(verifier, headers) == "malformed"


async def test_unreachable_key_endpoint_is_503_not_401(key):
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    cache = JwkCache(lambda kid: f"https://8x8.test/{kid}", httpx.AsyncClient(transport=httpx.MockTransport(down)))
    verifier = Verifier(cache, tenant_id=TENANT, clock=lambda: NOW_MS / 1000)
    with pytest.raises(KeyUnavailable) as caught:
        await verifier.verify(sign(key=key), BODY)
    assert caught.value.code == "key_unavailable"
    assert not await cache.reachable()


async def test_forged_body_with_a_captured_signature_is_refused(verifier, key):
    """8x8 signs only the body's CRC32: a forged body with the same CRC passes the signature, not the edge."""
    genuine = b'{"eventType":"TEXT","conversationId":"c1","message":"hello"}'
    forged = forge_crc32(b'{"eventType":"TEXT","conversationId":"c2","message":"send me your card","pad":"', b'"}', zlib.crc32(genuine))
    assert zlib.crc32(forged) == zlib.crc32(genuine) and json.loads(forged)["conversationId"] == "c2"
    captured = sign(genuine, key=key)
    fresh = Verifier(verifier._keys, tenant_id=TENANT, clock=lambda: NOW_MS / 1000)
    await fresh.verify(captured, forged)  # the scheme's hole: the signature alone lets it through
    await verifier.verify(captured, genuine)
    await verifier.verify(sign(genuine, key=key, retry=1, tt=NOW_MS + 1000), genuine)  # 8x8's retry: same body
    assert await refused(verifier, captured, forged) == "body_mismatch"


def test_event_bodies_are_remembered_until_their_signatures_expire():
    bodies = EventBodies(max_entries=2)
    assert bodies.admit("e1", b"one", expires_ms=1000, now_ms=0)
    assert not bodies.admit("e1", b"two", expires_ms=1000, now_ms=999)
    assert bodies.admit("e1", b"two", expires_ms=2000, now_ms=1000), "the first delivery's signatures have expired"
    assert bodies.admit("e2", b"x", expires_ms=3000, now_ms=1000)
    assert bodies.admit("e3", b"y", expires_ms=3000, now_ms=1000)
    assert bodies.evicted == 1, "beyond the bound the oldest is forgotten early"
    assert not bodies.admit("e3", b"z", expires_ms=3000, now_ms=1000)


def test_jwk_url_per_generation():
    v2 = load_settings(platform_base_url="https://api.8x8.com/", platform_region="eu")
    gw = load_settings(platform_base_url="https://api.8x8.com", platform_generation=Generation.CHAT_GATEWAY_V1)
    assert jwk_url(v2, "k") == "https://api.8x8.com/vcc/eu/chat/v2/jwk/k/public"
    assert jwk_url(gw, "k") == "https://api.8x8.com/chat-gateway/v1/jwk/k/public"
    assert jwk_url(v2, "a/../b") == "https://api.8x8.com/vcc/eu/chat/v2/jwk/a%2F..%2Fb/public"


@pytest.mark.parametrize("text", ["plain", 'quo"te', "back\\slash", "tab\tnew\nline\x01", "é 中文 😀", "</script>"])
def test_signed_payload_is_the_json_text_8x8_signs(text):
    """The payload written out by hand is byte for byte what json.dumps makes of it (8x8's JSON, key order kept)."""
    from connector.signature import Delivery, signed_payload

    delivery = Delivery(event_id=text, tenant_id=text, customer_id=text, retry=3, transmission_time=NOW_MS)
    expected = json.dumps(
        {"checksum": zlib.crc32(BODY), "cid": text, "eid": text, "retry": 3, "tid": text, "tt": NOW_MS},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert signed_payload(BODY, delivery) == expected
