"""An event whose ref comes late: published without it when the hold runs out, then again with it."""

from __future__ import annotations

import json
import time

import pytest

from tests.ingress.conftest import chat_events, post, settings_of, signed_headers
from tests.support.avro import publish_mapping

pytestmark = pytest.mark.kafka


def test_an_event_published_without_its_ref_is_published_again_when_the_mapping_comes(
    ingress_env, sandbox, start_worker
) -> None:
    env = {**ingress_env, "CONNECTOR_EVENTS_HOLD_S": "1"}
    settings = settings_of(env)
    start_worker(env)
    key, kid = sandbox.sandbox.key, sandbox.sandbox.kid
    body = json.dumps(
        {"eventType": "QUEUED", "messageType": "SYSTEM", "conversationId": "late-1", "timestamp": time.time_ns() // 1_000_000}
    ).encode()
    assert post(env, body, signed_headers(body, key, kid, event_id="late-event")).status_code == 204

    unmapped = chat_events(settings, until=lambda got: len(got) >= 1, timeout=20)
    assert [(k, r["conversation_ref"]) for k, r in unmapped] == [("late-1", None)]

    publish_mapping(settings, "late-1", "ref-late")  # e.g. a replayed start, after a worker's crash
    events = chat_events(settings, until=lambda got: len(got) >= 2, timeout=20)
    assert sorted((k, r["event_id"], r["conversation_ref"] or "") for k, r in events) == [
        ("late-1", "late-event", ""),
        ("ref-late", "late-event", "ref-late"),
    ]
