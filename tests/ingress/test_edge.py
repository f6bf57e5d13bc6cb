"""The webhook edge against a real worker: authenticity, answers, dedupe, hold bound, health endpoints."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.ingress.conftest import admin_url, chat_events, post, settings_of, signed_headers, worker_url
from tests.support.avro import Avro, publish_mapping
from tests.support.topics import read_to_end, wait_consumed

pytestmark = pytest.mark.kafka


def body_of(conversation_id: str, event_type: str = "QUEUED", **fields) -> bytes:
    event = {"eventType": event_type, "messageType": "SYSTEM", "conversationId": conversation_id,
             "timestamp": time.time_ns() // 1_000_000, **fields}
    return json.dumps(event).encode()


# RocksDB is what the chart and compose deploy; its store takes a write's partition from the
# current event, which the hold timer (below: an event whose ref never comes) does not have.
@pytest.mark.parametrize("table_store", ["memory://", "rocksdb://"])
def test_edge(ingress_env, sandbox, start_worker, table_store):
    env = {**ingress_env, "CONNECTOR_EVENTS_HOLD_S": "1", "CONNECTOR_WEBHOOK_MAX_BODY_BYTES": "4096", "CONNECTOR_TABLE_STORE": table_store}
    settings = settings_of(env)
    start_worker(env)
    key, kid = sandbox.sandbox.key, sandbox.sandbox.kid
    publish_mapping(settings, "conv-1", "ref-1")
    body = body_of("conv-1", queueId="9")
    now = time.time_ns() // 1_000_000

    # --- refused as not authentic: 401, one generic answer (the reason is logged), nothing published --
    wrong_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = signed_headers(body, key, kid)
    none_header = base64.urlsafe_b64encode(b'{"b64":false,"crit":["b64"],"kid":"%s","alg":"none"}' % kid.encode())
    hs256_header = base64.urlsafe_b64encode(
        b'{"b64":false,"crit":["b64"],"kid":"%s","alg":"HS256"}' % kid.encode()
    ).rstrip(b"=")
    mac = hmac.HMAC(json.dumps(sandbox.sandbox.jwk).encode(), hashes.SHA256())
    mac.update(hs256_header + b".payload")
    refused = {
        "wrong key": (body, signed_headers(body, wrong_key, kid)),
        "tampered body": (body.replace(b'"9"', b'"8"'), good),
        "tampered header": (body, {**good, "x-8x8-event-id": "another-event"}),
        "stale": (body, signed_headers(body, key, kid, tt=now - 301_000)),
        "future": (body, signed_headers(body, key, kid, tt=now + 301_000)),
        "alg none": (body, {**good, "x-8x8-signature": none_header.rstrip(b"=").decode() + ".."}),
        "HS256": (body, {**good, "x-8x8-signature": f"{hs256_header.decode()}..{base64.urlsafe_b64encode(mac.finalize()).rstrip(b'=').decode()}"}),
        "unknown kid": (body, signed_headers(body, key, "not-a-known-kid")),
        "missing headers": (body, {"content-type": "application/json"}),
        "missing signature": (body, {k: v for k, v in good.items() if k != "x-8x8-signature"}),
        "wrong tenant": (body, signed_headers(body, key, kid, tenant="another-tenant")),
    }
    answers = set()
    for case, (sent_body, headers) in refused.items():
        answer = post(env, sent_body, headers)
        assert answer.status_code == 401, (case, answer.status_code, answer.text)
        answers.add(answer.content)
    assert answers == {b'{"error": "not authenticated"}'}, "the answer must not say which check failed"

    # --- other answers ---------------------------------------------------------------------------
    verify = json.dumps({"eventType": "WEB_HOOK_VERIFY", "notificationVersion": "v2.0"}).encode()
    assert post(env, verify, signed_headers(verify, key, kid)).status_code == 204
    malformed = b'{"eventType": "QUEUED", '
    answer = post(env, malformed, signed_headers(malformed, key, kid))
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    large = body_of("conv-1", padding="x" * 5000)
    assert post(env, large, signed_headers(large, key, kid)).status_code == 413

    # --- the same event three times (8x8's retries): one ChatEvent -------------------------------
    for retry in range(3):
        answer = post(env, body, signed_headers(body, key, kid, event_id="dup-1", retry=retry))
        assert answer.status_code == 204, answer.text

    # --- an event whose ref never comes: published keyed by the 8x8 id after the hold bound ------
    orphan = body_of("conv-orphan", "TRANSFER")
    assert post(env, orphan, signed_headers(orphan, key, kid, event_id="orphan-1")).status_code == 204

    chat_events(settings, until=lambda got: len(got) >= 2, timeout=20)
    wait_consumed(env, settings.topic_webhooks_raw)  # every webhook handled: anything else (a duplicate) is in by now
    avro = Avro(settings)
    events = [(record.key.decode(), avro.decode("ChatEvent", record.value)) for record in read_to_end(env, settings.topic_events)]
    assert len(events) == 2, events
    keyed = {r["event_id"]: (k, r["conversation_ref"]) for k, r in events}
    assert keyed == {"dup-1": ("ref-1", "ref-1"), "orphan-1": ("conv-orphan", None)}

    # Only verified webhooks reached chat.webhooks.raw: 3 deliveries of dup-1 and the orphan (+ the mapping).
    raw = [avro.decode("RawWebhook", r.value) for r in read_to_end(env, settings.topic_webhooks_raw)]
    webhooks = [r for r in raw if r["kind"] == "WEBHOOK"]
    assert sorted(r["headers"]["x-8x8-event-id"] for r in webhooks) == ["dup-1", "dup-1", "dup-1", "orphan-1"]
    assert webhooks[0]["generation"] == "chat-api-v2" and webhooks[0]["body"] in (body, orphan)
    assert set(webhooks[0]["headers"]) == {
        "x-8x8-tenant-id", "x-8x8-customer-id", "x-8x8-event-id", "x-8x8-transmission-time", "x-8x8-retry"
    }, "the signature is not stored: with a forged body of the same CRC32 it would pass again"

    # --- health, readiness, metrics --------------------------------------------------------------
    base = worker_url(env)
    assert httpx.get(f"{base}/healthz").status_code == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and all(ready.json()["checks"].values()), ready.text
    metrics = httpx.get(f"{admin_url(env)}/metrics").text
    for line in (
        'connector_webhook_rejected_total{reason="bad_signature"} 3.0',
        'connector_webhook_rejected_total{reason="bad_alg"} 2.0',
        'connector_webhook_rejected_total{reason="wrong_tenant"} 1.0',
        'connector_webhook_requests_total{outcome="accepted"} 4.0',
        'connector_webhook_requests_total{outcome="too_large"} 1.0',
        "connector_events_duplicates_total 2.0",
        "connector_events_unmapped_total 1.0",
    ):
        assert line in metrics, line
