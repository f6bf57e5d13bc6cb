"""The webhook edge under attack, against a real worker and broker: lockout, forged bodies, robustness, ports.

8x8 is played by a bare key endpoint (KeyServer) serving keys this test signs with.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
import zlib

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.ingress.conftest import admin_url, post, settings_of, signed_headers, worker_url
from tests.support.avro import Avro
from tests.support.topics import read_to_end
from tests.unit.test_signature import forge_crc32

pytestmark = pytest.mark.kafka

TENANT = "tenant-under-attack"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def env(ingress_env, key_server) -> dict[str, str]:
    return {
        **ingress_env,
        "CONNECTOR_PLATFORM_BASE_URL": key_server.url,
        "CONNECTOR_PLATFORM_TENANT_ID": TENANT,
        "CONNECTOR_WEBHOOK_READ_TIMEOUT_S": "2",
    }


def text_event(conversation_id: str, text: str) -> bytes:
    return json.dumps({"eventType": "TEXT", "messageType": "AGENT", "conversationId": conversation_id, "message": text},
                      separators=(",", ":")).encode()


def sign(body: bytes, key: rsa.RSAPrivateKey, kid: str, **kwargs) -> dict[str, str]:
    return signed_headers(body, key, kid, tenant=TENANT, **kwargs)


def raw_webhooks(env: dict[str, str]) -> list[tuple[str, dict]]:
    """(key, RawWebhook) of every WEBHOOK record on chat.webhooks.raw now (each was appended before its POST was answered)."""
    settings = settings_of(env)
    avro = Avro(settings)
    decoded = [(r.key.decode(), avro.decode("RawWebhook", r.value)) for r in read_to_end(env, settings.topic_webhooks_raw)]
    return [(k, r) for k, r in decoded if r["kind"] == "WEBHOOK"]


def test_junk_key_ids_do_not_lock_out_the_genuine_key(env, key_server, start_worker, key):
    """Each key id has its own fetch budget; an id 8x8 has no key for, refused by it, gets 401 like any refusal."""
    start_worker(env)
    body = text_event("conv-1", "hello")
    for n in range(6):
        answer = post(env, body, sign(body, key, f"junk-{n}"))
        assert answer.status_code == 401, answer.text
    key_server.serve("rotated-1", key)  # 8x8's new key, never fetched by this worker
    assert post(env, body, sign(body, key, "rotated-1")).status_code == 204
    assert post(env, body, sign(body, key, "junk-0")).status_code == 401, "refused by the id's back-off"
    metrics = httpx.get(f"{admin_url(env)}/metrics").text
    assert 'connector_webhook_rejected_total{reason="unknown_key"} 6.0' in metrics
    assert 'connector_webhook_rejected_total{reason="key_rate_limited"} 1.0' in metrics
    assert 'connector_webhook_key_unavailable_total{reason="key_rate_limited"}' not in metrics
    assert sum(path.endswith("/jwk/junk-0/public") for path in key_server.paths) == 1, "not fetched while backed off"


def test_a_junk_key_id_does_not_confirm_a_guessed_tenant(env, key_server, start_worker, key):
    """Tenant and time are checked before the key is asked for: the right tenant with a junk kid, sent twice
    (the second refused by the id's back-off), gets the very answer a wrong tenant gets."""
    start_worker(env)
    body = text_event("conv-1", "hello")
    wrong = post(env, body, signed_headers(body, key, "junk-oracle", tenant="a-guess"))
    right = [post(env, body, sign(body, key, "junk-oracle")) for _ in range(2)]
    assert [(a.status_code, a.content) for a in right] == [(wrong.status_code, wrong.content)] * 2
    assert wrong.status_code == 401 and wrong.content == b'{"error": "not authenticated"}'
    metrics = httpx.get(f"{admin_url(env)}/metrics").text
    for reason in ("wrong_tenant", "unknown_key", "key_rate_limited"):
        assert f'connector_webhook_rejected_total{{reason="{reason}"}} 1.0' in metrics, reason


def test_the_401_answer_does_not_say_which_check_failed(env, key_server, start_worker, key):
    """A precise answer would confirm guesses at the tenant id; the reason is in the log and a metric label."""
    start_worker(env)
    key_server.serve("kid-1", key)
    body = text_event("conv-1", "hello")
    now = time.time_ns() // 1_000_000
    refusals = {
        "wrong_tenant": signed_headers(body, key, "kid-1", tenant="a-guess"),
        "stale": sign(body, key, "kid-1", tt=now - 301_000),
        "bad_signature": sign(body, key, "kid-1", event_id="x") | {"x-8x8-event-id": "y"},
        "unknown_key": sign(body, key, "kid-unknown"),
        "missing_header": {"content-type": "application/json"},
    }
    answers = {reason: post(env, body, headers) for reason, headers in refusals.items()}
    assert {a.status_code for a in answers.values()} == {401}
    assert {a.content for a in answers.values()} == {b'{"error": "not authenticated"}'}
    metrics = httpx.get(f"{admin_url(env)}/metrics").text
    for reason in refusals:
        assert f'connector_webhook_rejected_total{{reason="{reason}"}} 1.0' in metrics, reason


def test_a_captured_signature_with_a_forged_body_is_refused_and_nothing_published(env, key_server, start_worker, key):
    """8x8 signs only the body's CRC32: a forged valid-JSON body for another conversation has the same one."""
    start_worker(env)
    key_server.serve("kid-1", key)
    genuine = text_event("conv-2", "my order is late")
    forged = forge_crc32(b'{"eventType":"TEXT","messageType":"AGENT","conversationId":"conv-3","message":"pay here","p":"',
                         b'"}', zlib.crc32(genuine))
    assert zlib.crc32(forged) == zlib.crc32(genuine) and json.loads(forged)["conversationId"] == "conv-3"
    captured = sign(genuine, key, "kid-1", event_id="genuine-2")
    assert post(env, genuine, captured).status_code == 204
    assert post(env, forged, captured).status_code == 401
    assert post(env, genuine, captured).status_code == 204, "the same delivery again (a retry) still passes"
    webhooks = raw_webhooks(env)
    assert [(k, r["body"]) for k, r in webhooks] == [("conv-2", genuine), ("conv-2", genuine)]
    assert all(set(r["headers"]) == {"x-8x8-tenant-id", "x-8x8-customer-id", "x-8x8-event-id",
                                     "x-8x8-transmission-time", "x-8x8-retry"} for _, r in webhooks), "no signature stored"


def test_a_non_ascii_jws_header_is_401_not_500(env, key_server, start_worker, key):
    start_worker(env)
    key_server.serve("kid-1", key)
    body = text_event("conv-1", "hello")
    headers = sign(body, key, "kid-1")
    assert post(env, body, {**headers, "x-8x8-signature": ("é" + headers["x-8x8-signature"]).encode()}).status_code == 401


def test_a_jwk_served_as_a_json_string_is_accepted(env, key_server, start_worker, key):
    """8x8's specs declare the key endpoint's answer a JSON `string`: one holding the JWK works too."""
    start_worker(env)
    key_server.serve("as-string", key, as_string=True)
    body = text_event("conv-1", "hello")
    assert post(env, body, sign(body, key, "as-string")).status_code == 204


def test_a_key_id_cannot_climb_the_8x8_api_path(env, key_server, start_worker, key):
    """`.../jwk/../public` would be a request one level up the 8x8 API: 401, and no request at all."""
    start_worker(env)
    body = text_event("conv-1", "hello")
    for kid in ("..", ".", "a.b"):
        assert post(env, body, sign(body, key, kid)).status_code == 401
    assert key_server.paths == [] or all(path.endswith("/readiness-probe/public") for path in key_server.paths), (
        "no request to 8x8 for these ids")


def test_a_body_trickled_one_byte_a_second_gets_408_within_the_deadline(env, start_worker):
    start_worker(env)
    started = time.monotonic()
    answer = slow_post(env, b'{"eventType":"QUEUED","conversationId":"conv-slow","padding":"xxxxxxxxxxxxxxxx"}')
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 4, "deadline 2 s"
    assert 'connector_webhook_requests_total{outcome="timeout"} 1.0' in httpx.get(f"{admin_url(env)}/metrics").text


def test_internal_endpoints_are_on_the_admin_port_only(env, start_worker):
    start_worker(env)
    public, admin = worker_url(env), admin_url(env)
    for path in ("/table/held-events/", "/table/conversations/ref-1/", "/conversations/ref-1", "/metrics", "/router/"):
        assert httpx.get(public + path).status_code == 404, path
    assert httpx.get(f"{public}/healthz").status_code == 200 and httpx.get(f"{public}/readyz").status_code == 200
    assert httpx.get(f"{admin}/conversations/ref-1").json() == {"error": "no conversation with ref ref-1"}
    assert httpx.get(f"{admin}/router/").status_code == 200
    assert "connector_webhook_verification_enabled 1.0" in httpx.get(f"{admin}/metrics").text
    assert httpx.get(f"{admin}/table/held-events/").status_code == 404, "Faust's table pages are off everywhere"
    assert httpx.post(f"{admin}/webhooks/8x8", content=b"{}").status_code == 404, "webhooks are on the public port"


def slow_post(env: dict[str, str], body: bytes) -> bytes:
    """POST `body` one byte a second (a slow-loris sender) and return what the worker answers."""
    with socket.create_connection(("127.0.0.1", int(env["CONNECTOR_WEB_PORT"])), timeout=10) as sock:
        head = (f"POST /webhooks/8x8 HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nx-8x8-event-id: {uuid.uuid4()}\r\n\r\n")
        sock.sendall(head.encode())
        sock.settimeout(1.0)
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            if answer:
                break
        return answer


def test_a_body_limit_the_topic_cannot_take_stops_the_worker_at_start(ingress_env, start_worker, tmp_path):
    """Else a webhook near the limit would get 503 for ever, and 8x8 retry it for ever."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    settings = settings_of(ingress_env)
    admin = KafkaAdminClient(**settings.kafka_python_config())
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic_webhooks_raw,
                                        configs={"max.message.bytes": "200000"})])
    admin.close()
    env = {**ingress_env, "CONNECTOR_WEBHOOK_MAX_BODY_BYTES": "300000"}
    worker = start_worker(env, wait_ready=False)
    assert worker.wait(60) == 2
    log = (tmp_path / "worker-0.log").read_text()
    assert "CONNECTOR_WEBHOOK_MAX_BODY_BYTES=300000 needs records of up to 365536 bytes" in log
    assert f"{settings.topic_webhooks_raw} takes 200000 (max.message.bytes)" in log


def test_plain_http_8x8_is_refused_unless_allowed(ingress_env, start_worker, tmp_path):
    env = {**ingress_env, "CONNECTOR_PLATFORM_BASE_URL": "http://8x8.invalid", "CONNECTOR_PLATFORM_ALLOW_INSECURE_HTTP": "false"}
    worker = start_worker(env, wait_ready=False)
    assert worker.wait(60) == 2
    assert "CONNECTOR_PLATFORM_BASE_URL: 'http://8x8.invalid' is not https://" in (tmp_path / "worker-0.log").read_text()
