"""Webhook authenticity as 8x8 signs it: a detached RS256 JWS over the delivery headers and the body's CRC32.

The `x-8x8-signature` header is `BASE64URL(header) + ".." + BASE64URL(signature)` (RFC 7515 with the
unencoded payload of RFC 7797). The signed payload is rebuilt here from the other `x-8x8-*` headers
and the raw body, so tampering with either breaks the signature. Public keys are fetched as JWKs by
key id from the configured 8x8 generation, cached as key objects, and unknown ids are fetched at a
bounded rate so that forged key ids cannot turn the edge into a request amplifier.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connector.config import Generation, Settings

__all__ = [
    "HEADERS",
    "Delivery",
    "JwkCache",
    "SignatureError",
    "Verifier",
    "jwk_url",
    "signed_payload",
]

HEADERS = (
    "x-8x8-signature",
    "x-8x8-tenant-id",
    "x-8x8-customer-id",
    "x-8x8-event-id",
    "x-8x8-transmission-time",
    "x-8x8-retry",
)


class SignatureError(Exception):
    """A webhook that is not authentic. `code` is a metric label; the message is safe to show and log."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Delivery:
    """The verified facts of one delivery attempt."""

    event_id: str
    tenant_id: str
    customer_id: str
    retry: int
    transmission_time: int


def jwk_url(settings: Settings, kid: str) -> str:
    """Where the configured generation publishes the public key `kid`."""
    base = settings.platform_base_url.rstrip("/")
    if settings.platform_generation is Generation.CHAT_API_V2:
        return f"{base}/vcc/{settings.platform_region}/chat/v2/jwk/{kid}/public"
    return f"{base}/chat-gateway/v1/jwk/{kid}/public"


def signed_payload(body: bytes, delivery: Delivery) -> bytes:
    """The JSON text 8x8 signs: its key order, no spaces, the CRC32 of the raw body in decimal."""
    return json.dumps(
        {
            "checksum": zlib.crc32(body),
            "cid": delivery.customer_id,
            "eid": delivery.event_id,
            "retry": delivery.retry,
            "tid": delivery.tenant_id,
            "tt": delivery.transmission_time,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


class JwkCache:
    """RSA public keys by key id: fetched once, kept as key objects; unknown ids fetched at a bounded rate."""

    def __init__(
        self,
        url_for: Callable[[str], str],
        client: httpx.AsyncClient,
        *,
        refetch_interval_s: float = 5.0,
        burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url_for = url_for
        self._client = client
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._inflight: dict[str, asyncio.Future[rsa.RSAPublicKey | None]] = {}
        self._interval = refetch_interval_s
        self._burst = burst
        self._tokens = float(burst)
        self._refilled = clock()
        self._clock = clock
        self.fetches = 0

    def cached(self) -> int:
        """How many keys are cached."""
        return len(self._keys)

    async def key(self, kid: str) -> rsa.RSAPublicKey:
        """The public key `kid`, from the cache or fetched; SignatureError when it cannot be had."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        pending = self._inflight.get(kid)
        if pending is None:
            if not self._take_token():
                raise SignatureError("unknown_key", "unknown signing key (not fetched: rate limit)")
            pending = asyncio.ensure_future(self._fetch(kid))
            self._inflight[kid] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(kid, None))
        key = await asyncio.shield(pending)
        if key is None:
            raise SignatureError("unknown_key", "unknown signing key")
        return key

    async def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the key endpoint answers HTTP at all (any status): readiness when nothing is cached."""
        try:
            await self._client.get(self._url_for("readiness-probe"), timeout=timeout)
        except httpx.HTTPError:
            return False
        return True

    async def _fetch(self, kid: str) -> rsa.RSAPublicKey | None:
        self.fetches += 1
        try:
            answer = await self._client.get(self._url_for(kid))
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        try:
            # The specs declare a `string` answer; the example and the real answer are a JWK object.
            key = _rsa_key(answer.json())
        except (ValueError, TypeError, KeyError):
            return None
        self._keys[kid] = key
        return key

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) / self._interval)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Verifier:
    """Checks one webhook POST: headers present, tenant, transmission time window, RS256 signature."""

    def __init__(
        self,
        keys: JwkCache,
        *,
        tenant_id: str,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._tenant_id = tenant_id
        self._window_ms = int(window_s * 1000)
        self._clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The delivery's facts when the POST is authentic; SignatureError with a short reason otherwise."""
        delivery = _delivery(headers)
        if delivery.tenant_id != self._tenant_id:
            raise SignatureError("wrong_tenant", "tenant id is not the configured tenant")
        skew = delivery.transmission_time - int(self._clock() * 1000)
        if skew < -self._window_ms:
            raise SignatureError("stale", "transmission time is too old (replay?)")
        if skew > self._window_ms:
            raise SignatureError("future", "transmission time is in the future")
        encoded_header, kid, signature = _parse_jws(headers["x-8x8-signature"])
        key = await self._keys.key(kid)
        signing_input = encoded_header + b"." + signed_payload(body, delivery)
        try:
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureError("bad_signature", "signature does not match") from None
        return delivery


_KID = re.compile(r"[A-Za-z0-9_.=-]{1,200}")


def _delivery(headers: Mapping[str, str]) -> Delivery:
    for name in HEADERS:
        if not headers.get(name):
            raise SignatureError("missing_header", f"missing header {name}")
    try:
        retry = int(headers["x-8x8-retry"])
        transmission_time = int(headers["x-8x8-transmission-time"])
    except ValueError:
        raise SignatureError("malformed", "x-8x8-retry and x-8x8-transmission-time must be integers") from None
    return Delivery(
        event_id=headers["x-8x8-event-id"],
        tenant_id=headers["x-8x8-tenant-id"],
        customer_id=headers["x-8x8-customer-id"],
        retry=retry,
        transmission_time=transmission_time,
    )


def _parse_jws(value: str) -> tuple[bytes, str, bytes]:
    """(encoded protected header, kid, signature) of a detached compact JWS, RS256 with b64=false only."""
    parts = value.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise SignatureError("malformed", "signature is not a detached compact JWS")
    try:
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error):
        raise SignatureError("malformed", "signature is not valid base64url") from None
    return parts[0].encode("ascii"), _kid_of(parts[0]), signature


@functools.lru_cache(maxsize=64)
def _kid_of(encoded_header: str) -> str:
    """The kid of an acceptable protected header (the same text for every delivery signed with one key)."""
    try:
        header = json.loads(_b64decode(encoded_header))
        encoded_header.encode("ascii")
    except (ValueError, binascii.Error):
        raise SignatureError("malformed", "signature header is not valid base64url JSON") from None
    if not isinstance(header, dict):
        raise SignatureError("malformed", "signature header is not a JSON object")
    if header.get("alg") != "RS256":
        raise SignatureError("bad_alg", "signature algorithm is not RS256")
    if header.get("b64") is not False or header.get("crit") != ["b64"]:
        raise SignatureError("malformed", "signature header must declare the unencoded payload (b64=false)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise SignatureError("malformed", "signature header has no usable kid")
    return kid


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rsa_key(jwk: dict) -> rsa.RSAPublicKey:
    if jwk.get("kty") != "RSA":
        raise ValueError("not an RSA key")
    n = int.from_bytes(_b64decode(jwk["n"]), "big")
    e = int.from_bytes(_b64decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()
