#!/usr/bin/env python3
"""Stdlib-only readiness probe for a Kafka broker (used by devstack/stack).

Sends an ApiVersions v0 request, then a Metadata v4 request, and succeeds (exit 0)
only if the broker answers both without error and lists at least one broker.
Usage: kafka_ready.py HOST PORT [TIMEOUT_SECONDS]
Exit codes: 0 ready, 1 not ready (connection refused, no/short answer, error code).
"""
import socket
import struct
import sys

CLIENT_ID = b"devstack-probe"


def _request(sock, api_key, api_version, correlation_id, body):
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    data = _read(sock, size)
    (got_cid,) = struct.unpack(">i", data[:4])
    if got_cid != correlation_id:
        raise RuntimeError("correlation id mismatch")
    return data[4:]


def _read(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed by broker")
        buf += chunk
    return buf


def probe(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions (key 18) v0: empty body; response: error_code int16, [api_key, min, max]
        resp = _request(sock, 18, 0, 1, b"")
        (error_code,) = struct.unpack(">h", resp[:2])
        if error_code != 0:
            raise RuntimeError(f"ApiVersions error code {error_code}")
        (n_apis,) = struct.unpack(">i", resp[2:6])
        apis = {}
        for i in range(n_apis):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i: 12 + 6 * i])
            apis[key] = (lo, hi)
        lo, hi = apis.get(3, (0, -1))
        if not lo <= 4 <= hi:
            # Cannot ask Metadata v4; an answering ApiVersions is good enough.
            return
        # Metadata (key 3) v4: topics = null array (-1: all), allow_auto_topic_creation = false
        resp = _request(sock, 3, 4, 2, struct.pack(">ib", -1, 0))
        _throttle, n_brokers = struct.unpack(">ii", resp[:8])
        if n_brokers < 1:
            raise RuntimeError("broker reports no live brokers yet")


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9092
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    try:
        probe(host, port, timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        if "-v" in sys.argv:
            print(f"not ready: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
