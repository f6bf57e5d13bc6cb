"""Webhook authenticity as 8x8 signs it: a detached RS256 JWS over the delivery headers and the body's CRC32.

The `x-8x8-signature` header is `BASE64URL(header) + ".." + BASE64URL(signature)` (RFC 7515 with the
unencoded payload of RFC 7797). The signed payload is rebuilt here from the other `x-8x8-*` headers
and the raw body, so tampering with either breaks the signature. Public keys are fetched as JWKs by
key id from the configured 8x8 generation and cached as key objects; each key id has its own fetch
budget, so that junk ids can neither lock out 8x8's real keys nor turn the edge into an amplifier.

8x8 signs only the CRC32 of the body, and a CRC32 is easy to forge: a captured signature verifies
another body with the same CRC. `EventBodies` narrows that hole: within the replay window, a signed
event id is accepted with one body only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import functools
import hashlib
import json
import json.encoder
import logging
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connector.config import Generation, Settings

__all__ = [
    "HEADERS",
    "Delivery",
    "EventBodies",
    "JwkCache",
    "KeyUnavailable",
    "SignatureError",
    "Verifier",
    "jwk_url",
    "signed_payload",
]

logger = logging.getLogger(__name__)

HEADERS = (
    "x-8x8-signature",
    "x-8x8-tenant-id",
    "x-8x8-customer-id",
    "x-8x8-event-id",
    "x-8x8-transmission-time",
    "x-8x8-retry",
)


class SignatureError(Exception):
    """A webhook that is not authentic. `code` is a metric label; the message is for the log, not the sender."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeyUnavailable(Exception):
    """The signing key could not be had now (8x8 unreachable or failing, or backed off since): 503; 8x8 retries."""

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
    """Where the configured generation publishes the public key `kid` (quoted, though the kid pattern needs none)."""
    base = settings.platform_base_url.rstrip("/")
    kid = quote(kid, safe="")
    if settings.platform_generation is Generation.CHAT_API_V2:
        return f"{base}/vcc/{settings.platform_region}/chat/v2/jwk/{kid}/public"
    return f"{base}/chat-gateway/v1/jwk/{kid}/public"


def signed_payload(body: bytes, delivery: Delivery) -> bytes:
    """The JSON text 8x8 signs: its key order, no spaces, the CRC32 of the raw body in decimal.

    Written out rather than through `json.dumps` (a new encoder per call: a tenth of the edge's own
    CPU per request); the strings are quoted by the same function `json.dumps(ensure_ascii=False)` uses.
    """
    return (
        f'{{"checksum":{zlib.crc32(body)},"cid":{_quoted(delivery.customer_id)},"eid":{_quoted(delivery.event_id)},'
        f'"retry":{int(delivery.retry)},"tid":{_quoted(delivery.tenant_id)},"tt":{int(delivery.transmission_time)}}}'
    ).encode()


class _Miss(enum.Enum):
    NOT_FOUND = "not found"  # 8x8 answered, and has no such key (or no usable one)
    FAILED = "failed"  # no answer: network error, timeout, 5xx


@dataclass
class _Cached:
    key: rsa.RSAPublicKey
    confirmed_at: float


@dataclass
class _Backoff:
    misses: int
    retry_at: float
    miss: _Miss  # the last one: what a request refused by the budget is answered


