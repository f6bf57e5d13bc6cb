"""Independent verification of 8x8 webhook signatures (not the sandbox's signer): RFC 7797 by hand."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    """The RSA public key of a JWK object."""
    assert jwk["kty"] == "RSA"
    n = int.from_bytes(_unb64(jwk["n"]), "big")
    e = int.from_bytes(_unb64(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def verify(headers: dict[str, str], body: bytes, jwk: dict[str, Any]) -> None:
    """Raise unless `x-8x8-signature` is a valid detached, unencoded-payload RS256 JWS for this POST."""
    encoded_header, empty, encoded_signature = headers["x-8x8-signature"].split(".")
    assert empty == "", "the payload must be detached"
    header = json.loads(_unb64(encoded_header))
    assert header == {"b64": False, "crit": ["b64"], "kid": jwk["kid"], "alg": "RS256"}
    assert list(header) == ["b64", "crit", "kid", "alg"]
    payload = (
        '{"checksum":%d,"cid":"%s","eid":"%s","retry":%d,"tid":"%s","tt":%d}'
        % (
            zlib.crc32(body),
            headers["x-8x8-customer-id"],
            headers["x-8x8-event-id"],
            int(headers["x-8x8-retry"]),
            headers["x-8x8-tenant-id"],
            int(headers["x-8x8-transmission-time"]),
        )
    ).encode()
    public_key(jwk).verify(
        _unb64(encoded_signature), encoded_header.encode() + b"." + payload, padding.PKCS1v15(), hashes.SHA256()
    )
