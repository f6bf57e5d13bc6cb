"""Webhook signatures as 8x8 makes them: a detached JWS over an unencoded payload (RFC 7515, RFC 7797)."""

from __future__ import annotations

import base64
import json
import secrets
import zlib
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["generate_key", "new_kid", "public_jwk", "sign", "signed_payload"]


def sign(
    body: bytes,
    *,
    key: rsa.RSAPrivateKey,
    kid: str,
    tenant_id: str,
    customer_id: str,
    event_id: str,
    retry: int,
    transmission_time: int,
) -> str:
    """The `x-8x8-signature` value for one delivery attempt of `body`: `header..signature`."""
    header = _b64url(_compact({"b64": False, "crit": ["b64"], "kid": kid, "alg": "RS256"}))
    payload = signed_payload(
        body,
        tenant_id=tenant_id,
        customer_id=customer_id,
        event_id=event_id,
        retry=retry,
        transmission_time=transmission_time,
    )
    signature = key.sign(header + b"." + payload, padding.PKCS1v15(), hashes.SHA256())
    return f"{header.decode()}..{_b64url(signature).decode()}"


def signed_payload(
    body: bytes, *, tenant_id: str, customer_id: str, event_id: str, retry: int, transmission_time: int
) -> bytes:
    """The signed JSON text: 8x8's key order, no spaces, the CRC32 of the raw body in decimal."""
    return _compact(
        {
            "checksum": zlib.crc32(body),
            "cid": customer_id,
            "eid": event_id,
            "retry": retry,
            "tid": tenant_id,
            "tt": transmission_time,
        }
    )


def generate_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA signing key (one per sandbox run)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_kid() -> str:
    """A key id shaped like 8x8's: 16 random bytes, base64url without padding."""
    return _b64url(secrets.token_bytes(16)).decode()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public half of `key` as the JWK object 8x8's `/jwk/{kid}/public` answers."""
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "e": _b64url(_int_bytes(numbers.e)).decode(), "kid": kid, "n": _b64url(_int_bytes(numbers.n)).decode()}


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