class JwkCache:
    """RSA public keys by key id, each id on its own fetch budget.

    A cached key is always served. Past `ttl_s` it is refreshed in the background while still
    served; a refresh that finds it gone drops it, and a key not confirmed for twice `ttl_s`
    expires. An id whose fetch missed is not fetched again before `retry_after_s`, doubling per
    miss (at most 16 times). Meanwhile `key` answers as the last fetch did: SignatureError when 8x8
    said it has no such key (a 401 like any other refusal: a 503 here would tell a sender of junk ids
    that its tenant id and transmission time had passed), KeyUnavailable when 8x8 could not be asked.
    Both carry the code `key_rate_limited`. At most `max_ids` missed ids are remembered (the oldest
    forgotten first).
    """

    def __init__(
        self,
        url_for: Callable[[str], str],
        client: httpx.AsyncClient,
        *,
        ttl_s: float = 3600.0,
        retry_after_s: float = 5.0,
        max_ids: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url_for = url_for
        self._client = client
        self._ttl = ttl_s
        self._retry_after = retry_after_s
        self._max_ids = max_ids
        self._clock = clock
        self._keys: dict[str, _Cached] = {}
        self._backoff: OrderedDict[str, _Backoff] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[rsa.RSAPublicKey | _Miss]] = {}

    def cached(self) -> int:
        """How many keys are cached."""
        return len(self._keys)

    async def key(self, kid: str) -> rsa.RSAPublicKey:
        """The public key `kid`: SignatureError when 8x8 has no such key, KeyUnavailable when it cannot be had now."""
        now = self._clock()
        cached = self._keys.get(kid)
        if cached is not None and now - cached.confirmed_at < 2 * self._ttl:
            if now - cached.confirmed_at >= self._ttl and self._may_fetch(kid, now):
                self._start_fetch(kid)  # refreshed in the background; served meanwhile
            return cached.key
        pending = self._inflight.get(kid)
        if pending is None:
            if not self._may_fetch(kid, now):
                self._refuse(kid)
            pending = self._start_fetch(kid)
        outcome = await asyncio.shield(pending)
        if outcome is _Miss.NOT_FOUND:
            raise SignatureError("unknown_key", "unknown signing key")
        if outcome is _Miss.FAILED:
            raise KeyUnavailable("key_unavailable", "signing key could not be fetched")
        return outcome

    async def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the key endpoint answers HTTP at all (any status): readiness when nothing is cached."""
        try:
            await self._client.get(self._url_for("readiness-probe"), timeout=timeout)
        except httpx.HTTPError:
            return False
        return True

    def _refuse(self, kid: str) -> None:
        """Raise what an id refused by its budget gets: 401 if 8x8 has no such key, 503 if it could not be asked."""
        backoff = self._backoff[kid]  # not in flight (that is awaited instead), so refused by its back-off
        if backoff.miss is _Miss.NOT_FOUND:
            raise SignatureError("key_rate_limited", "unknown signing key (its id missed recently: not fetched)")
        raise KeyUnavailable("key_rate_limited", "signing key not fetched: its fetch failed recently")

    def _may_fetch(self, kid: str, now: float) -> bool:
        backoff = self._backoff.get(kid)
        return kid not in self._inflight and (backoff is None or now >= backoff.retry_at)

    def _start_fetch(self, kid: str) -> asyncio.Future[rsa.RSAPublicKey | _Miss]:
        pending = asyncio.ensure_future(self._fetch(kid))
        self._inflight[kid] = pending
        pending.add_done_callback(lambda _: self._inflight.pop(kid, None))
        return pending

    async def _fetch(self, kid: str) -> rsa.RSAPublicKey | _Miss:
        outcome = await self._get(kid)
        now = self._clock()
        if isinstance(outcome, _Miss):
            if outcome is _Miss.NOT_FOUND:
                self._keys.pop(kid, None)  # revoked, or never existed
            previous = self._backoff.pop(kid, None)
            misses = previous.misses + 1 if previous else 1
            self._backoff[kid] = _Backoff(misses, now + self._retry_after * 2 ** min(misses - 1, 4), outcome)
            while len(self._backoff) > self._max_ids:
                self._backoff.popitem(last=False)
            return outcome
        self._backoff.pop(kid, None)
        self._keys[kid] = _Cached(outcome, now)
        return outcome

    async def _get(self, kid: str) -> rsa.RSAPublicKey | _Miss:
        """One GET of the key; failures are logged (the kid matched `_KID`, so it is safe to print)."""
        try:
            answer = await self._client.get(self._url_for(kid))
        except httpx.HTTPError as exc:
            logger.warning("signing key %s not fetched: %s", kid[:64], type(exc).__name__)
            return _Miss.FAILED
        if answer.status_code != 200:
            logger.warning("signing key %s not fetched: HTTP %d", kid[:64], answer.status_code)
            return _Miss.FAILED if answer.status_code >= 500 or answer.status_code == 429 else _Miss.NOT_FOUND
        try:
            return _rsa_key(_jwk_object(answer.content))
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("signing key %s not usable: %s", kid[:64], exc)
            return _Miss.NOT_FOUND


class EventBodies:
    """The SHA-256 of the body accepted for each signed event id, until its signatures expire.

    A CRC32 is all 8x8's signature binds of the body, so a captured signature also verifies a forged
    body with the same CRC; the same event id with another body is refused here. Entries are kept
    until the newest accepted delivery of the id leaves the replay window; beyond `max_entries` the
    oldest are forgotten early (`evicted` counts them).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self.evicted = 0

    def admit(self, event_id: str, body: bytes, *, expires_ms: int, now_ms: int) -> bool:
        """Remember `body` for `event_id` until `expires_ms`; False if another body is remembered for it."""
        while self._entries and next(iter(self._entries.values()))[1] <= now_ms:
            self._entries.popitem(last=False)
        digest = hashlib.sha256(body).digest()
        known = self._entries.get(event_id)
        if known is not None and known[1] > now_ms:
            if known[0] != digest:
                return False
            expires_ms = max(expires_ms, known[1])
        self._entries[event_id] = (digest, expires_ms)
        self._entries.move_to_end(event_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.evicted += 1
        return True


class Verifier:
    """Checks one webhook POST: headers, tenant, transmission time window, RS256 signature, one body per event id."""

    def __init__(
        self,
        keys: JwkCache,
        *,
        tenant_id: str,
        window_s: float = 300.0,
        bodies: EventBodies | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._tenant_id = tenant_id
        self._window_ms = int(window_s * 1000)
        self._bodies = bodies if bodies is not None else EventBodies()
        self._clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The delivery's facts when the POST is authentic; SignatureError (or KeyUnavailable) otherwise."""
        delivery = _delivery(headers)
        if delivery.tenant_id != self._tenant_id:
            raise SignatureError("wrong_tenant", "tenant id is not the configured tenant")
        now_ms = int(self._clock() * 1000)
        skew = delivery.transmission_time - now_ms
        if skew < -self._window_ms:
            raise SignatureError("stale", "transmission time is too old (replay?)")
        if skew > self._window_ms:
            raise SignatureError("future", "transmission time is in the future")
        encoded_header, kid, signature = _parse_jws(headers["x-8x8-signature"])
        try:
            payload = signed_payload(body, delivery)
        except UnicodeEncodeError:  # a header that was not valid UTF-8 on the wire
            raise SignatureError("malformed", "x-8x8-* headers are not valid UTF-8") from None
        key = await self._keys.key(kid)
        try:
            key.verify(signature, encoded_header + b"." + payload, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureError("bad_signature", "signature does not match") from None
        expires_ms = delivery.transmission_time + self._window_ms
        if not self._bodies.admit(delivery.event_id, body, expires_ms=expires_ms, now_ms=now_ms):
            raise SignatureError("body_mismatch", "another body was accepted under this event id (forged CRC?)")
        return delivery


# 8x8's key ids are base64url; `.` and `..` must never reach the key URL's path.
_KID = re.compile(r"[A-Za-z0-9_-]{1,200}")


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
    if not value.isascii():
        raise SignatureError("malformed", "signature is not ASCII")
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


_quoted = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (C when available)


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwk_object(content: bytes) -> dict:
    """The JWK of a key endpoint's answer: a JSON object, or a JSON string holding one.

    The specs declare a `string` answer; the example and the real answer are the object itself.
    """
    jwk = json.loads(content)
    if isinstance(jwk, str):
        jwk = json.loads(jwk)
    if not isinstance(jwk, dict):
        raise ValueError(f"answer is a JSON {type(jwk).__name__}, not a JWK object")
    return jwk


def _rsa_key(jwk: dict) -> rsa.RSAPublicKey:
    if jwk.get("kty") != "RSA":
        raise ValueError("not an RSA key")
    n = int.from_bytes(_b64decode(jwk["n"]), "big")
    e = int.from_bytes(_b64decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()
